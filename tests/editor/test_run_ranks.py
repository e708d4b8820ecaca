"""The run panel on several processes: its GPUs control, torchrun's command line, rank 0's stream.

The fast tests stub the process; the real 2-process CPU runs (gloo, through torchrun) are slow.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

from runtime.paths import GRAPHS_DIR

from editor.run_process import CPU_PROCESSES, DeviceCount, RunProcess, run_command

QUICKSTART = GRAPHS_DIR / "quickstart.yaml"
DATASET = GRAPHS_DIR.parent / "assets" / "demo_dataset"


def counted(gpus: int) -> DeviceCount:
    """A device count that is already known (no child process)."""
    d = DeviceCount()
    d.value = gpus
    return d


@pytest.fixture
def panel(qtbot):
    from editor.run_panel import RunPanel

    p = RunPanel()
    p.devices = counted(0)  # never the shared count: these tests must not wait for torch
    p._set_devices(0)
    qtbot.addWidget(p)
    p.resize(1100, 300)
    return p


class Starts:
    """Replaces RunProcess.start: records its arguments, runs nothing."""

    def __init__(self):
        self.calls: list[tuple[tuple, dict]] = []

    def __call__(self, process, *args, **kwargs):
        self.calls.append((args, kwargs))


@pytest.fixture
def starts(monkeypatch) -> Starts:
    s = Starts()
    monkeypatch.setattr(RunProcess, "start", lambda process, *a, **k: s(process, *a, **k))
    return s


# -- the command line ---------------------------------------------------------------------------

def test_two_processes_start_through_torchrun_with_the_graph_args(tmp_path):
    graph, runs = tmp_path / "g.yaml", tmp_path / "runs"
    args = run_command(graph, runs, ["steps=2"], resume="last", processes=2)
    assert args == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                    "--local-ranks-filter", "0", "--shutdown-timeout", "5",
                    "-m", "runtime", "run", str(graph), "--events", "jsonl", "--runs-dir", str(runs),
                    "--set", "steps=2", "--resume", "last"]
    # the installed torchrun takes these flags, and runs the same `runtime run` arguments on each rank
    from torch.distributed.run import get_args_parser

    parsed = get_args_parser().parse_args(args[2:])
    assert (parsed.standalone, parsed.nproc_per_node, parsed.local_ranks_filter, parsed.module) == (
        True, "2", "0", True)
    assert [parsed.training_script, *parsed.training_script_args] == args[-11:]
    assert args[-11:] == run_command(graph, runs, ["steps=2"], resume="last")[1:]


def test_one_process_is_the_plain_runtime_command(tmp_path):
    graph, runs = tmp_path / "g.yaml", tmp_path / "runs"
    expected = ["-m", "runtime", "run", str(graph), "--events", "jsonl", "--runs-dir", str(runs), "--set", "a=1"]
    assert run_command(graph, runs, ["a=1"], processes=1) == expected
    assert run_command(graph, runs, ["a=1"]) == expected


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_the_hard_kill_finds_torchruns_ranks_by_their_parent():
    """torchrun starts each rank in a session of its own: killing torchrun alone would leave them running."""
    import subprocess

    from editor.run_process import child_pids

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    try:
        assert child.pid in child_pids(os.getpid())
        assert child_pids(child.pid) == []
    finally:
        child.kill()
        child.wait()


#: stands in for a torchrun that does not end: ignores SIGTERM, as does its rank (in a session of its own)
STUCK_LAUNCHER = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
rank = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
print("rank", rank.pid, flush=True)
time.sleep(60)
"""


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] == b"Z"  # a zombie: dead, not yet reaped
    except OSError:
        return True


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_stop_kills_the_ranks_of_a_torchrun_that_does_not_end(qtbot, monkeypatch, tmp_path):
    import editor.run_process as rp

    monkeypatch.setattr(rp, "run_command", lambda *args: ["-c", STUCK_LAUNCHER])
    monkeypatch.setattr(rp, "SHUTDOWN_S", 0)
    process = RunProcess()
    lines = []
    process.output.connect(lines.append)
    process.start(tmp_path / "g.yaml", tmp_path / "runs", processes=2)
    qtbot.waitUntil(lambda: any(line.startswith("rank ") for line in lines), timeout=30000)
    rank = int(next(line for line in lines if line.startswith("rank ")).split()[1])
    try:
        with qtbot.waitSignal(process.finished, timeout=30000):
            process.stop(grace_ms=0)  # the stop command, then SIGTERM, then the kill
        qtbot.waitUntil(lambda: gone(rank), timeout=10000)
    finally:
        if not gone(rank):
            os.kill(rank, signal.SIGKILL)


