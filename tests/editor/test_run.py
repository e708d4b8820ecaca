"""Runs from the editor: a child `nodetrainer run --events jsonl`, node states, progress, failures."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from runtime.paths import GRAPHS_DIR

from editor.run_state import RunState, format_duration, log_line

MANIFEST = GRAPHS_DIR / "example-manifest.yaml"


def test_run_state_follows_events():
    s = RunState(smoothing=0.5)
    s.feed({"event": "run_started", "nodes": ["a", "b"], "workspace": "/w"})
    assert s.status == "running" and s.node_states == {"a": "pending", "b": "pending"}
    s.feed({"event": "node_started", "node": "a"})
    assert s.node_states["a"] == "running"
    changed = s.feed({"event": "progress", "node": "a", "step": 1, "total": 4, "loss": 2.0, "eta": 75.0,
                      "rate": 2.5, "lr": 1e-4})
    assert changed == {"progress", "loss"}
    s.feed({"event": "progress", "node": "a", "step": 2, "total": 4, "loss": 1.0})
    assert s.losses == [(1, 2.0), (2, 1.0)]
    # debiased exponential average: (0.25*2 + 0.5*1) / (1 - 0.25)
    assert s.smoothed[0] == (1, 2.0) and s.smoothed[1][1] == pytest.approx(1.0 / 0.75)
    s.feed({"event": "progress", "node": "a", "step": 3, "total": 4, "loss": 0.5, "smooth_loss": 0.9})
    assert s.smoothed[-1] == (3, 0.9)  # a smoothed loss sent by the training loop wins
    s.feed({"event": "sample", "node": "a", "paths": ["/x.png"], "prompt": "a cat", "step": 3})
    assert s.samples[0].prompt == "a cat"
    s.feed({"event": "node_finished", "node": "a", "status": "ok"})
    s.feed({"event": "node_started", "node": "b"})
    s.feed({"event": "error", "node": "b", "type": "t.b", "message": "node 'b' (t.b) failed: ValueError: bad",
            "traceback": "Traceback..."})
    s.feed({"event": "run_finished", "status": "failed", "seconds": 1.5})
    assert s.node_states == {"a": "done", "b": "failed"}
    assert s.status == "failed" and s.error["node"] == "b"
    assert "step 3/4" in s.progress_text()


def test_process_exit_without_events_is_reported():
    s = RunState()
    s.finish_process(2)
    assert s.status == "invalid"
    s = RunState()
    s.feed({"event": "run_started", "nodes": ["a", "b"]})
    s.feed({"event": "node_started", "node": "a"})
    s.finish_process(-1)  # killed
    assert s.status == "failed" and s.node_states == {"a": "cancelled"}
    assert format_duration(3725) == "1:02:05" and format_duration(65) == "1:05"
    assert "ERROR" in log_line({"event": "error", "node": "x", "message": "boom", "t": 0})


def wait_for_run(qtbot, window, timeout=60000) -> str:
    with qtbot.waitSignal(window.run_panel.finished, timeout=timeout) as blocker:
        pass
    return blocker.args[0]


def copy_manifest(tmp_path: Path, dataset: Path | None = None) -> Path:
    path = tmp_path / "manifest.yaml"
    text = MANIFEST.read_text()
    if dataset is not None:
        text = text.replace("../assets/demo_dataset", str(dataset))
    else:
        text = text.replace("../assets/demo_dataset", str(GRAPHS_DIR.parent / "assets" / "demo_dataset"))
    path.write_text(text)
    return path


@pytest.mark.slow
def test_run_from_the_editor_to_completion(window, qtbot, tmp_path):
    window.open_file(copy_manifest(tmp_path))
    events = []
    window.run_panel.event_received.connect(lambda e: events.append(e))
    assert window.run_graph()
    assert {n.view.run_state for n in window.canvas.views.values()} == {"pending"}
    assert not window.run_panel.run_button.isEnabled() and window.run_panel.stop_button.isEnabled()
    assert wait_for_run(qtbot, window) == "ok"
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert {"node_started", "node_finished", "progress", "saved"} <= set(kinds)
    assert {n: v.view.run_state for n, v in window.canvas.views.items()} == {"scan": "done", "manifest": "done"}
    saved = [e["path"] for e in events if e["event"] == "saved"]
    assert Path(saved[0]).is_file() and Path(saved[0]).is_relative_to(tmp_path / "runs")
    assert window.run_panel.progress.value() == window.run_panel.progress.maximum()
    assert "run finished: ok" in window.run_panel.log.toPlainText()
    assert window.run_panel.run_button.isEnabled()


@pytest.mark.slow
def test_failed_run_marks_the_failing_node(window, qtbot, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    window.open_file(copy_manifest(tmp_path, empty))
    assert window.run_graph()
    assert wait_for_run(qtbot, window) == "failed"
    scan = window.canvas.views["scan"].view
    assert scan.run_state == "failed"
    assert any("no files" in msg for _, msg in scan.problems)  # its error is shown on the node
    assert window.canvas.selected_node_ids() == ["scan"]
    assert "no files" in window.run_panel.label.text()
    assert "Traceback" in window.run_panel.log.toPlainText()


@pytest.mark.slow
def test_unsaved_changes_run_from_a_snapshot_beside_the_file(window, qtbot, tmp_path):
    path = copy_manifest(tmp_path)
    window.open_file(path)
    window.doc.set_param("manifest", "filename", "edited.json")
    assert window.doc.modified
    events = []
    window.run_panel.event_received.connect(events.append)
    assert window.run_graph()
    snapshots = list(tmp_path.glob(".manifest-*.unsaved-run"))
    assert len(snapshots) == 1
    assert wait_for_run(qtbot, window) == "ok"
    assert not snapshots[0].exists()  # removed when the run ends
    assert path.read_text() == copy_manifest(tmp_path).read_text()  # the file itself was not saved
    saved = [e["path"] for e in events if e["event"] == "saved"]
    assert saved and saved[0].endswith("edited.json")


def test_invalid_graph_does_not_start(window):
    window.canvas.add_node("test.lora")
    assert not window.run_graph()
    assert not window.run_panel.running
    assert "cannot run" in window.statusBar().currentMessage()
    assert any(p.node == "lora" for p in window.problems.problems)


QUICKSTART = GRAPHS_DIR / "quickstart.yaml"
needs_quickstart = pytest.mark.skipif(not QUICKSTART.exists(), reason="graphs/quickstart.yaml is not there")


def open_quickstart(window, tmp_path: Path, steps: int) -> None:
    """The quickstart preset, edited in the editor: absolute dataset, fewer steps, a quick sampler."""
    path = tmp_path / "quickstart.yaml"
    shutil.copyfile(QUICKSTART, path)
    assert window.open_file(path)
    doc = window.doc
    doc.set_input_default("dataset", str(GRAPHS_DIR.parent / "assets" / "demo_dataset"))
    doc.set_input_default("steps", steps)
    if "sample" in doc.graph.nodes and "steps" in doc.spec("sample").params:
        doc.set_param("sample", "steps", 2)


@pytest.mark.slow
@needs_quickstart
def test_quickstart_runs_from_the_editor_to_completion(window, qtbot, tmp_path):
    open_quickstart(window, tmp_path, steps=3)
    events = []
    window.run_panel.event_received.connect(events.append)
    assert window.run_graph()
    assert wait_for_run(qtbot, window, timeout=600000) == "ok"
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    losses = [e for e in events if e["event"] == "progress" and e.get("node") == "train"]
    assert [e["step"] for e in losses][-1] == 3 and all("loss" in e for e in losses)
    state = window.run_panel.state
    assert len(state.losses) == 3 and len(state.smoothed) == 3  # the loss chart's data
    assert window.run_panel.chart.raw == state.losses
    samples = [p for e in events if e["event"] == "sample" for p in e["paths"]]
    assert samples and all(Path(p).is_file() for p in samples)
    assert window.run_panel.gallery.count() == len(samples)  # shown live in the gallery
    assert {e["format"] for e in events if e["event"] == "saved"}  # the LoRA files
    assert {v.view.run_state for v in window.canvas.views.values()} == {"done"}
    assert window.run_panel.progress.value() == window.run_panel.progress.maximum()


@pytest.mark.slow
@needs_quickstart
def test_commands_and_stop_while_training_then_resume_last(window, qtbot, tmp_path):
    open_quickstart(window, tmp_path, steps=100000)
    panel = window.run_panel
    assert not panel.resume_button.isEnabled()  # no backup of this graph yet
    assert window.run_graph()
    qtbot.waitUntil(lambda: panel.state.progress_node == "train", timeout=600000)
    # the quickstart has a commands-only previews hook and no save hook: Sample now and Backup now are offered
    assert panel.backup_button.isEnabled() and panel.sample_button.isEnabled()
    assert not panel.save_button.isEnabled()
    assert "no node in this run acts on 'save'" in panel.save_button.toolTip()
    panel.sample_button.click()
    qtbot.waitUntil(lambda: panel.gallery.count() >= 1, timeout=120000)  # the commanded preview arrived
    assert "ignored" not in panel.log.toPlainText()
    panel.backup_button.click()
    qtbot.waitUntil(lambda: "command received: backup" in panel.log.toPlainText(), timeout=60000)
    panel.stop_button.click()
    assert wait_for_run(qtbot, window, timeout=120000) == "cancelled"
    # the loop ends its step and returns; what comes after it never runs
    assert window.canvas.views["train"].view.run_state in ("done", "cancelled")
    assert window.canvas.views["save"].view.run_state is None
    assert panel.progress.format() == "stopped"
    assert panel.run_button.isEnabled() and not panel.stop_button.isEnabled()
    stopped_at = panel.state.step
    # Resume last continues that run from its backup, in the same run folder
    workspace = panel.state.workspace
    assert panel.resume_button.isEnabled() and workspace in panel.resume_button.toolTip()
    window.doc.set_input_default("steps", stopped_at + 2)
    events = []
    panel.event_received.connect(events.append)
    panel.resume_button.click()
    assert wait_for_run(qtbot, window, timeout=600000) == "ok"
    assert "resuming from " + workspace in panel.log.toPlainText()
    steps = [e["step"] for e in events if e["event"] == "progress" and e.get("node") == "train"]
    assert steps and steps[0] > stopped_at - 1 and steps[-1] == stopped_at + 2
    assert panel.state.workspace == workspace
