"""The training lifecycle on a toy model: hooks and schedules, commands, backups and resume, stop,
NaN, full disk, EMA, validation loss, TensorBoard."""

from __future__ import annotations

import errno
import json

import pytest
import torch

from nodes.train.artifacts import ModelSampler, ModelSaver, step_path
from nodes.train.ema import Ema
from nodes.train.hook_nodes import Backups, PeriodicSave, SamplePreviews, ValidationLoss
from nodes.train.hooks import TrainHook
from nodes.train.loop import TrainLoop
from nodes.train.lr_schedule import LRScheduleConfig
from nodes.train.objective import DiffusionObjective
from nodes.train.schedule import Schedule
from nodes.train.tensorboard import TensorBoard
from runtime.backups import list_backups
from tests.train.helpers import ListBatches, NodeRunner, make_toy, train_inputs


def weights(model):
    return [p.detach().clone() for p in model.net.parameters()]


class FakeSaver(ModelSaver):
    format = "fake"

    def __init__(self, fail_with: int | None = None):
        self.calls = []
        self.fail_with = fail_with

    def save(self, ctx, model, step=None):
        if self.fail_with is not None:
            raise OSError(self.fail_with, "No space left on device", str(ctx.workspace / "x.safetensors"))
        self.calls.append((step, weights(model)))
        return []


class FakeSampler(ModelSampler):
    def __init__(self):
        self.calls = []

    def sample(self, ctx, model, step=None, tag=""):
        self.calls.append((step, tag, weights(model)))
        torch.randn(3)  # consumes the global RNG: the hook must not change the training trajectory
        return []


def hook(runner, cls, node_id, inputs=None, **params):
    return runner.run(cls, node_id, inputs or {}, **params)["hook"]


def train(runner, model, hooks=(), batches=None, lr=1e-2, **params):
    params = {"max_steps": 8, "device": "cpu", **params}
    inputs = train_inputs(model, batches or ListBatches(n=6, batch_size=2), lr=lr,
                          schedule=LRScheduleConfig("cosine"), hooks=hooks)
    return runner.run(TrainLoop, "train", inputs, **params)


# -- schedules ------------------------------------------------------------------

def test_schedules_by_steps_epochs_and_minutes():
    s = Schedule(every=2, unit="steps", skip_first=2)
    assert [n for n in range(1, 9) if s.due_after_step(n)] == [4, 6, 8]
    e = Schedule(every=1, unit="epochs", skip_first=1)
    assert [n for n in range(1, 4) if e.due_after_epoch(n)] == [2, 3] and not e.due_after_step(2)
    m = Schedule(every=10, unit="minutes", skip_first=1)
    m.start(now=0.0)
    assert not m.due_after_step(1, now=30.0)
    assert not m.due_after_step(2, now=599.0)
    assert m.due_after_step(3, now=601.0) and not m.due_after_step(4, now=700.0)
    assert m.due_after_step(5, now=1202.0)
    assert not Schedule(every=0).due_after_step(10)


def test_step_path_marks_periodic_files():
    from pathlib import Path

    assert step_path(Path("lora/x.safetensors"), 12).name == "x-step000012.safetensors"
    assert step_path(Path("out/model"), 3).name == "model-step000003"
    assert step_path(Path("a.diffusers.safetensors"), 1).name == "a-step000001.diffusers.safetensors"
    assert step_path(Path("x.safetensors"), None).name == "x.safetensors"


# -- hooks and commands ------------------------------------------------------------

def test_sample_and_save_hooks_fire_on_schedule_and_on_command(runner):
    sampler, saver = FakeSampler(), FakeSaver()
    samples = hook(runner, SamplePreviews, "samples", {"samplers": [sampler]}, every=3)
    saves = hook(runner, PeriodicSave, "saves", {"savers": [saver]}, every=4, at_end=True)
    runner.inbox.put({"command": "sample"})
    runner.inbox.put({"command": "save"})
    train(runner, make_toy(), [samples, saves], max_steps=8)
    assert [c[0] for c in sampler.calls] == [1, 3, 6], "command at step 1, then every 3 steps"
    assert [c[0] for c in saver.calls] == [1, 4, 8, None], "command, every 4, and the final save"


