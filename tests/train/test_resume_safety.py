"""--resume finds only this graph's backups and refuses damaged ones in one line."""

from __future__ import annotations

import argparse
import json
import shutil

import pytest
import torch

from nodes.train.hook_nodes import Backups
from nodes.train.loop import TrainLoop
from runtime.backups import DamagedBackup, check_backup, list_backups, resolve_resume
from tests.train.helpers import ListBatches, NodeRunner, make_toy, train_inputs


@pytest.fixture(scope="module")
def real_backup(tmp_path_factory):
    """One backup (step 2) of a toy run, to copy into fabricated run folders."""
    runner = NodeRunner(tmp_path_factory.mktemp("source"))
    hook = runner.run(Backups, "backups", every=2)["hook"]
    runner.run(TrainLoop, "train", train_inputs(make_toy(), ListBatches(), hooks=[hook]), max_steps=2, device="cpu")
    (backup,) = list_backups(runner.workspace)
    return backup


def place(real_backup, runs, folder, graph, time, step=2):
    """A copy of the real backup as ``runs/folder/backups/step-N`` claiming ``graph`` and ``time``."""
    dest = runs / folder / "backups" / f"step-{step:06d}"
    shutil.copytree(real_backup, dest)
    meta = json.loads((dest / "meta.json").read_text())
    meta.update(graph=graph, time=time, step=step)
    (dest / "meta.json").write_text(json.dumps(meta))
    return dest


