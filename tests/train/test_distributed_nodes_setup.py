"""What a rank on another machine does with the run folder and the backup rank 0 sent it (no processes:
torch.distributed's broadcast is stood in for)."""

from __future__ import annotations

from pathlib import Path

from runtime import cli


def test_another_rank_makes_rank_0s_run_folder_on_its_own_machine(tmp_path, monkeypatch):
    import torch.distributed as dist

    folder = tmp_path / "elsewhere" / "runs" / "quickstart-1"  # rank 0's folder, absent on this machine
    monkeypatch.setattr(dist, "broadcast_object_list", lambda box, src: box.__setitem__(0, (str(folder), None)))
    ws, resume, lock = cli._shared_workspace(None, None, None, 1, 2, [])
    assert (ws, resume) == (folder, None) and not folder.exists()
    with lock:  # the other ranks lock nothing
        assert cli._local_problem(ws, resume, 1) is None
    assert folder.is_dir(), "rank-N.log would have no folder to go to"
    assert cli._local_problem(tmp_path / "rank0-only", None, 0) is None
    assert not (tmp_path / "rank0-only").exists()


def test_a_backup_that_is_not_on_another_ranks_machine_is_said_in_one_line(tmp_path, monkeypatch):
    import torch.distributed as dist

    folder, backup = tmp_path / "run", tmp_path / "run" / "backups" / "step-10"
    monkeypatch.setattr(dist, "broadcast_object_list",
                        lambda box, src: box.__setitem__(0, (str(folder), str(backup))))
    ws, resume, _ = cli._shared_workspace(None, None, None, 1, 2, [])
    assert resume == backup
    problem = cli._local_problem(ws, resume, 1)
    assert problem and "\n" not in problem and str(backup) in problem and "not on this machine" in problem
    backup.mkdir(parents=True)
    assert cli._local_problem(ws, Path(backup), 1) is None