def test_hooks_and_commands_act_only_at_accumulation_boundaries(runner):
    """With 3 batches per update, side effects see finished updates only: no half-accumulated gradients."""
    class CommandMidway(ListBatches):
        def epoch(self, epoch, start=0):
            for i, batch in enumerate(super().epoch(epoch, start)):
                if epoch == 0 and i == 1:  # the second batch of the first update
                    runner.inbox.put({"command": "sample"})
                yield batch

    class GradChecker(FakeSampler):
        def sample(self, ctx, model, step=None, tag=""):
            assert all(p.grad is None for p in model.net.parameters()), f"gradients pending at step {step}"
            return super().sample(ctx, model, step, tag)

    sampler = GradChecker()
    samples = hook(runner, SamplePreviews, "samples", {"samplers": [sampler]}, every=2)
    train(runner, make_toy(), [samples], batches=CommandMidway(n=12, batch_size=2), max_steps=4,
          gradient_accumulation=3)
    assert [c[0] for c in sampler.calls] == [1, 2, 4], "the command waits for the end of update 1"


def test_hooks_do_not_change_the_training_trajectory(tmp_path):
    a, b = make_toy(), make_toy()
    ra, rb = NodeRunner(tmp_path / "a"), NodeRunner(tmp_path / "b")
    sampler = FakeSampler()
    train(ra, a, [hook(ra, SamplePreviews, "s", {"samplers": [sampler]}, every=2)])
    train(rb, b)
    assert len(sampler.calls) == 4
    for pa, pb in zip(a.net.parameters(), b.net.parameters()):
        assert torch.equal(pa, pb)


def test_ema_weights_are_sampled_saved_and_kept_at_the_end(runner):
    toy = make_toy()
    sampler, saver = FakeSampler(), FakeSaver()
    ema = hook(runner, Ema, "ema", decay=0.5)
    hooks = [hook(runner, SamplePreviews, "s", {"samplers": [sampler]}, every=4),
             hook(runner, PeriodicSave, "p", {"savers": [saver]}, every=4), ema]  # EMA runs first anyway
    train(runner, toy, hooks, max_steps=4, lr=0.05)
    (live_step, live_tag, live_w), (ema_step, ema_tag, ema_w) = sampler.calls
    assert (live_step, live_tag, ema_step, ema_tag) == (4, "", 4, "ema")
    assert not all(torch.equal(x, y) for x, y in zip(live_w, ema_w)), "EMA weights differ from live ones"
    assert all(torch.equal(x, y) for x, y in zip(saver.calls[0][1], ema_w)), "saves use the EMA weights"
    shadow = [s.to(torch.float32) for s in ema.shadow]
    assert all(torch.equal(p, s) for p, s in zip(weights(toy), shadow)), "the trained model ends with EMA weights"


# -- backups and resume ------------------------------------------------------------

