"""LoRA on a real diffusers UNet and CLIP text encoder (the tiny SD model, sd.lora_setup) under
train.loop's distributed: fsdp on 2 gloo ranks: the adapter weights in the sharded backup, and in the
file sd.save_lora writes on rank 0 after train.loop, equal 1 process x batch 4's to 1e-5, with the
real diffusion objective and per-sample draws."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.sd.test_distributed_lora import STEPS, Items
from tests.train.helpers import NodeRunner, train_inputs

pytestmark = pytest.mark.slow

WORLD = 2


def train(workspace: Path, rank: int = 0, world: int = 1) -> dict:
    """sd.lora_setup (UNet and text encoder) on the tiny model, 3 SGD steps, a backup at the end; on
    rank 0 sd.save_lora after train.loop. Returns the trained weights and the LoRA file (rank 0)."""
    from nodes.sd.savers import SaveLora
    from tests.adapters.helpers import save_lora

    from nodes.sd.build import build_tiny
    from nodes.sd.lora import LoraSetup
    from nodes.train.hook_nodes import Backups
    from nodes.train.loop import TrainLoop
    from nodes.train.objective import DiffusionObjectiveNode

    runner = NodeRunner(workspace)
    model = build_tiny(seed=0)
    adapted = runner.run(LoraSetup, "lora", {"model": model}, rank=4, alpha=4.0, train_text_encoder=True,
                         init="gaussian")["adapted"]
    objective = runner.run(DiffusionObjectiveNode, "objective", draws="per_sample", offset_noise=0.1,
                           input_perturbation=0.1)["objective"]
    hooks = [runner.run(Backups, "backups", every=STEPS)["hook"]] if world > 1 else []
    inputs = train_inputs(adapted, Items(model, rank, world), lr=0.5, optimizer="sgd", objective=objective,
                          hooks=hooks)
    # the auto kernel: fused SGD on a CPU, which DTensor lacks, so it must fall back to foreach
    runner.run(TrainLoop, "train", inputs, max_steps=STEPS, device="cpu",
               distributed="fsdp" if world > 1 else "auto")
    if rank:
        return {}
    weights = {k: p.detach().clone() for k, p in adapted.named_trainable_parameters()}
    return {"weights": weights, "file": save_lora(runner, SaveLora, adapted, "lora", formats="diffusers")["diffusers"]}


def _rank_main(rank: int, port: int, out: str) -> None:
    import os

    import torch

    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(WORLD),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    import torch.distributed as dist

    from nodes.train import distributed

    distributed.init("cpu", timeout_s=60)
    try:
        torch.save(train(Path(out) / "run", rank, WORLD), Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_lora_on_the_tiny_sd_model_under_fsdp_equals_one_process(tmp_path):
    import torch
    import torch.distributed.checkpoint as dcp
    import torch.multiprocessing as mp

    from safetensors.torch import load_file

    from nodes.train.fsdp import SafeReader

    (tmp_path / "run").mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_rank_main, args=(port, str(tmp_path)), nprocs=WORLD, join=True, start_method="spawn")
    torch.set_num_threads(1)
    ranks = torch.load(tmp_path / "rank0.pt", weights_only=True)
    single = train(tmp_path / "one")
    one = single["weights"]
    assert len(one) > 8 and all("lora_" in k for k in one)
    assert {k.split(".")[0] for k in one} == {"unet", "text_encoder"}
    assert max(float(w.abs().max()) for k, w in one.items() if "lora_B" in k) > 1e-3  # it trained
    state = {"model": {k: torch.zeros_like(v) for k, v in one.items()}}
    backup = tmp_path / "run" / "backups" / f"step-{STEPS:06d}" / "sharded"
    dcp.load(state, storage_reader=SafeReader(str(backup)), no_dist=True)
    for name, w in one.items():
        torch.testing.assert_close(state["model"][name], w, atol=1e-5, rtol=0, msg=lambda m: f"{name}: {m}")
        torch.testing.assert_close(ranks["weights"][name], w, atol=1e-5, rtol=0)
    saved, saved_one = load_file(ranks["file"]), load_file(single["file"])
    assert Path(ranks["file"]).parent.parent == tmp_path / "run" and len(saved) == len(one)
    assert set(saved) == set(saved_one)
    for key, w in saved_one.items():
        torch.testing.assert_close(saved[key], w, atol=1e-5, rtol=0)
