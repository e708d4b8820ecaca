"""Issue 15's check: 2 gloo ranks x batch 2 reach the LoRA weights of 1 process x batch 4 (CPU fp32, 1e-5) on
the tiny SD model with the real diffusion objective, when its draws are per sample.

The ranks are started with torch.multiprocessing and run sd.lora_setup and train.loop in-process on a
fixed data set in a fixed order (step s trains items 4s .. 4s+3; rank r takes 2 of them, as data.batches
splits the one-process batch over the ranks). The objective has offset noise and input perturbation on,
so every kind of draw it makes must come out the same on the ranks as in one process.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.train.helpers import NodeRunner, train_inputs

pytestmark = pytest.mark.slow

WORLD, STEPS, GLOBAL_BATCH = 2, 3, 4


class Items:
    """The batches of one rank: step s uses items s*4 .. s*4+3 split over the ranks, in order, with the
    ``_epoch`` and ``_index`` fields data.batches gives."""

    def __init__(self, model, rank: int = 0, world: int = 1):
        import torch

        from nodes.sd.text import tokenize

        g = torch.Generator().manual_seed(0)
        n = STEPS * GLOBAL_BATCH
        self.latent = torch.randn(n, 4, 8, 8, generator=g)
        self.tokens = tokenize(model.tokenizer, [f"a shape number {i}" for i in range(n)])
        per_rank = GLOBAL_BATCH // world
        self.rows = [list(range(s * GLOBAL_BATCH + rank * per_rank, s * GLOBAL_BATCH + (rank + 1) * per_rank))
                     for s in range(STEPS)]
        self.fields, self.batch_size = ["latent", "tokens"], per_rank

    def __len__(self) -> int:
        return len(self.rows)

    def epoch(self, epoch: int, start: int = 0):
        for rows in self.rows[start:]:
            yield {"latent": self.latent[rows], "tokens": self.tokens[rows], "_epoch": epoch, "_index": rows}


def train(workspace: Path, rank: int = 0, world: int = 1, draws: str = "per_sample") -> dict:
    """LoRA (UNet and text encoder) on the tiny model, 3 steps; returns the adapter weights."""
    from nodes.sd.build import build_tiny
    from nodes.sd.lora import LoraSetup
    from nodes.train.loop import TrainLoop
    from nodes.train.objective import DiffusionObjectiveNode

    runner = NodeRunner(workspace)
    model = build_tiny(seed=0)
    adapted = runner.run(LoraSetup, "lora", {"model": model}, rank=4, alpha=4.0, train_text_encoder=True,
                         init="gaussian")["adapted"]
    objective = runner.run(DiffusionObjectiveNode, "objective", draws=draws, offset_noise=0.1,
                           input_perturbation=0.1)["objective"]
    # SGD: the update is linear in the gradient; Adam's division by sqrt(v) would blow float32 rounding
    # differences of near-zero gradients (batch 4 vs 2 + 2 sum in another order) up past 1e-5
    inputs = train_inputs(adapted, Items(model, rank, world), lr=0.5, optimizer="sgd", objective=objective)
    runner.run(TrainLoop, "train", inputs, max_steps=STEPS, device="cpu", distributed="ddp" if world > 1 else "auto")
    return {f"{part}.{k}": v.detach().clone() for part in ("unet", "text_encoder")
            for k, v in getattr(adapted, part).state_dict().items() if "lora_" in k}


def _rank_main(rank: int, port: int, out: str, draws: str) -> None:
    import os

    import torch

    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(WORLD),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    import torch.distributed as dist

    from nodes.train import distributed

    distributed.init("cpu", timeout_s=60)  # a missing collective fails in a minute, not 30
    try:
        torch.save(train(Path(out) / "run", rank, WORLD, draws), Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_ranks(tmp_path: Path, draws: str) -> list[dict]:
    import torch
    import torch.multiprocessing as mp

    (tmp_path / "run").mkdir(exist_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_rank_main, args=(port, str(tmp_path), draws), nprocs=WORLD, join=True, start_method="spawn")
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def test_two_ranks_of_two_reach_the_lora_of_one_process_of_four(tmp_path):
    """With draws per_sample (noise, timesteps, offset noise, input perturbation) the LoRA weights of
    2 ranks x batch 2 equal 1 process x batch 4 to 1e-5 after 3 steps, and they did train (lora_B
    starts at 0)."""
    import torch

    ranks = run_ranks(tmp_path, "per_sample")
    torch.set_num_threads(1)
    one = train(tmp_path / "one")
    assert one and set(ranks[0]) == set(one)
    assert max(float(w.abs().max()) for k, w in one.items() if "lora_B" in k) > 1e-3
    for name, w in one.items():
        for r in ranks:
            torch.testing.assert_close(r[name], w, atol=1e-5, rtol=0, msg=lambda m: f"{name}: {m}")
