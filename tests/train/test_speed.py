"""train.loop's speed and memory options (nodes/train/speed.py) on the toy model: optimizer kernel, TF32,
attention backend, activation offloading. torch.compile: test_speed_compile.py."""

from __future__ import annotations

import contextlib

import pytest
import torch

from nodes.train import speed
from nodes.train.hooks import TrainHook
from nodes.train.loop import TrainLoop
from nodes.train.objective import DiffusionObjective
from tests.train.helpers import ListBatches, make_toy, train_inputs


def weights(model):
    return [p.detach().clone() for p in model.net.parameters()]


class OptimizerSpy(TrainHook):
    def on_start(self, run):
        self.optimizer = run.state.optimizer


@pytest.mark.parametrize("kernel,fused,foreach", [("fused", True, False), ("foreach", False, True),
                                                  ("for-loop", False, False)])
def test_optimizer_kernel_reaches_torch_adamw(runner, toy, kernel, fused, foreach):
    spy = OptimizerSpy()
    before = weights(toy)
    runner.run(TrainLoop, "train", train_inputs(toy, ListBatches(), hooks=[spy]), max_steps=2, device="cpu",
               optimizer_kernel=kernel)
    assert isinstance(spy.optimizer, torch.optim.AdamW)
    assert bool(spy.optimizer.defaults["fused"]) is fused
    assert bool(spy.optimizer.defaults["foreach"]) is foreach
    assert all(not torch.equal(a, b) for a, b in zip(before, weights(toy)))


