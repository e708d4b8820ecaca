"""Schedule-free optimizers in a run: samples, saves and backups use the averaged weights, training
goes on from the exact training weights, the trained model ends with the averaged weights, and a
resumed run equals an uninterrupted one."""

from __future__ import annotations

import importlib.util
import json
import warnings

import pytest
import torch
from safetensors.torch import load_file

from nodes.train.artifacts import ModelSampler, ModelSaver
from nodes.train.hook_nodes import Backups, PeriodicSave, SamplePreviews
from nodes.train.hooks import TrainHook
from nodes.train.loop import TrainLoop
from nodes.train.lr_schedule import LRScheduleConfig
from nodes.train.optimizer import OptimizerConfig
from nodes.train.optimizers import OPTIMIZERS
from nodes.train.schedule_free import in_train_mode, inference_weights, is_schedule_free
from runtime.backups import list_backups
from tests.train.helpers import ListBatches, NodeRunner, make_toy, train_inputs

SCHEDULE_FREE = [n for n, e in OPTIMIZERS.items() if e.schedule_free]


def each():
    return [pytest.param(n, marks=pytest.mark.skipif(importlib.util.find_spec(OPTIMIZERS[n].package) is None,
                                                     reason=f"{OPTIMIZERS[n].pip} missing")) for n in SCHEDULE_FREE]


@pytest.fixture(autouse=True)
def quiet_libraries():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def weights(model):
    return [p.detach().clone() for p in model.net.parameters()]


def same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


class Spy(TrainHook):
    """Keeps the run's optimizer, and the weights each sampler/saver call saw with its train mode."""

    def __init__(self):
        self.optimizer, self.calls = None, []

    def on_start(self, run):
        self.optimizer = run.state.optimizer


class Recorder(ModelSampler, ModelSaver):
    format = "fake"

    def __init__(self, spy: Spy):
        self.spy = spy

    def _record(self, model, step):
        self.spy.calls.append((step, in_train_mode(self.spy.optimizer), weights(model)))
        return []

    def sample(self, ctx, model, step=None, tag=""):
        torch.randn(3)  # consumes the global RNG: hooks must not change the training trajectory
        return self._record(model, step)

    def save(self, ctx, model, step=None):
        return self._record(model, step)


def lr_of(name: str) -> float:
    return 1.0 if OPTIMIZERS[name].adaptive else 1e-2


def train(runner, model, name, hooks=(), schedule=None, **params):
    params = {"max_steps": 8, "device": "cpu", **params}
    inputs = train_inputs(model, ListBatches(n=6, batch_size=2), lr=lr_of(name), optimizer=name,
                          schedule=schedule, hooks=hooks)
    inputs["optimizer"] = OptimizerConfig(name, lr_of(name), extra={"d0": 1e-3} if "prodigy" in name else {})
    return runner.run(TrainLoop, "train", inputs, **params)["trained"]


def hook(runner, cls, node_id, inputs=None, **params):
    return runner.run(cls, node_id, inputs or {}, **params)["hook"]


@pytest.mark.parametrize("name", each())
def test_inference_weights_hold_the_average_and_give_the_training_weights_back_exactly(name):
    net = torch.nn.Linear(4, 2)
    opt = OptimizerConfig(name, lr_of(name), extra={"d0": 1e-3} if "prodigy" in name else {}).build(
        list(net.parameters()))
    assert in_train_mode(opt)  # built ready to train (schedulefree's start in eval mode)
    for _ in range(8):  # RAdam's first four steps make no update
        opt.zero_grad()
        (net(torch.ones(3, 4)) ** 2).sum().backward()
        opt.step()
    assert is_schedule_free(opt) and in_train_mode(opt)
    training = [p.detach().clone() for p in net.parameters()]
    with inference_weights(opt):
        assert not in_train_mode(opt)
        averaged = [p.detach().clone() for p in net.parameters()]
        with inference_weights(opt):  # nested: already there, nothing changes
            assert same(averaged, [p.detach() for p in net.parameters()])
    assert in_train_mode(opt) and same(training, [p.detach() for p in net.parameters()])
    assert not same(training, averaged)
    opt.eval()
    assert same(averaged, [p.detach() for p in net.parameters()])  # what the library's eval() gives


def test_other_optimizers_are_left_alone():
    net = torch.nn.Linear(4, 2)
    opt = OptimizerConfig("adamw", 1e-3).build(list(net.parameters()))
    before = [p.detach().clone() for p in net.parameters()]
    assert not is_schedule_free(opt) and in_train_mode(opt)
    with inference_weights(opt):
        assert same(before, [p.detach() for p in net.parameters()])