# -- the GPUs control ---------------------------------------------------------------------------

def test_gpus_control_allows_one_process_per_gpu_or_a_few_on_the_cpu(panel, no_exceptions):
    box = panel.processes
    assert box.value() == 1 and box.isEnabled()
    panel._set_devices(0)
    assert box.maximum() == CPU_PROCESSES
    assert "gloo" in box.toolTip() and "CPU" in box.toolTip() and "slow" in box.toolTip().lower()
    panel._set_devices(2)
    box.setValue(5)
    assert box.maximum() == 2 and box.value() == 2 and box.prefix().startswith("GPUs")
    assert "2 on this machine" in box.toolTip()


def test_the_gpus_are_counted_once_in_a_child_process(qtbot):
    import torch

    d = DeviceCount()
    seen = []
    d.counted.connect(seen.append)
    d.start()
    first = d.thread
    d.start()  # a second panel, or a second show: no second count
    assert d.thread is first
    qtbot.waitUntil(lambda: d.value is not None, timeout=120000)  # told in the main thread
    assert d.value == torch.cuda.device_count() and seen == [d.value]
    assert d.limit() == (d.value or CPU_PROCESSES)
    d.start()
    assert d.thread is first and d.wait() == d.value and seen == [d.value]


def test_start_on_two_processes_shows_rank_0_of_2(panel, starts, tmp_path, no_exceptions):
    graph, runs = tmp_path / "g.yaml", tmp_path / "runs"
    panel.processes.setValue(2)
    panel.start(graph, runs)
    assert starts.calls == [((graph, runs), {"resume": None, "processes": 2})]
    assert panel.ranks_label.isVisibleTo(panel) and panel.ranks_label.text().endswith("rank 0 of 2")
    assert "rank-N.log" in panel.ranks_label.toolTip()
    assert panel.log.toPlainText().startswith("$ torchrun --standalone --nproc-per-node 2 --local-ranks-filter 0")
    assert not panel.processes.isEnabled()  # not while it runs
    panel.process.processes = 2  # what the real start records
    panel._on_finished(0)
    assert panel.processes.isEnabled() and panel.ranks_label.isVisibleTo(panel)  # still about that run
    panel.processes.setValue(1)
    panel.start(graph, runs, resume="last")
    assert starts.calls[-1] == ((graph, runs), {"resume": "last"})  # exactly as before: no torchrun
    assert not panel.ranks_label.isVisibleTo(panel)
    assert panel.log.toPlainText().startswith(f"$ nodetrainer run {graph} --events jsonl --runs-dir {runs}")


def test_more_processes_than_gpus_runs_on_the_gpus_there_are(panel, starts, tmp_path):
    panel.processes.setValue(4)  # asked for before the GPUs were counted
    panel.devices = counted(2)
    panel.start(tmp_path / "g.yaml", tmp_path / "runs")
    assert starts.calls[0][1]["processes"] == 2 and panel.processes.value() == 2
    assert "only 2 GPU(s) here" in panel.log.toPlainText()


def resume_backup(window, ranks: int | None) -> None:
    from runtime.workspace import slug

    name = window.doc.graph.name
    folder = window.runs_dir / f"{slug(name)}-20260101-120000" / "backups" / "step-000003"
    folder.mkdir(parents=True)
    meta = {"step": 3, "time": 1.0e9, "graph": name, **({"ranks": ranks} if ranks else {})}
    (folder / "meta.json").write_text(json.dumps(meta))


def test_resume_last_runs_on_the_number_of_processes_that_wrote_the_backup(window, starts, no_exceptions):
    assert window.open_file(QUICKSTART)
    window.run_panel.devices = counted(0)
    resume_backup(window, 2)
    assert window.resume_last()
    assert starts.calls[-1][1] == {"resume": "last", "processes": 2}
    assert window.run_panel.processes.value() == 2


def test_resume_last_of_a_one_process_backup_goes_back_to_one_process(window, starts, no_exceptions):
    assert window.open_file(QUICKSTART)
    window.run_panel.devices = counted(0)
    window.run_panel.processes.setValue(3)
    resume_backup(window, None)  # older backups carry no ranks: one process wrote them
    assert window.resume_last()
    assert starts.calls[-1][1] == {"resume": "last"} and window.run_panel.processes.value() == 1


