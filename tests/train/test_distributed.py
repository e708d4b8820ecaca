"""train.loop under torch.distributed: 2 gloo ranks on the CPU, started with torch.multiprocessing.

Each rank runs train.loop in-process on the toy model with its own shard of a fixed data set; the
test process compares what the ranks wrote with a one-process run on the whole batch.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.train.helpers import NodeRunner, make_toy, train_inputs

pytestmark = pytest.mark.slow

WORLD, STEPS, GLOBAL_BATCH = 2, 3, 4


def data():
    import torch

    g = torch.Generator().manual_seed(0)
    return torch.randn(STEPS * GLOBAL_BATCH, 4, 4, 4, generator=g), torch.randn(STEPS * GLOBAL_BATCH, 4, 4, 4,
                                                                              generator=g)


class Shard:
    """Rank ``rank``'s batches of the fixed data set: step s uses rows s*4 .. s*4+3 split over the ranks,
    cut into micro-batches of ``micro``."""

    def __init__(self, rank: int, world: int, micro: int):
        self.latent, self.target = data()
        per_rank = GLOBAL_BATCH // world
        self.rows = [list(range(s * GLOBAL_BATCH + rank * per_rank, s * GLOBAL_BATCH + (rank + 1) * per_rank))
                     for s in range(STEPS)]
        self.micro = micro

    def __len__(self) -> int:
        return sum(len(r) // self.micro for r in self.rows)

    def epoch(self, epoch: int, start: int = 0):
        batches = [rows[i:i + self.micro] for rows in self.rows for i in range(0, len(rows), self.micro)]
        for rows in batches[start:]:
            yield {"latent": self.latent[rows], "target": self.target[rows]}


class Regression:
    """A noise-free objective (mean squared error to a fixed target), so the ranks' and the one-process
    run's losses are the same function of the weights; on ``stop_rank`` it raises the stop flag at its
    ``stop_at``-th call (a SIGTERM that reached that rank only)."""

    def __init__(self, ctx=None, stop_rank: int = -1, stop_at: int = 0, nan_at: int = 0):
        self.ctx, self.stop_rank, self.stop_at, self.nan_at, self.calls = ctx, stop_rank, stop_at, nan_at, 0

    def loss(self, model, batch, generator):
        from nodes.train import distributed

        self.calls += 1
        if distributed.rank() == self.stop_rank and self.calls == self.stop_at:
            self.ctx.cancel.request("SIGTERM received")
        pred = model.predict(batch["latent"], batch["latent"].new_zeros(len(batch["latent"])), batch)
        loss = ((pred - batch["target"]) ** 2).mean()
        if distributed.rank() == self.stop_rank and self.calls == self.nan_at:
            loss = loss * float("nan")
        return loss, {}


def train(workspace: Path, micro: int, accum: int, rank: int = 0, world: int = 1, stop_at: int = 0,
          backups: bool = True, nan_at: int = 0, resume: str = "") -> dict:
    """Train the toy model (its init differs per rank: DDP must broadcast rank 0's) and return what a
    test compares: the weights, the event kinds and the counters."""
    from nodes.train.hook_nodes import Backups
    from nodes.train.loop import TrainLoop

    runner = NodeRunner(workspace)
    runner.resume = Path(resume) if resume else None
    model = make_toy(seed=rank)
    for p in model.net[0].parameters():
        p.requires_grad_(False)  # only some weights train, as with LoRA
    hooks = [runner.run(Backups, "backups", every=1)["hook"]] if backups else []
    objective = Regression(runner.ctx("train", "train.loop"), stop_rank=1, stop_at=stop_at, nan_at=nan_at)
    inputs = train_inputs(model, Shard(rank, world, micro), lr=1e-2, objective=objective, hooks=hooks)
    mode = "ddp" if world > 1 else "auto"
    try:
        runner.run(TrainLoop, "train", inputs, max_steps=STEPS, gradient_accumulation=accum, max_grad_norm=0.05,
                   device="cpu", distributed=mode)
        status = "ok"
    except FloatingPointError as e:
        status = str(e)
    weights = {k: v.detach().clone() for k, v in model.net.state_dict().items()}
    return {"weights": weights, "kinds": sorted({e["event"] for e in runner.sink.events}),
            "saved": len(runner.events("saved")), "progress": [e["loss"] for e in runner.events("progress")],
            "cancelled": runner.cancel.requested, "status": status, "step": model.progress.get("step")}


def _rank_main(rank: int, port: int, out: str, micro: int, accum: int, stop_at: int, nan_at: int,
               resume: str) -> None:
    import os

    import torch

    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(WORLD),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    import torch.distributed as dist

    from nodes.train import distributed

    distributed.init("cpu", timeout_s=30)  # a missing collective fails in seconds, not 30 minutes
    try:
        result = train(Path(out) / "run", micro, accum, rank, WORLD, stop_at, nan_at=nan_at, resume=resume)
        torch.save(result, Path(out) / f"rank{rank}{'-resumed' if resume else ''}.pt")
    finally:
        dist.destroy_process_group()


def run_ranks(tmp_path: Path, micro: int, accum: int, stop_at: int = 0, nan_at: int = 0,
              resume: str = "") -> list[dict]:
    import torch
    import torch.multiprocessing as mp

    (tmp_path / "run").mkdir(exist_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_rank_main, args=(port, str(tmp_path), micro, accum, stop_at, nan_at, resume), nprocs=WORLD, join=True,
                       start_method="spawn")
    return [torch.load(tmp_path / f"rank{r}{'-resumed' if resume else ''}.pt", weights_only=True)
            for r in range(WORLD)]


def test_two_ranks_equal_one_process_and_only_rank0_writes(tmp_path):
    """2 ranks x batch 2 reach the weights of 1 process x batch 4 (fp32, 1e-5), with clipping on, from
    different initial weights (DDP broadcasts rank 0's); the reported loss is the ranks' mean; rank 0
    alone writes backups and reports them."""
    import torch

    ranks = run_ranks(tmp_path, micro=2, accum=1)
    one = train(tmp_path / "one", micro=4, accum=1, backups=False)
    for name, w in one["weights"].items():
        for r in ranks:
            torch.testing.assert_close(r["weights"][name], w, atol=1e-5, rtol=0)
    assert ranks[0]["progress"] == pytest.approx(one["progress"], abs=1e-5)
    assert ranks[0]["saved"] == STEPS and ranks[1]["saved"] == 0
    backups = sorted(p.name for p in (tmp_path / "run" / "backups").iterdir())
    assert backups == [f"step-{s:06d}" for s in range(1, STEPS + 1)]
    meta = json.loads((tmp_path / "run" / "backups" / "step-000003" / "meta.json").read_text())
    assert meta["step"] == STEPS


def test_accumulation_with_no_sync_equals_the_big_batch(tmp_path):
    """2 ranks x micro-batch 1 x accumulation 2 (no_sync on the first micro-batch) = 1 process x batch 4."""
    import torch

    ranks = run_ranks(tmp_path, micro=1, accum=2)
    one = train(tmp_path / "one", micro=4, accum=1, backups=False)
    for name, w in one["weights"].items():
        torch.testing.assert_close(ranks[0]["weights"][name], w, atol=1e-5, rtol=0)
        torch.testing.assert_close(ranks[1]["weights"][name], w, atol=1e-5, rtol=0)


def test_a_stop_on_one_rank_stops_both_and_the_backup_resumes_on_two_ranks(tmp_path):
    """A stop raised on rank 1 only (its 2nd forward) stops both ranks after step 2; rank 0 writes the
    stop's backup; both hold the same weights. Resumed on 2 ranks, the run ends where an uninterrupted
    one does (the objective draws no noise)."""
    import torch

    ranks = run_ranks(tmp_path, micro=2, accum=1, stop_at=2)
    assert [r["step"] for r in ranks] == [2, 2]
    assert all(r["cancelled"] for r in ranks)
    for name, w in ranks[0]["weights"].items():
        torch.testing.assert_close(ranks[1]["weights"][name], w, atol=0, rtol=0)
    backup = tmp_path / "run" / "backups" / "step-000002"
    assert json.loads((backup / "meta.json").read_text())["reason"] == "stopped"
    resumed = run_ranks(tmp_path, micro=2, accum=1, resume=str(backup))
    one = train(tmp_path / "one", micro=4, accum=1, backups=False)
    assert [r["step"] for r in resumed] == [STEPS, STEPS]
    for name, w in one["weights"].items():
        for r in resumed:
            torch.testing.assert_close(r["weights"][name], w, atol=1e-5, rtol=0)


def test_a_nan_loss_on_one_rank_stops_both_before_the_update(tmp_path):
    """A non-finite loss on rank 1 only (its 2nd forward) fails both ranks at step 2 with a message that
    says where; neither applies that update (they hold the step-1 weights, equal on both)."""
    import torch

    ranks = run_ranks(tmp_path, micro=2, accum=1, nan_at=2)
    assert "loss is nan on this rank at step 2" in ranks[1]["status"]
    assert "on another rank at step 2" in ranks[0]["status"]
    assert all(torch.isfinite(w).all() for r in ranks for w in r["weights"].values())
    for name, w in ranks[0]["weights"].items():
        torch.testing.assert_close(ranks[1]["weights"][name], w, atol=0, rtol=0)
    assert sorted(p.name for p in (tmp_path / "run" / "backups").iterdir()) == ["step-000001"]