def test_n_steps_straight_equal_half_then_resume(tmp_path):
    """8 steps in one go == 4 steps, a backup, a fresh process state, resume, 4 more (EMA included)."""
    straight = make_toy()
    r1 = NodeRunner(tmp_path / "run1")
    train(r1, straight, [hook(r1, Backups, "backups", every=4, keep=5), hook(r1, Ema, "ema", decay=0.9)],
          max_steps=8)
    backup = tmp_path / "run1" / "backups" / "step-000004"
    assert json.loads((backup / "meta.json").read_text())["step"] == 4

    torch.manual_seed(1234)  # the resumed run must not depend on the RNG state it starts in
    resumed = make_toy()
    r2 = NodeRunner(tmp_path / "run2")
    r2.resume = backup
    ema2 = hook(r2, Ema, "ema", decay=0.9)
    train(r2, resumed, [hook(r2, Backups, "backups", every=4, keep=5), ema2], max_steps=8)
    assert [e["step"] for e in r2.events("progress")] == [5, 6, 7, 8]
    for a, b in zip(straight.net.parameters(), resumed.net.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert any("resumed from" in e["message"] for e in r2.events("log"))


def test_stop_writes_a_backup_that_resumes_to_the_same_weights(tmp_path):
    class StopAt(TrainHook):
        def on_step_end(self, run, loss):
            if run.state.step == 3:
                run.ctx.cancel.request("test stop")

    straight = make_toy()
    train(NodeRunner(tmp_path / "straight"), straight, max_steps=6)
    r1 = NodeRunner(tmp_path / "run1")
    train(r1, make_toy(), [StopAt()], max_steps=6)
    (backup,) = list_backups(tmp_path / "run1")
    meta = json.loads((backup / "meta.json").read_text())
    assert (meta["step"], meta["reason"]) == (3, "stopped")
    assert any(e["format"] == "backup" for e in r1.events("saved"))
    r2 = NodeRunner(tmp_path / "run2")
    r2.resume = backup
    resumed = make_toy()
    train(r2, resumed, max_steps=6)
    for a, b in zip(straight.net.parameters(), resumed.net.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_backups_keep_the_newest_and_leave_no_partial_folders(runner):
    train(runner, make_toy(), [hook(runner, Backups, "b", every=1, keep=2)], max_steps=5)
    names = sorted(p.name for p in (runner.workspace / "backups").iterdir())
    assert names == ["step-000004", "step-000005"]
    data = torch.load(runner.workspace / "backups" / "step-000005" / "state.pt", weights_only=True)
    assert data["counters"]["step"] == 5 and "optimizer" in data and "generator" in data


def test_resume_refuses_a_backup_of_another_model(tmp_path):
    r1 = NodeRunner(tmp_path / "a")
    train(r1, make_toy(), [hook(r1, Backups, "b", every=2)], max_steps=2)
    other = make_toy()
    other.net = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 1))
    r2 = NodeRunner(tmp_path / "b")
    r2.resume = tmp_path / "a" / "backups" / "step-000002"
    with pytest.raises(ValueError, match="does not fit this graph's trainable weights"):
        train(r2, other, max_steps=4)


# -- faults --------------------------------------------------------------------------

def test_nan_loss_stops_with_the_step_and_keeps_earlier_backups(runner):
    class NanAt3(DiffusionObjective):
        calls = 0

        def loss(self, model, batch, generator):
            loss, metrics = super().loss(model, batch, generator)
            NanAt3.calls += 1
            return (loss * float("nan") if NanAt3.calls == 3 else loss), metrics

    inputs = train_inputs(make_toy(), ListBatches(), objective=NanAt3(),
                          hooks=[hook(runner, Backups, "b", every=1, keep=10)])
    with pytest.raises(FloatingPointError, match="loss is nan at step 3"):
        runner.run(TrainLoop, "train", inputs, max_steps=8, device="cpu")
    assert [p.name for p in list_backups(runner.workspace)] == ["step-000001", "step-000002"]


def test_a_full_disk_fails_the_save_clearly_and_training_goes_on(runner, monkeypatch):
    saver = FakeSaver(fail_with=errno.ENOSPC)
    saves = hook(runner, PeriodicSave, "p", {"savers": [saver]}, every=2)
    real_save = torch.save

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    train(runner, make_toy(), [saves, hook(runner, Backups, "b", every=3)], max_steps=4)
    monkeypatch.setattr(torch, "save", real_save)
    errors = [e["message"] for e in runner.events("log") if e["level"] == "error"]
    assert any("saving fake at step 2 failed: the disk is full" in m for m in errors)
    assert any("backup at step 3 failed: the disk is full" in m for m in errors)
    assert runner.events("progress")[-1]["step"] == 4, "training went on"
    backups = runner.workspace / "backups"
    assert not backups.exists() or not any(backups.iterdir()), "no half-written backup is left"


# -- validation and TensorBoard ---------------------------------------------------------

def test_validation_loss_is_deterministic_and_reaches_tensorboard(runner):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    val = hook(runner, ValidationLoss, "val", {"batches": ListBatches(n=4, seed=7), "objective": None}, every=2)
    tb = hook(runner, TensorBoard, "tb")
    train(runner, make_toy(), [val, tb], max_steps=4, lr=0.0)
    values = [e["validation_loss"] for e in runner.events("log") if "validation_loss" in e]
    assert len(values) == 2 and values[0] == values[1], "lr 0: the same weights give the same validation loss"
    acc = EventAccumulator(str(runner.workspace / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"train/loss", "train/lr", "train/grad_norm", "train/validation_loss"} <= set(tags)
    assert [s.step for s in acc.Scalars("train/loss")] == [1, 2, 3, 4]