# -- real runs: torchrun, 2 processes on the CPU (gloo) ------------------------------------------------

def wait_for_run(qtbot, panel, timeout: int) -> str:
    with qtbot.waitSignal(panel.finished, timeout=timeout) as blocker:
        pass
    return blocker.args[0]


@pytest.mark.slow
def test_rank_1_console_is_not_shown(qtbot, panel, tmp_path, no_exceptions):
    """A graph file that is not there: both ranks say so, the panel shows rank 0's line alone."""
    panel.processes.setValue(2)
    panel.start(tmp_path / "missing.yaml", tmp_path / "runs")
    assert panel.process.proc.program() == sys.executable
    assert panel.process.proc.arguments() == run_command(tmp_path / "missing.yaml", tmp_path / "runs", processes=2)
    assert wait_for_run(qtbot, panel, 120000) == "failed"
    log = panel.log.toPlainText()
    assert log.count("cannot read ") == 1, log  # each rank prints it; rank 1's console goes nowhere


def open_quickstart(window, tmp_path: Path, steps: int) -> None:
    path = tmp_path / "quickstart.yaml"
    shutil.copyfile(QUICKSTART, path)
    assert window.open_file(path)
    window.doc.set_input_default("dataset", str(DATASET))
    window.doc.set_input_default("steps", steps)
    if "sample" in window.doc.graph.nodes and "steps" in window.doc.spec("sample").params:
        window.doc.set_param("sample", "steps", 1)


def run_folder(window) -> Path:
    folders = [p for p in (window.runs_dir).iterdir() if p.is_dir()]
    assert len(folders) == 1, folders
    return folders[0]


@pytest.mark.slow
def test_two_process_run_from_the_panel_shows_rank_0(window, qtbot, tmp_path, no_exceptions):
    open_quickstart(window, tmp_path, steps=2)
    panel = window.run_panel
    panel.devices = counted(0)
    panel.processes.setValue(2)
    events = []
    panel.event_received.connect(events.append)
    assert window.run_graph()
    assert panel.ranks_label.text().endswith("rank 0 of 2")
    assert wait_for_run(qtbot, panel, 300000) == "ok"
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished" and kinds.count("run_started") == 1
    steps = [e["step"] for e in events if e["event"] == "progress" and e.get("node") == "train"]
    assert steps == [1, 2]  # one stream: rank 0's
    assert panel.state.losses and panel.state.step == 2 and "step 2/2" in panel.state.progress_text()
    assert "on 2 ranks" in panel.log.toPlainText()
    ws = run_folder(window)
    assert panel.state.workspace == str(ws)
    assert [json.loads(line)["event"] for line in (ws / "events.jsonl").read_text().splitlines()] == kinds
    assert (ws / "rank-1.log").read_text().rstrip().endswith("run ok")
    assert {v.view.run_state for v in window.canvas.views.values()} == {"done"}


@pytest.mark.slow
def test_stop_from_the_panel_stops_both_ranks(window, qtbot, tmp_path, no_exceptions):
    open_quickstart(window, tmp_path, steps=100000)
    panel = window.run_panel
    panel.devices = counted(0)
    panel.processes.setValue(2)
    assert window.run_graph()
    qtbot.waitUntil(lambda: (panel.state.step or 0) >= 1 and panel.state.progress_node == "train", timeout=300000)
    panel.stop_button.click()
    assert wait_for_run(qtbot, panel, 120000) == "cancelled"
    assert panel.progress.format() == "stopped"
    ws = run_folder(window)
    finished = [json.loads(line) for line in (ws / "events.jsonl").read_text().splitlines()][-1]
    assert finished["event"] == "run_finished" and finished["reason"] == "stop command"
    assert [p.name for p in (ws / "backups").iterdir()] == [f"step-{panel.state.step:06d}"]  # rank 0's backup
    rank1 = (ws / "rank-1.log").read_text()
    assert f"stopped at step {panel.state.step} " in rank1 and rank1.rstrip().endswith("run cancelled")
    assert "the run was stopped" in panel.log.toPlainText()
    assert panel.run_button.isEnabled() and window.update_resume() is None and panel.resume_button.isEnabled()
