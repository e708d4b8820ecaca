"""train.loop with distributed: fsdp on 2 gloo ranks (torch.multiprocessing), end to end: the sharded
backups it writes every step hold the weights of a one-process run, the trained model rank 0 hands
on holds them as ordinary full tensors, and a run resumed from a backup on 2 ranks ends where the
uninterrupted run does."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.train.helpers import NodeRunner, train_inputs
from tests.train.test_distributed import STEPS, Regression, Shard
from tests.train.test_fsdp import make_blocks_toy

pytestmark = pytest.mark.slow

WORLD = 2


def train(workspace: Path, rank: int = 0, world: int = 1, resume: str = "") -> dict:
    """The blocks toy (init per rank: rank 0's must win) under train.loop, a backup every step."""
    from nodes.train.hook_nodes import Backups
    from nodes.train.loop import TrainLoop

    runner = NodeRunner(workspace)
    runner.resume = Path(resume) if resume else None
    model = make_blocks_toy(seed=rank)
    hooks = [runner.run(Backups, "backups", every=1, keep=STEPS)["hook"]]
    inputs = train_inputs(model, Shard(rank, world, 4 // world), lr=1e-2, objective=Regression(), hooks=hooks)
    runner.run(TrainLoop, "train", inputs, max_steps=STEPS, max_grad_norm=0.05, device="cpu",
               distributed="fsdp" if world > 1 else "auto")
    params = dict(model.net.named_parameters())
    return {"progress": [e["loss"] for e in runner.events("progress")], "saved": len(runner.events("saved")),
            "step": model.progress.get("step"), "kinds": sorted({type(p).__name__ for p in params.values()}),
            "weights": {n: p.detach().clone() for n, p in params.items() if p.requires_grad} if rank == 0 else {}}


def _rank_main(rank: int, port: int, out: str, resume: str) -> None:
    import os

    import torch

    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(WORLD),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    import torch.distributed as dist

    from nodes.train import distributed

    distributed.init("cpu", timeout_s=30)
    try:
        name = "resumed" if resume else "run"
        torch.save(train(Path(out) / name, rank, WORLD, resume), Path(out) / f"{name}-rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_ranks(tmp_path: Path, resume: str = "") -> list[dict]:
    import torch
    import torch.multiprocessing as mp

    name = "resumed" if resume else "run"
    (tmp_path / name).mkdir(exist_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_rank_main, args=(port, str(tmp_path), resume), nprocs=WORLD, join=True, start_method="spawn")
    return [torch.load(tmp_path / f"{name}-rank{r}.pt", weights_only=True) for r in range(WORLD)]


def sharded_weights(backup: Path, like: dict) -> dict:
    """The full trainable weights of a sharded backup, read in this one process (DCP re-shards)."""
    import torch
    import torch.distributed.checkpoint as dcp

    from nodes.train.fsdp import SafeReader

    state = {"model": {f"net.{k}": torch.zeros_like(v) for k, v in like.items()}}
    dcp.load(state, storage_reader=SafeReader(str(backup / "sharded")), no_dist=True)
    return {k[len("net."):]: v for k, v in state["model"].items()}


def test_train_loop_fsdp_backups_hold_the_one_process_weights_and_resume_on_two_ranks(tmp_path):
    import torch

    ranks = run_ranks(tmp_path)
    one_model = make_blocks_toy(0)
    runner = NodeRunner(tmp_path / "one")
    from nodes.train.loop import TrainLoop

    runner.run(TrainLoop, "train", train_inputs(one_model, Shard(0, 1, 4), lr=1e-2, objective=Regression()),
               max_steps=STEPS, max_grad_norm=0.05, device="cpu")
    one = {n: p.detach().clone() for n, p in one_model.net.named_parameters() if p.requires_grad}
    assert ranks[0]["progress"] == pytest.approx([e["loss"] for e in runner.events("progress")], abs=1e-5)
    assert [r["saved"] for r in ranks] == [STEPS, 0] and [r["step"] for r in ranks] == [STEPS, STEPS]
    backups = tmp_path / "run" / "backups"
    assert sorted(p.name for p in backups.iterdir()) == [f"step-{s:06d}" for s in range(1, STEPS + 1)]
    assert sorted(p.name for p in (backups / "step-000003" / "sharded").iterdir()) == [
        ".metadata", "__0_0.distcp", "__1_0.distcp"]
    for name, w in sharded_weights(backups / "step-000003", one).items():
        torch.testing.assert_close(w, one[name], atol=1e-5, rtol=0)
        torch.testing.assert_close(ranks[0]["weights"][name], one[name], atol=1e-5, rtol=0)
    assert [r["kinds"] for r in ranks] == [["Parameter"], ["DTensor"]]  # rank 0 full, rank 1 its shards

    resumed = run_ranks(tmp_path, resume=str(backups / "step-000002"))
    assert [r["step"] for r in resumed] == [STEPS, STEPS] and resumed[0]["saved"] == 1
    again = tmp_path / "resumed" / "backups" / "step-000003"
    for name, w in sharded_weights(again, one).items():
        torch.testing.assert_close(w, one[name], atol=1e-5, rtol=0)
