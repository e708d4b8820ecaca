"""Through the CLI: SIGINT during training writes a backup and exits 130; --resume last continues."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from runtime.backups import list_backups
from tests.conftest import ROOT, parse_events, run_cli, subprocess_env

GRAPH = """
name: toy lifecycle
nodes:
  model: {type: test.toy_model}
  data: {type: test.toy_batches, params: {n: 8, delay: %s}}
  optimizer: {type: train.optimizer, params: {lr: 0.01}}
  objective: {type: train.diffusion_objective}
  backups: {type: train.backup_hook, params: {every: 0, keep: 2}}
  train:
    type: train.loop
    in: {model: model.model, batches: data.batches, optimizer: optimizer.optimizer, objective: objective.objective,
         hooks: [backups.hook]}
    params: {max_steps: %d, device: cpu}
  summary: {type: test.model_summary, in: {model: train.trained}}
"""

pytestmark = pytest.mark.slow


def _wait_for_step(runs, step, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for log in runs.glob("*/events.jsonl"):
            if any(e.get("event") == "progress" and e["step"] >= step for e in parse_events(log.read_text())):
                return log.parent
        time.sleep(0.2)
    raise AssertionError("no training progress")


def _start_and_wait(graph, runs, step: int):
    """A run of ``graph`` under ``runs`` in the background, once it has done ``step`` steps."""
    p = subprocess.Popen([sys.executable, "-m", "runtime", "run", str(graph), "--runs-dir", str(runs)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env(), cwd=ROOT)
    return p, _wait_for_step(runs, step)


def test_sigint_backs_up_and_resume_last_finishes(write_graph, tmp_path):
    graph = write_graph(GRAPH % (0.05, 200))
    runs = tmp_path / "runs"
    p, ws = _start_and_wait(graph, runs, 3)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 130, err
    (backup,) = list_backups(ws)
    meta = json.loads((backup / "meta.json").read_text())
    assert meta["reason"] == "stopped" and 3 <= meta["step"] < 200
    assert not (ws / "summary.json").exists(), "a stopped run does not reach the nodes after training"

    r = run_cli("run", graph, "--runs-dir", runs, "--resume", "last", "--events", "jsonl", input="", timeout=600)
    assert r.returncode == 0, r.stderr
    events = parse_events(r.stdout)
    assert events[0]["event"] == "run_started" and events[0]["resume"] == str(backup)
    steps = [e["step"] for e in events if e["event"] == "progress" and e.get("node") == "train"]
    assert steps[0] == meta["step"] + 1 and steps[-1] == 200
    assert json.loads((ws / "summary.json").read_text())["step"] == 200, "the run continued in its own folder"


def test_resume_without_a_backup_is_a_clear_error(write_graph, tmp_path):
    graph = write_graph(GRAPH % (0, 2))
    r = run_cli("run", graph, "--runs-dir", tmp_path / "none", "--resume", "last")
    assert r.returncode == 2 and "no backup of graph 'toy lifecycle'" in r.stderr
    r = run_cli("run", graph, "--resume", tmp_path)
    assert r.returncode == 2 and "is not a backup folder" in r.stderr


def test_resume_last_never_takes_another_graphs_backup(write_graph, tmp_path):
    """Graph `advmini` must not resume `advmini-bk` (its run folder name starts with advmini-)."""
    runs = tmp_path / "runs"
    other = write_graph((GRAPH % (0, 2)).replace("toy lifecycle", "advmini-bk").replace("every: 0", "every: 1"),
                        "bk.yaml")
    mine = write_graph((GRAPH % (0, 2)).replace("toy lifecycle", "advmini"), "mini.yaml")
    assert run_cli("run", other, "--runs-dir", runs).returncode == 0
    (ws,) = runs.iterdir()
    before = {p.name: p.read_bytes() for p in ws.iterdir() if p.is_file()}
    r = run_cli("run", mine, "--runs-dir", runs, "--resume", "last")
    assert r.returncode == 2 and "no backup of graph 'advmini'" in r.stderr, r.stderr
    assert {p.name: p.read_bytes() for p in ws.iterdir() if p.is_file()} == before, "advmini-bk's folder untouched"

    # a damaged backup: one line naming it and the damage, no traceback, nothing run
    newest = list_backups(ws)[-1]
    data = (newest / "state.pt").read_bytes()
    (newest / "state.pt").write_bytes(data[: len(data) // 2])
    r = run_cli("run", other, "--runs-dir", runs, "--resume", newest)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert any(f"backup {newest} is damaged: state.pt is truncated or not a torch file" in line for line in lines)
    r = run_cli("run", other, "--runs-dir", runs, "--resume", "last")  # the older backup is intact
    assert r.returncode == 0, r.stderr
    assert f"skipping a damaged backup: backup {newest} is damaged" in r.stderr


def test_a_stop_whose_backup_cannot_be_written_exits_1(write_graph, tmp_path):
    graph = write_graph(GRAPH % (0.05, 200))
    runs = tmp_path / "runs"
    p, ws = _start_and_wait(graph, runs, 3)
    (ws / "backups").write_text("a file where the backups folder would go")
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 1, err
    assert "but its backup could not be written" in out + err and "there is no earlier backup" in out + err