@pytest.mark.parametrize("name", each())
def test_samples_and_saves_use_the_averaged_weights_and_never_change_training(tmp_path, name):
    plain = make_toy()
    train(NodeRunner(tmp_path / "plain"), plain, name)
    runner = NodeRunner(tmp_path / "hooked")
    spy = Spy()
    recorder = Recorder(spy)
    hooks = [spy, hook(runner, SamplePreviews, "samples", {"samplers": [recorder]}, every=3),
             hook(runner, PeriodicSave, "saves", {"savers": [recorder]}, every=4, at_end=True)]
    trained = train(runner, make_toy(), name, hooks)
    assert [(step, mode) for step, mode, _ in spy.calls] == [(3, False), (4, False), (6, False), (8, False),
                                                              (None, False)]
    # the trained model holds the averaged weights (the optimizer stays in eval mode), as the final save saw
    assert not in_train_mode(spy.optimizer) and same(spy.calls[-1][2], weights(trained))
    assert same(weights(trained), weights(plain))  # the hooks left the trajectory exactly as it was


@pytest.mark.parametrize("name", each())
def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path, name):
    straight = make_toy()
    r1 = NodeRunner(tmp_path / "run1")
    spy1 = Spy()
    train(r1, straight, name, [spy1, hook(r1, Backups, "backups", every=6, keep=5)])
    backup = tmp_path / "run1" / "backups" / "step-000006"
    assert json.loads((backup / "meta.json").read_text())["step"] == 6
    state = torch.load(backup / "state.pt", weights_only=True)
    file_weights = load_file(str(backup / "trainable.safetensors"))
    train_weights = state["schedule_free"]["train_weights"]
    assert set(file_weights) == set(train_weights)
    assert not all(torch.equal(file_weights[k], train_weights[k]) for k in file_weights), \
        "the weights file holds the averaged weights, the state the training ones"

    torch.manual_seed(1234)
    resumed = make_toy()
    r2 = NodeRunner(tmp_path / "run2")
    r2.resume = backup
    spy2 = Spy()
    train(r2, resumed, name, [spy2, hook(r2, Backups, "backups", every=6, keep=5)])
    assert [e["step"] for e in r2.events("progress")] == [7, 8]
    assert same(weights(straight), weights(resumed))
    spy1.optimizer.train()
    spy2.optimizer.train()
    assert same(weights(straight), weights(resumed))


@pytest.mark.parametrize("name", each()[:1])
def test_a_stop_and_resume_equals_an_uninterrupted_run(tmp_path, name):
    class StopAt(TrainHook):
        def on_step_end(self, run, loss):
            if run.state.step == 3:
                run.ctx.cancel.request("test stop")

    straight = make_toy()
    train(NodeRunner(tmp_path / "straight"), straight, name, max_steps=6)
    r1 = NodeRunner(tmp_path / "run1")
    train(r1, make_toy(), name, [StopAt()], max_steps=6)
    (backup,) = list_backups(tmp_path / "run1")
    r2 = NodeRunner(tmp_path / "run2")
    r2.resume = backup
    resumed = make_toy()
    train(r2, resumed, name, max_steps=6)
    assert same(weights(straight), weights(resumed))


@pytest.mark.parametrize("name", each()[:1])
def test_a_schedule_other_than_constant_is_warned_about(tmp_path, name):
    runner = NodeRunner(tmp_path / "cos")
    train(runner, make_toy(), name, schedule=LRScheduleConfig("cosine"), max_steps=2)
    [warning] = [e for e in runner.events("log") if "schedule-free" in e["message"]]
    assert warning["level"] == "warning" and "cosine LR schedule" in warning["message"]
    quiet = NodeRunner(tmp_path / "constant")
    train(quiet, make_toy(), name, schedule=LRScheduleConfig("constant"), max_steps=2)
    assert not [e for e in quiet.events("log") if "schedule-free" in e["message"]]
    other = NodeRunner(tmp_path / "adamw")
    train(other, make_toy(), "adamw", schedule=LRScheduleConfig("cosine"), max_steps=2)
    assert not [e for e in other.events("log") if "schedule-free" in e["message"]]


def test_the_config_says_whether_it_is_schedule_free():
    assert OptimizerConfig("schedule_free_adamw", 1e-3).schedule_free
    assert OptimizerConfig("prodigy_plus_schedule_free", 1.0).schedule_free
    assert not OptimizerConfig("prodigy_plus_schedule_free", 1.0, extra={"use_schedulefree": False}).schedule_free
    assert not OptimizerConfig("adamw", 1e-3).schedule_free
