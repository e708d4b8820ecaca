"""A step split unevenly over the ranks (2 + 1 items, as at an epoch's end): each item counts as in one
process's mean of the whole step, although DDP averages the ranks' means."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.train.helpers import NodeRunner, make_toy, train_inputs
from tests.train.test_distributed import Regression, data

pytestmark = pytest.mark.slow

STEPS = 3
ROWS = {0: [0, 1], 1: [2]}  # of each step's first 3 rows: rank 0 takes 2, rank 1 takes 1


class Uneven:
    """Step s uses rows s*4 + (0, 1, 2) of the fixed data: all of them in one process, split 2 + 1 over
    two ranks; batches name their items (``_index``) as data.batches' do."""

    def __init__(self, rows: list[int]):
        self.latent, self.target = data()
        self.rows = rows

    def __len__(self) -> int:
        return STEPS

    def epoch(self, epoch: int, start: int = 0):
        for s in range(start, STEPS):
            index = [s * 4 + r for r in self.rows]
            yield {"latent": self.latent[index], "target": self.target[index], "_index": index, "_epoch": epoch}


def train(workspace: Path, rows: list[int], world: int) -> dict:
    from nodes.train.loop import TrainLoop

    runner = NodeRunner(workspace)
    model = make_toy(seed=0)
    inputs = train_inputs(model, Uneven(rows), lr=1e-2, optimizer="sgd", objective=Regression())
    runner.run(TrainLoop, "train", inputs, max_steps=STEPS, max_grad_norm=0, device="cpu",
               distributed="ddp" if world > 1 else "auto")
    return {"weights": {k: v.detach().clone() for k, v in model.net.state_dict().items()},
            "loss": [e["loss"] for e in runner.events("progress")]}


def _rank_main(rank: int, port: int, out: str) -> None:
    import os

    import torch
    import torch.distributed as dist

    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    from nodes.train import distributed

    distributed.init("cpu", timeout_s=30)
    try:
        torch.save(train(Path(out) / f"run{rank}", ROWS[rank], 2), Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_a_step_split_two_and_one_trains_as_one_process_on_the_three(tmp_path):
    import torch
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_rank_main, args=(port, str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    one = train(tmp_path / "one", [0, 1, 2], 1)
    for name, w in one["weights"].items():
        for r in ranks:
            torch.testing.assert_close(r["weights"][name], w, atol=1e-6, rtol=0)
    assert ranks[0]["loss"] == pytest.approx(one["loss"], abs=1e-6)  # the step's mean, not the ranks' means'
