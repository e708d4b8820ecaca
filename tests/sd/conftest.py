"""Fixtures for the SD family tests: tiny models, a saved tiny diffusers folder, a briefly trained LoRA."""

from __future__ import annotations

import pytest

from tests.torch_fixtures import _one_thread, runner  # noqa: F401  (shared fixtures)
from tests.train.helpers import NodeRunner


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    """The tiny SD 1.x model (seed 0) saved as a diffusers folder."""
    from nodes.sd.build import build_tiny, save_diffusers

    return save_diffusers(build_tiny(seed=0), tmp_path_factory.mktemp("tiny") / "tiny-sd1")


class TokenBatches:
    """Latents plus caption tokens of the tiny model, 2 per batch (enough to train a LoRA a little)."""

    def __init__(self, model, n: int = 4):
        import torch

        from nodes.sd.text import tokenize

        g = torch.Generator().manual_seed(0)
        self.latent = torch.randn(n, 4, 8, 8, generator=g)
        self.tokens = tokenize(model.tokenizer, [f"a red circle number {i}" for i in range(n)])
        self.fields = ["latent", "tokens"]
        self.batch_size = 2

    def __len__(self):
        return len(self.latent) // 2

    def epoch(self, epoch, start=0):
        for b in range(start, len(self)):
            sl = slice(2 * b, 2 * b + 2)
            yield {"latent": self.latent[sl], "tokens": self.tokens[sl], "_index": [2 * b, 2 * b + 1]}


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """Tiny model (seed 0) + LoRA rank 4 / alpha 2 on UNet and text encoder, trained 4 steps at a high LR,
    and its LoRA files: ``(model, {"kohya": path, "diffusers": path}, runner)``."""
    from nodes.sd.build import build_tiny
    from nodes.sd.lora import LoraSetup
    from nodes.sd.savers import SaveLora
    from nodes.train.loop import TrainLoop
    from tests.train.helpers import train_inputs

    nr = NodeRunner(tmp_path_factory.mktemp("trained"))
    model = build_tiny(seed=0)
    adapted = nr.run(LoraSetup, "lora", {"model": model}, rank=4, alpha=2.0, train_text_encoder=True,
                     init="gaussian")["adapted"]
    trained = nr.run(TrainLoop, "train", train_inputs(adapted, TokenBatches(model), lr=0.05),
                     max_steps=4, device="cpu")["trained"]
    nr.run(SaveLora, "save", {"model": trained}, name="tiny")
    files = {e["format"].split("_")[0]: e["path"] for e in nr.events("saved", "save")}
    return trained, files, nr
