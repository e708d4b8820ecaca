"""Nothing of the user's is lost when a save fails: any writer's error (safetensors, torch, PIL, a saver's
own) is reported in one line and training goes on with the earlier files intact; a stop whose backup
cannot be written, or a final save that fails, fails the run. Injected failures, and a real full disk
(a tiny tmpfs, where this process may mount one)."""

from __future__ import annotations

import errno
import json
import subprocess

import pytest
import torch

from nodes.train.artifacts import ModelSampler, ModelSaver, step_path
from nodes.train.hook_nodes import Backups, PeriodicSave, SamplePreviews
from nodes.train.hooks import TrainHook
from nodes.train.loop import TrainLoop
from runtime.backups import check_backup, list_backups
from runtime.fileio import atomic_path, atomic_write_text
from tests.train.helpers import ListBatches, NodeRunner, make_toy, train_inputs


class FileSaver(ModelSaver):
    """Writes the weights as safetensors and a JSON summary, like a LoRA saver and its sidecar."""

    format = "files"

    def __init__(self, tensor_bytes: int = 0):
        self.info_extra: dict = {}
        self.refuse: str | None = None
        self.tensor_bytes = tensor_bytes

    def save(self, ctx, model, step=None):
        from safetensors.torch import save_file

        if self.refuse:
            raise ValueError(self.refuse)
        tensors = {n: p.detach().cpu().contiguous() for n, p in model.named_trainable_parameters()}
        if self.tensor_bytes:
            tensors["pad"] = torch.zeros(self.tensor_bytes // 4)
        weights = step_path(ctx.workspace / "lora.safetensors", step)
        with atomic_path(weights) as tmp:
            save_file(tensors, str(tmp))
        info = atomic_write_text(step_path(ctx.workspace / "info.json", step),
                                 json.dumps({"step": step, **self.info_extra}))
        return [weights, info]


class PngSampler(ModelSampler):
    def sample(self, ctx, model, step=None, tag=""):
        from PIL import Image

        path = ctx.workspace / "samples" / f"{step:06d}.png"
        with atomic_path(path) as tmp:
            Image.new("RGB", (8, 8), (step or 0, 0, 0)).save(tmp, format="PNG")
        return [path]


def files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class BreakAt(TrainHook):
    """At step ``at`` (before any other hook acts), snapshot the run folder and break one writer."""

    priority = 0

    def __init__(self, at, breaker):
        self.at, self.breaker, self.snapshot = at, breaker, None

    def on_step_end(self, run, loss):
        if run.state.step == self.at:
            self.snapshot = files(run.ctx.workspace)
            self.breaker()


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def safetensors_full(*args, **kwargs):
    from safetensors import SafetensorError

    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


def torch_short_write(*args, **kwargs):
    raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")


def hooks_of(runner, saver, every=2):
    def hook(cls, node_id, inputs=None, **params):
        return runner.run(cls, node_id, inputs or {}, **params)["hook"]

    return [hook(Backups, "backups", every=every, keep=10),
            hook(PeriodicSave, "saves", {"savers": [saver]}, every=every),
            hook(SamplePreviews, "samples", {"samplers": [PngSampler()]}, every=every)]


# writer -> (how to break it, what the error line says, which outputs of step 4 are missing)
WRITERS = {
    "safetensors": (lambda mp, saver: mp.setattr("safetensors.torch.save_file", safetensors_full),
                    "the disk is full", {"backup", "lora", "info"}),
    "torch": (lambda mp, saver: mp.setattr(torch, "save", torch_short_write),
              "torch could not write the whole file, is the disk full?", {"backup"}),
    "pil": (lambda mp, saver: mp.setattr("PIL.Image.Image.save", no_space), "the disk is full", {"png"}),
    "json": (lambda mp, saver: saver.info_extra.update(bad=object()),
             "TypeError: Object of type object is not JSON serializable", {"info"}),
    "saver": (lambda mp, saver: setattr(saver, "refuse", "the model has no adapters to save"),
              "ValueError: the model has no adapters to save", {"lora", "info"}),
}
OUTPUTS = {"backup": "backups/step-000004/meta.json", "lora": "lora-step000004.safetensors",
           "info": "info-step000004.json", "png": "samples/000004.png"}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_a_failing_writer_is_reported_and_training_goes_on(runner, monkeypatch, writer):
    breaker, why, missing = WRITERS[writer]
    saver = FileSaver()
    brk = BreakAt(3, lambda: breaker(monkeypatch, saver))
    out = runner.run(TrainLoop, "train", train_inputs(make_toy(), ListBatches(),
                                                      hooks=[*hooks_of(runner, saver), brk]),
                     max_steps=6, device="cpu")
    monkeypatch.undo()
    assert out["trained"] is not None
    assert [e["step"] for e in runner.events("progress")][-1] == 6, "training went on to the end"
    errors = [e["message"] for e in runner.events("log") if e["level"] == "error"]
    at4 = [m for m in errors if "at step 4 failed" in m]
    assert at4 and all(why in m and "\n" not in m and "training goes on" in m for m in at4), errors
    after = files(runner.workspace)
    for name, data in brk.snapshot.items():
        if not name.startswith("backups/"):  # backups rotate; the ones there are checked below
            assert after[name] == data, f"{name} was written before the failure and must be untouched"
    for output, path in OUTPUTS.items():
        assert (path in after) == (output not in missing), (output, sorted(after))
    assert not [p for p in after if "/." in f"/{p}"], "no temporary files left behind"
    for backup in list_backups(runner.workspace):
        check_backup(backup)
    assert "backups/step-000002/meta.json" in after


def test_a_stop_whose_backup_fails_fails_the_run(runner, monkeypatch):
    class StopAt(TrainHook):
        def on_step_end(self, run, loss):
            if run.state.step == 3:
                monkeypatch.setattr(torch, "save", torch_short_write)
                run.ctx.cancel.request("test stop")

    hooks = [runner.run(Backups, "backups", every=2)["hook"], StopAt()]
    with pytest.raises(RuntimeError, match=r"stopped at step 3 of 8, but its backup could not be written \(torch "
                                           r"could not write the whole file.*--resume last continues from the "
                                           r"previous backup, step 2"):
        runner.run(TrainLoop, "train", train_inputs(make_toy(), ListBatches(), hooks=hooks), max_steps=8,
                   device="cpu")
    monkeypatch.undo()
    errors = [e["message"] for e in runner.events("log") if e["level"] == "error"]
    assert any(m.startswith("backup at step 3 failed") for m in errors)
    assert [p.name for p in list_backups(runner.workspace)] == ["step-000002"]


def test_a_failed_final_save_fails_the_run_and_leaves_a_backup_that_saves_on_resume(tmp_path):
    saver = FileSaver()
    saver.refuse = "no room for it"
    r1 = NodeRunner(tmp_path / "run")
    saves = r1.run(PeriodicSave, "saves", {"savers": [saver]}, every=0, at_end=True)["hook"]
    with pytest.raises(RuntimeError, match=r"training finished, but saving files at step 4 failed \(ValueError: "
                                           r"no room for it\); the trained state is in the backup .*step-000004"):
        r1.run(TrainLoop, "train", train_inputs(make_toy(), ListBatches(), hooks=[saves]), max_steps=4, device="cpu")
    (backup,) = list_backups(tmp_path / "run")
    assert json.loads((backup / "meta.json").read_text())["reason"] == "final save failed"

    saver.refuse = None
    r2 = NodeRunner(tmp_path / "run")
    r2.resume = backup
    saves = r2.run(PeriodicSave, "saves", {"savers": [saver]}, every=0, at_end=True)["hook"]
    r2.run(TrainLoop, "train", train_inputs(make_toy(), ListBatches(), hooks=[saves]), max_steps=4, device="cpu")
    assert r2.events("progress") == [], "nothing left to train"
    assert (tmp_path / "run" / "lora.safetensors").exists() and (tmp_path / "run" / "info.json").exists()


def test_a_disabled_grad_scaler_state_resumes_into_an_enabled_one():
    """A backup of an fp32 run (CPU) resumed where fp16 runs (a GPU): the scaler starts fresh."""
    from nodes.train.state import TrainState

    a = TrainState(seed=1, scaler=torch.amp.GradScaler("cpu", enabled=False))
    b = TrainState(seed=1, scaler=torch.amp.GradScaler("cpu", enabled=True))
    b.load_state_dict(a.state_dict())
    assert b.scaler.get_scale() == 65536.0


@pytest.fixture
def tiny_disk(tmp_path):
    """A 96 KiB tmpfs; skipped where this process may not mount (not root, a container without the right)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mnt)], capture_output=True,
                           text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"cannot mount a tmpfs: {e}")
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def test_a_real_full_disk_during_training(tiny_disk):
    """Saves of ~12 KiB every step on a 96 KiB disk: it fills up, every failure is one error line, training
    goes on, and what is on the disk is whole (each backup intact, each weights file complete)."""
    from safetensors import safe_open

    runner = NodeRunner(tiny_disk / "run")
    saver = FileSaver(tensor_bytes=12 << 10)
    hooks = hooks_of(runner, saver, every=1)
    runner.run(TrainLoop, "train", train_inputs(make_toy(), ListBatches(), hooks=hooks), max_steps=12, device="cpu")
    assert [e["step"] for e in runner.events("progress")][-1] == 12
    errors = [e["message"] for e in runner.events("log") if e["level"] == "error"]
    assert errors, "the disk filled up"
    assert all("\n" not in m and "training goes on" in m for m in errors)
    assert any("the disk is full" in m for m in errors)
    for backup in list_backups(runner.workspace):
        check_backup(backup)
    for f in runner.workspace.glob("lora*.safetensors"):
        with safe_open(str(f), framework="numpy") as s:
            assert "pad" in s.keys()
    assert not list(runner.workspace.rglob(".*.tmp")), "no temporary files left behind"


def test_a_save_interrupted_by_a_stop_still_ends_in_a_backup(runner):
    """A saver that honours the stop (raises Cancelled) does not skip the stop's backup."""
    class StoppingSaver(ModelSaver):
        format = "stopping"

        def save(self, ctx, model, step=None):
            ctx.cancel.request("user stop")
            ctx.check_cancelled()

    saves = runner.run(PeriodicSave, "saves", {"savers": [StoppingSaver()]}, every=2)["hook"]
    runner.run(TrainLoop, "train", train_inputs(make_toy(), ListBatches(), hooks=[saves]), max_steps=8, device="cpu")
    assert [e["step"] for e in runner.events("progress")][-1] == 2
    (backup,) = list_backups(runner.workspace)
    assert json.loads((backup / "meta.json").read_text())["reason"] == "stopped"
    errors = [e["message"] for e in runner.events("log") if e["level"] == "error"]
    assert errors == ["saving stopping at step 2 failed: stopped before it finished (user stop)"]
