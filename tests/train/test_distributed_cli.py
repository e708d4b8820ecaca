"""``torchrun --nproc-per-node 2 -m runtime run GRAPH``: one run folder for both ranks, rank 0's events."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_ranks_share_one_run_folder_and_rank0_reports(tmp_path):
    """Both ranks train in the same run folder (rank 0 picked it); events.jsonl and the run record come
    from rank 0 alone (one run_started, the training log says 2 ranks), rank 1 logs to rank-1.log."""
    runs = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "runtime", "run",
           str(ROOT / "graphs" / "quickstart.yaml"), "--set", "steps=2", "--runs-dir", str(runs)]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    folders = [p for p in runs.iterdir() if p.is_dir()]
    assert len(folders) == 1, folders
    ws = folders[0]
    events = [json.loads(line) for line in (ws / "events.jsonl").read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds.count("run_started") == 1 and kinds.count("run_finished") == 1
    assert [e["status"] for e in events if e["event"] == "run_finished"] == ["ok"]
    assert any("on 2 ranks" in e.get("message", "") for e in events if e["event"] == "log")
    assert [e["step"] for e in events if e["event"] == "progress" and e["node"] == "train"] == [1, 2]
    rank1 = (ws / "rank-1.log").read_text()
    assert "on 2 ranks" in rank1 and rank1.rstrip().endswith("run ok")
    assert not (ws / "rank-0.log").exists()
    shutil.rmtree(runs)


def test_a_graph_every_rank_finds_invalid_is_said_once(tmp_path):
    """Every rank validates the graph; the same problems on both are printed once (by rank 0), not once
    per rank."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "runtime", "run",
           str(ROOT / "graphs" / "quickstart.yaml"), "--set", "steps=2", "--set", "train.distributed=fsdp",
           "--runs-dir", str(tmp_path / "runs")]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    said = done.stdout + done.stderr
    assert said.count("cannot run, 1 problem(s)") == 1, said[-3000:]
    assert said.count("cannot run under distributed: fsdp") == 1
    assert "rank 1:" not in said
