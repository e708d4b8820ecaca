"""A third-party node pack with a family of its own, as a pack author writes one (tests only).

It is found through the ``nodetrainer.nodes`` entry point, like any pack: its model type
is a subtype of DDPMModel, its model value a DDPMBundle, and the generic nodes
(data stages, batches, the DDPM objective, the optimizer, train.loop) train it unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any as _Any

from runtime import Input, Output, Param, Seed, node
from runtime.data import PerSampleStage
from runtime.port_types import DDPMModel, ImageTensor, Latent, value_type

from nodes.train.bundle import require_field
from nodes.train.ddpm import DDPMBundle

FakeModel = value_type("FakeModel", DDPMModel, doc="the fake family's model (a tiny conv denoiser)")


@dataclass(eq=False)
class FakeBundle(DDPMBundle):
    """A denoiser over 3 x 8 x 8 'latents' (8x average-pooled images) and a DDPM noise schedule."""

    denoiser: _Any
    noise_scheduler: _Any
    prediction_type: str = "epsilon"
    progress: dict = field(default_factory=dict)

    family = "fake"
    version = "fake1"
    part_names = ("denoiser",)

    def latents(self, batch: dict):
        return require_field(batch, "latent", "connect fake.encode_image's 'latent' output to the batches node")

    def predict(self, noisy, timesteps, batch: dict):
        return self.denoiser(noisy)


@node("fake.tiny_model", title="Tiny fake model", category="Model")
class TinyFake:
    """A tiny denoiser with random weights, all of them trainable."""

    model = Output(FakeModel, doc="the fake model")
    seed = Param(Seed, 0, doc="seed of the weights")

    def run(self, ctx):
        import torch
        from diffusers import DDPMScheduler

        with ctx.torch_seeded(self.seed):
            net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.SiLU(),
                                      torch.nn.Conv2d(16, 3, 3, padding=1))
        return {"model": FakeBundle(net, DDPMScheduler(num_train_timesteps=1000))}


@node("fake.encode_image", title="Encode image (fake)", category="Data")
class EncodeImage(PerSampleStage):
    """'Encode' an image tensor by 8x average pooling."""

    image = Input(ImageTensor, doc="image tensor in -1..1")
    latent = Output(Latent, doc="the pooled image")
    random = False

    def process(self, item, image):
        import torch

        return {"latent": torch.nn.functional.avg_pool2d(image[None], 8)[0]}


@node("fake.save", title="Save fake model", category="Save", sink=True)
class SaveFake:
    """Write the fake model's weights into the run folder."""

    model = Input(FakeModel, doc="the trained fake model")

    def run(self, ctx, model):
        from safetensors.torch import save_file

        path = ctx.path("fake/model.safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous() for k, v in model.denoiser.state_dict().items()}, str(path))
        ctx.log(f"saved {path}")
        return {}
