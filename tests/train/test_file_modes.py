"""Every file we write follows the umask like any other program (safetensors alone would write 0600)."""

from __future__ import annotations

import os
import stat
import sys

import pytest
import torch

from nodes.train.hook_nodes import Backups
from nodes.train.loop import TrainLoop
from runtime.backups import list_backups
from runtime.fileio import atomic_dir, atomic_path, atomic_write_text
from tests.train.helpers import ListBatches, NodeRunner, make_toy, train_inputs

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes")


@pytest.fixture(params=[0o022, 0o002])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def write_outputs(folder):
    """One of each kind of file the savers, samplers, backups and the run record write."""
    from PIL import Image
    from safetensors.torch import save_file

    from nodes.saving import save_tensors

    out = {"lora": save_tensors(folder / "lora.safetensors", {"a": torch.zeros(2)}, {}, torch.float16)}
    out["checkpoint"] = folder / "model.safetensors"
    with atomic_path(out["checkpoint"]) as tmp:
        save_file({"w": torch.ones(3)}, str(tmp))
    out["png"] = folder / "samples" / "000001.png"
    with atomic_path(out["png"]) as tmp:
        Image.new("RGB", (4, 4)).save(tmp, format="PNG")
    out["json"] = atomic_write_text(folder / "run.json", "{}\n")
    out["folder"] = folder / "diffusers"
    with atomic_dir(out["folder"]) as tmp:
        (tmp / "unet").mkdir()
        save_file({"w": torch.ones(3)}, str(tmp / "unet" / "model.safetensors"))
    return out


def test_written_files_and_folders_follow_the_umask(tmp_path, umask):
    file_mode, dir_mode = 0o666 & ~umask, 0o777 & ~umask
    out = write_outputs(tmp_path)
    for name in ("lora", "checkpoint", "png", "json"):
        assert mode(out[name]) == file_mode, name
    assert mode(out["folder"]) == dir_mode and mode(out["folder"] / "unet") == dir_mode
    assert mode(out["folder"] / "unet" / "model.safetensors") == file_mode

    runner = NodeRunner(tmp_path / "run")
    hook = runner.run(Backups, "backups", every=1)["hook"]
    runner.run(TrainLoop, "train", train_inputs(make_toy(), ListBatches(), hooks=[hook]), max_steps=1, device="cpu")
    (backup,) = list_backups(runner.workspace)
    assert mode(backup) == dir_mode
    assert {p.name: mode(p) for p in backup.iterdir()} == {
        "trainable.safetensors": file_mode, "state.pt": file_mode, "meta.json": file_mode}


def test_a_replaced_file_keeps_its_permissions(tmp_path, umask):
    target = atomic_write_text(tmp_path / "graph.yaml", "a: 1\n")
    os.chmod(target, 0o600)
    atomic_write_text(target, "a: 2\n")
    assert mode(target) == 0o600 and target.read_text() == "a: 2\n"