def test_resume_last_takes_only_run_folders_of_exactly_this_graph(real_backup, tmp_path):
    runs = tmp_path / "runs"
    mine = place(real_backup, runs, "advmini-20260101-100000", "advmini", 100.0)
    mine_again = place(real_backup, runs, "advmini-20260101-100000-2", "advmini", 200.0)
    other = place(real_backup, runs, "advmini-bk-20260101-120000", "advmini-bk", 300.0)
    place(real_backup, runs, "advmini-20260101-130000", "AdvMini", 400.0)  # same slug, another graph
    place(real_backup, runs, "advmini-old", "advmini", 500.0)  # not a run folder name
    assert resolve_resume("last", runs, "advmini", None) == mine_again
    assert resolve_resume("last", runs, "advmini-bk", None) == other
    shutil.rmtree(mine_again.parent.parent)
    assert resolve_resume("last", runs, "advmini", None) == mine
    shutil.rmtree(runs / "advmini-20260101-100000")
    with pytest.raises(FileNotFoundError, match="no backup of graph 'advmini'"):
        resolve_resume("last", runs, "advmini", None)


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# damage -> (what it does to the backup folder, what the one line says)
DAMAGES = {
    "meta not json": (lambda b: (b / "meta.json").write_text('{"step": 2,'), "meta.json is not valid JSON"),
    "meta a list": (lambda b: (b / "meta.json").write_text("[2]"), "meta.json holds a list, not a mapping"),
    "meta without step": (lambda b: (b / "meta.json").write_text('{"time": 1.0, "graph": "g"}'),
                          "meta.json lacks valid 'step'"),
    "meta huge": (lambda b: (b / "meta.json").write_bytes(b" " * (2 << 20)), "meta.json is not a backup's meta file "
                  "(it is larger than 1024 KiB)"),
    "meta missing": (lambda b: (b / "meta.json").unlink(), "is not a complete backup (no meta.json)"),
    "state truncated": (lambda b: truncate(b / "state.pt"), "state.pt is truncated or not a torch file"),
    "state not torch": (lambda b: (b / "state.pt").write_text("hello"), "state.pt is truncated or not a torch file"),
    "state needs unpickling": (lambda b: torch.save({"counters": {}, "x": argparse.Namespace(a=1)}, b / "state.pt"),
                               "state.pt holds objects other than tensors"),
    "state missing": (lambda b: (b / "state.pt").unlink(), "state.pt is missing"),
    "weights truncated": (lambda b: truncate(b / "trainable.safetensors"),
                          "trainable.safetensors is truncated or not a safetensors file"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_backup_is_named_with_what_is_damaged(real_backup, tmp_path, damage):
    damage_it, says = DAMAGES[damage]
    backup = place(real_backup, tmp_path / "runs", "g-20260101-100000", "g", 1.0)
    damage_it(backup)
    with pytest.raises(DamagedBackup) as info:
        resolve_resume(str(backup), tmp_path / "runs", "g", None)
    message = str(info.value)
    assert says in message and str(backup) in message and "\n" not in message
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ValueError)
    if damage != "meta missing":
        runner = NodeRunner(tmp_path / "resumed")
        runner.resume = backup
        with pytest.raises(ValueError, match="is damaged"):  # the loop checks it too (a run without the CLI)
            runner.run(TrainLoop, "train", train_inputs(make_toy(), ListBatches()), max_steps=4, device="cpu")


def test_resume_last_skips_damaged_backups_with_a_warning(real_backup, tmp_path):
    runs = tmp_path / "runs"
    good = place(real_backup, runs, "g-20260101-100000", "g", 1.0, step=2)
    bad = place(real_backup, runs, "g-20260101-100000", "g", 2.0, step=4)
    truncate(bad / "state.pt")
    unreadable = place(real_backup, runs, "g-20260101-100000", "g", 3.0, step=6)
    (unreadable / "meta.json").write_text("{")
    warnings = []
    assert resolve_resume("last", runs, "g", None, warn=warnings.append) == good
    assert len(warnings) == 2 and all("skipping a damaged backup" in w for w in warnings)
    assert any(str(bad) in w and "state.pt is truncated" in w for w in warnings)
    assert any(str(unreadable) in w and "meta.json is not valid JSON" in w for w in warnings)
    # the run folder given by name, and the --workspace form, skip the same way
    assert resolve_resume(str(runs / "g-20260101-100000"), runs, "g", None, warn=warnings.append) == good
    assert resolve_resume("last", runs, "g", runs / "g-20260101-100000", warn=warnings.append) == good
    truncate(good / "trainable.safetensors")
    with pytest.raises(DamagedBackup, match=r"no intact backup to resume from; backup .*step-000004 is damaged"):
        resolve_resume("last", runs, "g", None, warn=warnings.append)


def test_check_backup_passes_a_real_backup(real_backup):
    meta = check_backup(real_backup)
    assert meta["step"] == 2 and meta["graph"] == "test graph"


def test_a_backup_of_another_number_of_ranks_is_refused_in_one_line(real_backup, tmp_path):
    """The data position in a backup counts one rank's share of the batches: a backup written by 2 ranks
    resumed by one process (or the other way) is refused, naming both counts and the torchrun flag."""
    assert json.loads((real_backup / "meta.json").read_text())["ranks"] == 1
    backup = place(real_backup, tmp_path / "runs", "toy-20260101-100000", "toy", 100.0)
    meta = json.loads((backup / "meta.json").read_text())
    (backup / "meta.json").write_text(json.dumps({**meta, "ranks": 2}))
    runner = NodeRunner(tmp_path / "run")
    runner.resume = backup
    with pytest.raises(ValueError, match=r"written by a run on 2 rank\(s\) and this run has 1: .*"
                                         r"resume it on 2 \(torchrun --nproc-per-node 2\)"):
        runner.run(TrainLoop, "train", train_inputs(make_toy(), ListBatches()), max_steps=4, device="cpu")


def sharded_copy(real_backup, tmp_path):
    """The real backup made into what an FSDP run writes: a sharded/ folder instead of the weights file."""
    backup = place(real_backup, tmp_path / "runs", "toy-20260101-100000", "toy", 100.0)
    (backup / "trainable.safetensors").unlink()
    (backup / "sharded").mkdir()
    (backup / "sharded" / ".metadata").write_bytes(b"written by torch.distributed.checkpoint")
    meta = json.loads((backup / "meta.json").read_text())
    (backup / "meta.json").write_text(json.dumps({**meta, "sharded": True}))
    return backup


def test_a_sharded_backup_passes_the_check_without_a_weights_file_but_not_without_its_metadata(real_backup,
                                                                                              tmp_path):
    backup = sharded_copy(real_backup, tmp_path)
    assert check_backup(backup)["sharded"] is True
    assert resolve_resume(str(backup), tmp_path / "runs", "toy", None) == backup
    (backup / "sharded" / ".metadata").unlink()  # a kill while the ranks wrote their shards
    with pytest.raises(DamagedBackup, match=r"is damaged: sharded/\.metadata is missing"):
        check_backup(backup)


def test_a_sharded_backup_resumed_without_fsdp_is_refused_in_one_line(real_backup, tmp_path):
    """Its weights are shards that only the FSDP wrappers read: resumed on one process, one line says how."""
    backup = sharded_copy(real_backup, tmp_path)
    runner = NodeRunner(tmp_path / "run")
    runner.resume = backup
    with pytest.raises(ValueError, match=r"holds sharded weights \(sharded/, written under FSDP\): resume it with "
                                         r"train.loop's distributed: fsdp on 1 rank\(s\)") as info:
        runner.run(TrainLoop, "train", train_inputs(make_toy(), ListBatches()), max_steps=4, device="cpu")
    assert "\n" not in str(info.value)


def test_a_one_process_backup_keeps_no_per_rank_rng_states(real_backup):
    """Per-rank RNG states are for DDP runs; a one-process backup is as before (rank 0's states only)."""
    meta = json.loads((real_backup / "meta.json").read_text())
    assert meta["rank_rngs"] is False and meta["sharded"] is False
    data = torch.load(real_backup / "state.pt", weights_only=True)
    assert "rank_rngs" not in data and data["generator"] is not None and data["optimizer"] is not None
