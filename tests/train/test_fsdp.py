"""distributed: fsdp (nodes/train/fsdp.py): 2 gloo ranks on the CPU, started with torch.multiprocessing.

Each rank shards a toy model with repeated blocks through ``distributed.parallel_parts("fsdp", ...)``
and trains it the way train.loop's steps do (``parts.step(sync)`` around each micro-batch, the
gradient norm clipped over the trainable weights, the optimizer built after sharding); the test
process compares what the ranks wrote with one process on the whole batch.
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import pytest

from tests.train.helpers import make_toy
from tests.train.test_distributed import GLOBAL_BATCH, STEPS, Shard

pytestmark = pytest.mark.slow

WORLD, MAX_NORM = 2, 0.05


def make_blocks_toy(seed: int, lora: bool = False):
    """The toy bundle with a denoiser of repeated blocks (each with a buffer the state dict leaves out);
    its input conv is frozen, as a partial fine-tune's. ``lora``: peft LoRA on every conv, base frozen."""
    import torch
    import torch.nn as nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(8, 8, 1)
            self.register_buffer("gain", torch.full((1, 8, 1, 1), 0.5), persistent=False)

        def forward(self, x):
            return x + torch.tanh(self.conv(x)) * self.gain

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv_in = nn.Conv2d(4, 8, 1)
            self.blocks = nn.ModuleList([Block(), Block()])
            self.conv_out = nn.Conv2d(8, 4, 1)

        def forward(self, x):
            h = self.conv_in(x)
            for block in self.blocks:
                h = block(h)
            return self.conv_out(h)

    model = make_toy(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.net = Net()
        if lora:
            from peft import LoraConfig, inject_adapter_in_model

            inject_adapter_in_model(LoraConfig(r=2, lora_alpha=2, target_modules=["conv", "conv_in", "conv_out"],
                                               init_lora_weights="gaussian"), model.net)
            for name, p in model.net.named_parameters():
                p.requires_grad_("lora_" in name)
    if not lora:
        model.net.conv_in.requires_grad_(False)
    return model


def fit(model, parts, shard: Shard, accum: int, steps: range, optimizer=None):
    """train.loop's update for ``steps``: micro-batches through ``parts.step``, the loss's share
    backward, clip_grad_norm_ over the trainable weights, AdamW. Returns (optimizer, gradient norms)."""
    import torch

    params = model.trainable_parameters()
    optimizer = optimizer or torch.optim.AdamW(params, lr=1e-2)
    batches, norms = list(shard.epoch(0)), []
    for step in steps:
        for i in range(accum):
            batch = batches[step * accum + i]
            with parts.step(i + 1 == accum) if parts else contextlib.nullcontext():
                pred = model.predict(batch["latent"], batch["latent"].new_zeros(len(batch["latent"])), batch)
                (((pred - batch["target"]) ** 2).mean() / accum).backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(params, MAX_NORM)))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return optimizer, norms


def plain(module) -> dict:
    """The state of ``module``: plain tensors, a rank's own shard of a sharded one."""
    from torch.distributed.tensor import DTensor

    return {k: (v.to_local() if isinstance(v, DTensor) else v).detach().clone()
            for k, v in module.state_dict().items()}


