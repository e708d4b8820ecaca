"""train.loop's ``compile``: the denoiser is compiled in place for the training steps and trains as eager
does; hooks run it uncompiled; after the run it is uncompiled. The tiny SD runs go through dynamo with a
counting backend (inductor's C++ build of the UNet takes minutes on a CPU); one toy run uses inductor."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from nodes.train import speed
from nodes.train.hooks import TrainHook
from nodes.train.loop import TrainLoop
from tests.train.helpers import ListBatches, NodeRunner, ToyModel, train_inputs


@pytest.fixture(autouse=True)
def fresh_dynamo(monkeypatch):
    """Each test compiles from scratch (dynamo's caches and recompile counts are process-wide); torch's
    structured trace log stays out of pytest's log capture (formatting it doubles the compile time)."""
    import logging

    monkeypatch.setattr(logging.getLogger("torch.__trace"), "propagate", False)
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


class UnetCalls(TrainHook):
    """After each step: is the UNet compiled, and does a no-grad call of another batch size compile again?"""

    def __init__(self, counter=None):
        self.counter, self.compiled, self.recompiled = counter, [], []

    def on_step_end(self, run, loss):
        unet = run.model.unet
        self.compiled.append(unet._compiled_call_impl is not None)
        frames = self.counter.frame_count if self.counter else 0
        with torch.no_grad():
            out = run.model.predict(torch.zeros(1, 4, 8, 8), torch.tensor([500]), {"tokens": self.tokens[:1]})
        assert out.shape == (1, 4, 8, 8)
        self.recompiled.append((self.counter.frame_count if self.counter else 0) - frames)


def train_tiny_sd(workspace, compile: str = "off", counter=None):
    """3 LoRA steps of the tiny SD model (same node ids, seeds and batches every time): (model, losses,
    LoRA weights, hook, runner)."""
    from nodes.sd.build import build_tiny
    from nodes.sd.lora import LoraSetup
    from tests.sd.conftest import TokenBatches

    runner = NodeRunner(workspace)
    model = build_tiny(seed=0)
    adapted = runner.run(LoraSetup, "lora", {"model": model}, rank=4, alpha=4.0)["adapted"]
    batches = TokenBatches(model)
    hook = UnetCalls(counter)
    hook.tokens = batches.tokens
    hook.initial = {n: p.detach().clone() for n, p in adapted.named_trainable_parameters()}
    runner.run(TrainLoop, "train", train_inputs(adapted, batches, lr=1e-2, hooks=[hook]), max_steps=3,
               device="cpu", compile=compile)
    losses = [e["loss"] for e in runner.events("progress", "train")]
    lora = {n: p.detach().clone() for n, p in adapted.named_trainable_parameters()}
    return adapted, losses, lora, hook, runner


def test_compiled_unet_trains_like_eager_and_hooks_run_it_uncompiled(tmp_path, monkeypatch):
    from torch._dynamo.testing import CompileCounter

    _, eager_losses, eager_lora, eager_hook, _ = train_tiny_sd(tmp_path / "eager")
    counter = CompileCounter()
    monkeypatch.setattr(speed, "COMPILE_BACKEND", counter)
    model, losses, lora, hook, runner = train_tiny_sd(tmp_path / "compiled", "default", counter)
    assert counter.frame_count >= 1 and counter.op_count > 50  # dynamo captured the UNet's forward
    assert hook.compiled == [True, True, True] and eager_hook.compiled == [False] * 3
    assert hook.recompiled == [0, 0, 0]  # the hook's no-grad batch of 1 ran eagerly
    assert model.unet._compiled_call_impl is None  # uncompiled after the run
    assert any("compiling the unet with torch.compile (mode default)" in e["message"]
               for e in runner.events("log", "train"))
    assert losses == pytest.approx(eager_losses, rel=1e-5)
    assert lora.keys() == eager_lora.keys() and len(lora) > 0
    for name, value in lora.items():
        torch.testing.assert_close(value, eager_lora[name], rtol=1e-4, atol=1e-6)
    assert all(not torch.equal(value, hook.initial[name]) for name, value in lora.items())  # all trained


class Denoiser(torch.nn.Module):
    """A module of the test's own (dynamo does not trace into torch.nn's containers as a top frame)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Conv2d(4, 8, 1), torch.nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.b(torch.nn.functional.silu(self.a(x)))


def make_named_toy(seed: int = 0):
    """The toy bundle with its denoiser named by ``denoiser_part`` (the name matches no default)."""
    from diffusers import DDPMScheduler

    from nodes.train.ddpm import DDPMBundle

    @dataclass(eq=False)
    class Named(ToyModel, DDPMBundle):
        denoiser_part = "net"

        def latents(self, batch):
            return batch["latent"]

        def predict(self, noisy, timesteps, batch):
            return self.net(noisy)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = Denoiser()
    return Named(net, DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012))


@pytest.mark.slow
def test_inductor_compiled_denoiser_trains_like_eager(tmp_path):
    """The real backend (inductor builds C++ kernels with g++: ~20 s with a cold cache)."""
    losses, models = {}, {}
    frames = torch._dynamo.utils.counters["frames"]["ok"]
    for mode in ("off", "default"):
        runner, models[mode] = NodeRunner(tmp_path / mode), make_named_toy()
        runner.run(TrainLoop, "train", train_inputs(models[mode], ListBatches()), max_steps=3, device="cpu",
                   compile=mode)
        losses[mode] = [e["loss"] for e in runner.events("progress", "train")]
    assert torch._dynamo.utils.counters["frames"]["ok"] > frames  # a frame was compiled
    assert losses["default"] == pytest.approx(losses["off"], rel=1e-5)
    for a, b in zip(models["off"].net.parameters(), models["default"].net.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert models["default"].net._compiled_call_impl is None


def test_a_model_without_a_denoiser_part_is_refused_before_training(runner, toy):
    with pytest.raises(ValueError, match=r"^train\.loop: compile: the model has no denoiser part to compile "
                                         r"\(looked for unet, transformer; it has net\); set compile: off$"):
        runner.run(TrainLoop, "train", train_inputs(toy, ListBatches()), max_steps=1, device="cpu",
                   compile="default")
    assert not runner.events("progress")


def test_the_denoiser_is_the_bundles_named_part_else_unet_else_transformer():
    class Bundle:
        def __init__(self, **parts):
            self._parts = parts

        def parts(self):
            return self._parts

    unet, transformer, other = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    assert speed.denoiser(Bundle(text_encoder=other, unet=unet)) == ("unet", unet)
    assert speed.denoiser(Bundle(t5=other, transformer=transformer)) == ("transformer", transformer)
    named = Bundle(unet=unet, prior=other)
    named.denoiser_part = "prior"
    assert speed.denoiser(named) == ("prior", other)


def test_compile_on_a_cpu_without_a_cpp_compiler_is_one_line(runner, monkeypatch):
    monkeypatch.setattr(speed.shutil, "which", lambda name: None)
    model = make_named_toy()
    with pytest.raises(ValueError, match=r"^train\.loop: compile on the CPU needs a C\+\+ compiler \(g\+\+\), "
                                         r"which is not installed; install it or set compile: off$"):
        runner.run(TrainLoop, "train", train_inputs(model, ListBatches()), max_steps=1, device="cpu",
                   compile="default")
    assert not runner.events("progress")
    assert model.net._compiled_call_impl is None