def test_the_three_kernels_make_the_same_update(runner):
    got = {}
    for kernel in ("fused", "foreach", "for-loop"):
        toy = make_toy()
        runner.run(TrainLoop, "train", train_inputs(toy, ListBatches()), max_steps=3, device="cpu",
                   optimizer_kernel=kernel)
        got[kernel] = weights(toy)
    for kernel in ("foreach", "for-loop"):
        for a, b in zip(got["fused"], got[kernel]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_a_kernel_choice_needs_a_spec_that_takes_one(runner, toy):
    class OldSpec:
        def build(self, params):
            return torch.optim.SGD(params, lr=0.1)

    inputs = {**train_inputs(toy, ListBatches()), "optimizer": OldSpec()}
    with pytest.raises(ValueError, match="train.loop: optimizer_kernel 'fused': this optimizer spec"):
        runner.run(TrainLoop, "train", inputs, max_steps=1, device="cpu", optimizer_kernel="fused")
    assert not runner.events("progress")
    runner.run(TrainLoop, "train", inputs, max_steps=1, device="cpu")  # auto: build(params) as before
    assert len(runner.events("progress")) == 1


class FlagObjective(DiffusionObjective):
    """Records torch's attention, matmul-precision and saved-tensor settings in the forward and the backward."""

    def __init__(self):
        super().__init__()
        self.forward, self.backward = [], []

    @staticmethod
    def flags():
        return {"math": torch.backends.cuda.math_sdp_enabled(), "flash": torch.backends.cuda.flash_sdp_enabled(),
                "efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
                "matmul": torch.get_float32_matmul_precision(), "cudnn_tf32": torch.backends.cudnn.allow_tf32}

    def loss(self, model, batch, generator):
        loss, metrics = super().loss(model, batch, generator)
        self.forward.append(self.flags())
        loss.register_hook(lambda grad: self.backward.append(self.flags()))
        return loss, metrics


def test_attention_backend_holds_in_forward_and_backward_and_only_there(runner, toy):
    obj = FlagObjective()
    outside = FlagObjective.flags()
    runner.run(TrainLoop, "train", train_inputs(toy, ListBatches(), objective=obj), max_steps=2, device="cpu",
               attention="math")
    assert len(obj.forward) == len(obj.backward) == 2
    for flags in obj.forward + obj.backward:
        assert (flags["math"], flags["flash"], flags["efficient"]) == (True, False, False)
    assert FlagObjective.flags() == outside
    obj = FlagObjective()
    runner.run(TrainLoop, "train", train_inputs(make_toy(), ListBatches(), objective=obj), max_steps=1,
               device="cpu", attention="flash")
    assert (obj.forward[0]["math"], obj.forward[0]["flash"]) == (False, True)


def test_an_attention_backend_the_device_lacks_fails_before_training(runner, toy):
    before = weights(toy)
    with pytest.raises(ValueError) as err:
        runner.run(TrainLoop, "train", train_inputs(toy, ListBatches()), max_steps=1, device="cpu",
                   attention="efficient")
    message = str(err.value)
    assert message.startswith("train.loop: attention 'efficient' is not available on cpu in fp32")
    assert message.endswith("choose auto or math, flash") and "\n" not in message
    assert not runner.events("progress")
    assert all(torch.equal(a, b) for a, b in zip(before, weights(toy)))


def test_tf32_on_cuda_sets_and_restores_torch_settings(runner):
    """The CUDA branch only sets torch's flags, which a machine without CUDA also has."""
    matmul, cudnn = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        with pytest.raises(RuntimeError, match="inside"):
            with speed.tf32(runner.ctx(), torch.device("cuda"), True):
                assert torch.get_float32_matmul_precision() == "high"
                assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
                raise RuntimeError("inside")
        assert torch.get_float32_matmul_precision() == matmul
        assert torch.backends.cudnn.allow_tf32 is False
    finally:
        torch.set_float32_matmul_precision(matmul)
        torch.backends.cudnn.allow_tf32 = cudnn


def test_tf32_on_a_cpu_does_nothing_and_says_so_once(runner, toy):
    obj = FlagObjective()
    outside = FlagObjective.flags()
    runner.run(TrainLoop, "train", train_inputs(toy, ListBatches(), objective=obj), max_steps=3, device="cpu",
               tf32=True)
    said = [e["message"] for e in runner.events("log", "train") if "tf32" in e["message"]]
    assert said == ["tf32: cpu has no TF32 mode; the option does nothing here"]
    assert all(f["matmul"] == outside["matmul"] for f in obj.forward) and len(obj.forward) == 3


class CountingSaveOnCpu(torch.autograd.graph.save_on_cpu):
    """torch's save_on_cpu that counts the tensors it moved and notes the pin_memory asked for."""

    packed, pins = 0, []

    def __init__(self, pin_memory=False, device_type="cuda"):
        CountingSaveOnCpu.pins.append(pin_memory)
        super().__init__(pin_memory=False, device_type=device_type)
        pack = self.pack_hook

        def counting(tensor):
            CountingSaveOnCpu.packed += 1
            return pack(tensor)

        self.pack_hook = counting


def test_offloaded_activations_train_the_same(runner, monkeypatch):
    """With the CPU treated as an accelerator, the forward's saved tensors go through save_on_cpu and the
    trained weights equal a run without it."""
    plain = make_toy()
    runner.run(TrainLoop, "train", train_inputs(plain, ListBatches()), max_steps=3, device="cpu")
    monkeypatch.setattr(speed, "HOST_DEVICES", ())
    monkeypatch.setattr(torch.autograd.graph, "save_on_cpu", CountingSaveOnCpu)
    CountingSaveOnCpu.packed, CountingSaveOnCpu.pins = 0, []
    offloaded = make_toy()
    runner.run(TrainLoop, "train", train_inputs(offloaded, ListBatches()), max_steps=3, device="cpu",
               offload_activations=True)
    assert CountingSaveOnCpu.packed >= 3 * 3  # each step saves the conv inputs and activations
    assert CountingSaveOnCpu.pins == [False] * 3  # pinned memory is for CUDA
    for a, b in zip(weights(plain), weights(offloaded)):
        assert torch.equal(a, b)


def test_offloading_on_a_cpu_does_nothing_and_says_so(runner, toy, monkeypatch):
    monkeypatch.setattr(torch.autograd.graph, "save_on_cpu", CountingSaveOnCpu)
    CountingSaveOnCpu.packed = 0
    runner.run(TrainLoop, "train", train_inputs(toy, ListBatches()), max_steps=2, device="cpu",
               offload_activations=True)
    assert CountingSaveOnCpu.packed == 0
    assert any("offload_activations: training on the CPU" in e["message"] for e in runner.events("log", "train"))


def test_offloading_pins_memory_on_cuda(runner, monkeypatch):
    monkeypatch.setattr(torch.autograd.graph, "save_on_cpu", CountingSaveOnCpu)
    CountingSaveOnCpu.pins = []
    assert isinstance(speed.offload(runner.ctx(), torch.device("cuda"), True)(), CountingSaveOnCpu)
    assert CountingSaveOnCpu.pins == [True]
    assert speed.offload(runner.ctx(), torch.device("cuda"), False) is contextlib.nullcontext


def test_every_speed_option_is_a_documented_param_with_todays_default():
    params = TrainLoop.__node_spec__.params
    defaults = {"compile": "off", "optimizer_kernel": "auto", "tf32": False, "attention": "auto",
                "offload_activations": False}
    for name, default in defaults.items():
        assert params[name].default == default
        assert params[name].doc and "\n" not in params[name].doc