def one_process(accum: int = 1, lora: bool = False) -> dict:
    model = make_blocks_toy(0, lora)
    _, norms = fit(model, None, Shard(0, 1, GLOBAL_BATCH // accum), accum, range(STEPS))
    return {"weights": plain(model.net), "norms": norms}


def _sharded(model):
    from torch.distributed.tensor import DTensor

    return {n for n, p in model.net.named_parameters() if isinstance(p, DTensor)}


#: the training runs of one spawn: (micro-batch, LoRA)
TRAIN_RUNS = {"batch2": (2, False), "accumulated": (1, False), "lora": (2, True)}


def case_train(rank: int, out: Path) -> dict:
    """Each of TRAIN_RUNS on this rank, then the sharded backup's round trip (one spawn for all)."""
    runs = {key: train_run(rank, micro, lora) for key, (micro, lora) in TRAIN_RUNS.items()}
    return {**runs, "resume": case_resume(rank, out)}


def train_run(rank: int, micro: int, lora: bool) -> dict:
    """2 ranks from different initial weights: train, then finish() (full weights on rank 0)."""
    import torch

    from nodes.train import distributed

    model = make_blocks_toy(seed=rank, lora=lora)  # rank 1's init differs: rank 0's must win
    model.prepare_for_training(torch.device("cpu"))
    parts = distributed.parallel_parts("fsdp", model, torch.device("cpu"))
    sharded = _sharded(model)
    fsdp_classes = sorted({type(m).__name__ for m in model.net.modules() if type(m).__name__.startswith("FSDP")})
    _, norms = fit(model, parts, Shard(rank, WORLD, micro), GLOBAL_BATCH // WORLD // micro, range(STEPS))
    parts.finish()
    params = dict(model.net.named_parameters())
    return {"weights": plain(model.net), "norms": norms, "sharded": sorted(sharded), "fsdp_classes": fsdp_classes,
            "after": {n: type(p).__name__ for n, p in params.items()},
            "devices": sorted({str(p.device) for p in params.values()}),
            "trainable": sorted(n for n, p in params.items() if p.requires_grad),
            "gain": [b.gain.clone() for b in model.net.blocks], "training": model.net.training}


def case_resume(rank: int, out: Path) -> dict:
    """Train 2 steps, save_sharded, train the 3rd; a fresh model (the same frozen weights, as from the
    base model file, other trainable ones) load_sharded continues with the 3rd step: both must agree,
    weights and optimizer state."""
    import torch

    from nodes.train import distributed

    def setup(seed, shift=0.0):
        model = make_blocks_toy(seed=seed)
        with torch.no_grad():
            for p in model.trainable_parameters():
                p.add_(shift)
        parts = distributed.parallel_parts("fsdp", model, torch.device("cpu"))
        return model, parts, torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)

    shard = Shard(rank, WORLD, 2)
    model, parts, optimizer = setup(rank)
    fit(model, parts, shard, 1, range(2), optimizer)
    folder = out / "backup"
    if rank == 0:
        folder.mkdir()
    distributed.barrier()
    written = parts.save_sharded(folder, optimizer)
    fit(model, parts, shard, 1, range(2, STEPS), optimizer)
    again, again_parts, again_opt = setup(0, shift=1.0)
    again_parts.load_sharded(folder, again_opt)
    restored_steps = [int(s["step"]) for s in again_opt.state_dict()["state"].values()]
    fit(again, again_parts, shard, 1, range(2, STEPS), again_opt)
    local = {n: p.to_local().clone() for n, p in model.net.named_parameters() if p.requires_grad}
    local_again = {n: p.to_local().clone() for n, p in again.net.named_parameters() if p.requires_grad}
    moments = [s["exp_avg_sq"].to_local().clone() for s in optimizer.state_dict()["state"].values()]
    moments_again = [s["exp_avg_sq"].to_local().clone() for s in again_opt.state_dict()["state"].values()]
    unfit = ""
    try:
        make = make_blocks_toy(seed=0, lora=True)
        wrong = distributed.parallel_parts("fsdp", make, torch.device("cpu"))
        wrong.load_sharded(folder, torch.optim.AdamW(make.trainable_parameters(), lr=1e-2))
    except ValueError as e:
        unfit = str(e)
    parts.finish()
    return {"local": local, "local_again": local_again, "moments": moments, "moments_again": moments_again,
            "restored_steps": restored_steps, "written": str(written), "unfit": unfit,
            "weights": plain(model.net) if rank == 0 else {}}


CASES = {"train": case_train}


def _rank_main(rank: int, port: int, out: str, case: str) -> None:
    import os

    import torch

    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(WORLD),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    import torch.distributed as dist

    from nodes.train import distributed

    distributed.init("cpu", timeout_s=30)  # a missing collective fails in seconds, not 30 minutes
    try:
        torch.save(CASES[case](rank, Path(out)), Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_ranks(tmp_path: Path, case: str) -> list[dict]:
    import torch
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_rank_main, args=(port, str(tmp_path), case), nprocs=WORLD, join=True,
                       start_method="spawn")
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """TRAIN_RUNS and the backup round trip on 2 ranks (one spawn for the tests that read them):
    key -> [rank 0, rank 1]."""
    ranks = run_ranks(tmp_path_factory.mktemp("fsdp"), "train")
    return {key: [r[key] for r in ranks] for key in [*TRAIN_RUNS, "resume"]}


def test_two_ranks_fsdp_equal_one_process_and_finish_gathers_full_weights_on_rank0(trained):
    """2 ranks x batch 2 under fully_shard (blocks, then the root; different initial weights) reach the
    weights and clipped gradient norms of 1 process x batch 4 (fp32, 1e-5); finish() leaves rank 0 an
    ordinary module of full CPU tensors (frozen flags, unsaved buffers and train mode kept) equal to
    them, while rank 1 keeps its shards."""
    import torch

    r0, r1 = trained["batch2"]
    one = one_process()
    assert set(r0["sharded"]) == set(one["weights"])  # every parameter of the trained part, frozen ones too
    assert r0["fsdp_classes"] == ["FSDPBlock", "FSDPNet"]
    assert r0["norms"] == pytest.approx(one["norms"], abs=1e-5) and r1["norms"] == r0["norms"]
    assert one["norms"][0] > MAX_NORM  # clipping was active
    assert set(r0["weights"]) == set(one["weights"])
    for name, w in one["weights"].items():
        torch.testing.assert_close(r0["weights"][name], w, atol=1e-5, rtol=0)
    assert set(r0["after"].values()) == {"Parameter"} and r0["devices"] == ["cpu"]
    assert r0["trainable"] == sorted(n for n in one["weights"] if not n.startswith("conv_in"))
    assert all(torch.equal(g, torch.full((1, 8, 1, 1), 0.5)) for g in r0["gain"]) and r0["training"]
    assert set(r1["after"].values()) == {"DTensor"}


def test_fsdp_accumulation_without_gradient_sync_equals_the_big_batch(trained):
    """2 ranks x micro-batch 1 x accumulation 2 (no gradient sync on the first micro-batch) = 1 x 4."""
    import torch

    r0, _ = trained["accumulated"]
    one = one_process()
    for name, w in one["weights"].items():
        torch.testing.assert_close(r0["weights"][name], w, atol=1e-5, rtol=0)


def test_sharded_backup_round_trip_continues_like_an_uninterrupted_run(trained):
    """save_sharded at step 2 writes every rank's share under folder/sharded; a fresh model (other initial
    weights) and optimizer load_sharded it and the 3rd step equals the uninterrupted run's, weights and
    Adam moments; a backup that does not fit the graph is one ValueError naming the folder."""
    import torch

    ranks = trained["resume"]
    sharded = Path(ranks[0]["written"])
    assert sharded.name == "sharded" and ranks[1]["written"] == str(sharded)
    assert sorted(p.name for p in sharded.iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    for r in ranks:
        assert r["restored_steps"] and set(r["restored_steps"]) == {2}
        for name, w in r["local"].items():
            torch.testing.assert_close(r["local_again"][name], w, atol=1e-6, rtol=0)
        for a, b in zip(r["moments"], r["moments_again"], strict=True):
            torch.testing.assert_close(b, a, atol=1e-9, rtol=0)
        assert r["unfit"].startswith(f"backup {sharded.parent}: its sharded state does not fit")
        assert "\n" not in r["unfit"]
    one = one_process()
    for name, w in one["weights"].items():
        torch.testing.assert_close(ranks[0]["weights"][name], w, atol=1e-5, rtol=0)


def test_lora_under_fsdp_trains_like_one_process(trained):
    """peft LoRA (frozen base, trainable lora_A/lora_B) under fully_shard on 2 ranks x batch 2 reaches
    1 process x batch 4's weights; the base stays as it was."""
    import torch

    r0, _ = trained["lora"]
    one = one_process(lora=True)
    start = plain(make_blocks_toy(0, lora=True).net)
    lora = [n for n in one["weights"] if "lora_" in n]
    assert len(lora) == 8 and r0["trainable"] == sorted(lora)
    for name, w in one["weights"].items():
        torch.testing.assert_close(r0["weights"][name], w, atol=1e-5, rtol=0)
        if name not in lora:
            torch.testing.assert_close(r0["weights"][name], start[name], atol=0, rtol=0)
        elif "lora_B" in name:
            assert not torch.equal(w, start[name])  # it trained
