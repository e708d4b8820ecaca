"""The run panel without a training run: fed events and a stubbed process (fast, offscreen).

The log follows its newest line, command buttons match the graph, the panel belongs to one graph,
the gallery labels samples, and Resume last finds the graph's backups.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PySide6 import QtCore, QtGui, QtWidgets

from runtime.paths import GRAPHS_DIR
from runtime.validate import validate
from runtime.workspace import slug

from editor.run_process import RunProcess, run_command
from editor.run_state import command_nodes

QUICKSTART = GRAPHS_DIR / "quickstart.yaml"
MANIFEST = GRAPHS_DIR / "example-manifest.yaml"


def settle(qtbot, ms: int = 30) -> None:
    """Let queued layout work happen (the scroll bars of a scroll area are shown a turn later)."""
    qtbot.wait(ms)


def last_line_visible(log: QtWidgets.QPlainTextEdit) -> bool:
    """Whether the log's last line lies wholly inside its viewport."""
    block = log.document().lastBlock()
    rect = log.blockBoundingGeometry(block).translated(log.contentOffset())
    return rect.top() >= 0 and rect.bottom() <= log.viewport().height() + 0.5


@pytest.fixture
def panel(qtbot):
    from editor.run_panel import RunPanel

    p = RunPanel()
    qtbot.addWidget(p)
    p.resize(1100, 300)
    p.show()
    qtbot.waitExposed(p)
    return p


def node_events(n: int, long_at: int | None = None):
    yield {"event": "run_started", "workspace": "/tmp/runs/quickstart-20260101-120000",
           "nodes": [f"n{i}" for i in range(n)], "t": 0}
    for i in range(n):
        yield {"event": "node_started", "node": f"n{i}", "type": "x.y", "t": 0}
        if i == long_at:  # like the cache's report: longer than the log is wide
            yield {"event": "log", "node": f"n{i}", "level": "info", "t": 0,
                   "message": "cache ready for epoch 0 (variation 0): " + "0 of 8 item(s) found, " * 12}
        yield {"event": "node_finished", "node": f"n{i}", "status": "ok", "seconds": 0.01, "t": 0}


@pytest.mark.parametrize("long_at", [None, 6])
def test_log_follows_the_newest_line_through_a_long_line(qtbot, long_at, no_exceptions):
    """A long line (the command line with its paths, a cache report) brings the horizontal scroll bar
    a moment later; that used to leave the view stuck above the end (seen at most panel heights)."""
    from editor.run_panel import RunPanel

    stuck = []
    for height in range(240, 304, 8):
        panel = RunPanel()
        qtbot.addWidget(panel)
        panel.resize(1100, height)
        panel.show()
        qtbot.waitExposed(panel)
        log, bar = panel.log, panel.log.verticalScrollBar()
        for event in node_events(15, long_at):
            panel._on_event(event)
            settle(qtbot, 2)
        settle(qtbot)
        assert bar.maximum() > 0
        assert log.horizontalScrollBar().isVisible() or long_at is None
        if not (bar.value() == bar.maximum() and last_line_visible(log)):
            stuck.append((height, bar.value(), bar.maximum()))
        assert log.document().lastBlock().text().endswith("[n14] ok in 0.01 s")
        panel.close()
    assert not stuck, f"the log stopped following (panel height, scroll value, maximum): {stuck}"


def test_log_stays_where_the_user_scrolled_and_follows_again_at_the_end(panel, qtbot):
    log = panel.log
    bar = log.verticalScrollBar()
    for event in node_events(20):
        panel._on_event(event)
    settle(qtbot)
    assert bar.value() == bar.maximum() > 0
    bar.triggerAction(QtWidgets.QAbstractSlider.SliderAction.SliderPageStepSub)  # as PageUp or a click does
    up = bar.value()
    assert up < bar.maximum() and not log.following
    for i in range(10):
        panel._append(f"more {i}")
        settle(qtbot, 5)
    settle(qtbot)
    assert bar.value() == up  # left where the user put it
    bar.triggerAction(QtWidgets.QAbstractSlider.SliderAction.SliderToMaximum)
    assert log.following
    for i in range(5):
        panel._append(f"again {i}")
    settle(qtbot)
    assert bar.value() == bar.maximum() and last_line_visible(log)


def test_final_status_and_warnings_are_visible_without_scrolling(panel, qtbot):
    for event in node_events(25):
        panel._on_event(event)
    panel._on_event({"event": "log", "node": "train", "level": "warning", "t": 0,
                     "message": "command 'sample' ignored: no hook connected to train.loop handles it"})
    panel._on_output("  - warning: node 'sample': param 'steps' is large")
    panel._on_event({"event": "run_finished", "status": "ok", "seconds": 2.5, "t": 0})
    panel._on_finished(0)
    settle(qtbot)
    assert panel.warnings_label.isVisible()
    assert "2 warning(s)" in panel.warnings_label.text()
    assert "command 'sample' ignored" in panel.warnings_label.text()
    assert "param 'steps' is large" in panel.warnings_label.toolTip()
    assert panel.label.text().startswith("finished in 2.5 s") and "2 warning(s)" in panel.label.text()
    assert panel.log.document().lastBlock().text() == "process exited with code 0"
    assert last_line_visible(panel.log)


def test_warnings_kept_are_bounded(panel):
    from editor.run_state import MAX_WARNINGS

    for i in range(MAX_WARNINGS + 50):
        panel.state.feed({"event": "log", "level": "warning", "message": "x" * 5000, "t": 0})
    assert panel.state.warning_count == MAX_WARNINGS + 50
    assert len(panel.state.warnings) == MAX_WARNINGS and max(map(len, panel.state.warnings)) <= 500


def write_png(path: Path, color) -> str:
    image = QtGui.QImage(32, 32, QtGui.QImage.Format.Format_RGB32)
    image.fill(QtGui.QColor(color))
    assert image.save(str(path))
    return str(path)


def sample_event(tmp_path: Path, step: int, prompt: str, seed: int) -> dict:
    png = write_png(tmp_path / f"step{step:06d}-{seed}.png", "red")
    return {"event": "sample", "node": "previews", "paths": [png], "prompt": prompt, "seed": seed,
            "seeds": [seed], "steps": 8, "cfg": 5.0, "scheduler": "ddim", "step": step, "tag": "", "t": 0}


def test_gallery_labels_each_image_with_step_and_prompt_newest_last(panel, tmp_path):
    panel._on_event(sample_event(tmp_path, 10, "a red circle on a blue background", 42))
    panel._on_event(sample_event(tmp_path, 10, "a green triangle", 43))
    panel._on_event(sample_event(tmp_path, 20, "a red circle on a blue background", 42))
    gallery = panel.gallery
    texts = [gallery.item(i).text() for i in range(gallery.count())]
    assert texts == ["step 10\na red circle on a blue background", "step 10\na green triangle",
                     "step 20\na red circle on a blue background"]
    tip = gallery.item(2).toolTip()
    assert "prompt: a red circle on a blue background" in tip and "seed 42" in tip and "training step 20" in tip
    assert gallery.item(2).data(QtCore.Qt.ItemDataRole.UserRole).endswith("step000020-42.png")


def test_gallery_keeps_the_newest_when_full(panel, tmp_path, monkeypatch):
    monkeypatch.setattr(panel.gallery, "MAX_ITEMS", 2)
    for step in (1, 2, 3):
        panel._on_event(sample_event(tmp_path, step, "p", step))
    assert [panel.gallery.item(i).text().split("\n")[0] for i in range(2)] == ["step 2", "step 3"]


# -- with the window: commands, per-graph panel, Resume last (the process is not started) ---------

class Started:
    """Replaces RunProcess.start: records what would run."""

    def __init__(self):
        self.calls: list[dict] = []
        self.running = False

    def __call__(self, process, graph_file, runs_dir, sets=(), cwd=None, resume=None):
        self.running = True
        self.calls.append({"graph": Path(graph_file), "runs_dir": Path(runs_dir), "resume": resume,
                           "argv": run_command(graph_file, runs_dir, list(sets), resume)})


@pytest.fixture
def started(monkeypatch) -> Started:
    s = Started()
    monkeypatch.setattr(RunProcess, "start", lambda process, *args, **kwargs: s(process, *args, **kwargs))
    monkeypatch.setattr(RunProcess, "running", property(lambda self: s.running))
    return s


def finish(window, started: Started, code: int) -> None:
    started.running = False
    window.run_panel._on_finished(code)


def graph_copy(source: Path, path: Path) -> Path:
    """A preset copied elsewhere, its demo dataset named by absolute path."""
    dataset = str(GRAPHS_DIR.parent / "assets" / "demo_dataset")
    path.write_text(source.read_text().replace("../assets/demo_dataset", dataset))
    return path


def quickstart_copy(tmp_path: Path) -> Path:
    return graph_copy(QUICKSTART, tmp_path / "quickstart.yaml")


def open_without_previews(window, tmp_path: Path) -> None:
    """The quickstart without its commands-only previews hook: only the loop's own commands act."""
    assert window.open_file(quickstart_copy(tmp_path))
    window.doc.remove(["previews", "preview_settings"])


def add_sample_hook(doc, node_id: str, connected: bool) -> None:
    """A sample hook with its own sampler settings; ``connected``: its hook goes to the training loop."""
    if "preview_settings" not in doc.graph.nodes:
        doc.add_node("sd.sample", node_id="preview_settings")
    doc.add_node("train.sample_hook", node_id=node_id)
    doc.connect("preview_settings", "sampler", node_id, "samplers")
    if connected:
        doc.connect(node_id, "hook", "train", "hooks")


needs_quickstart = pytest.mark.skipif(not QUICKSTART.exists(), reason="graphs/quickstart.yaml is not there")


@needs_quickstart
def test_command_nodes_come_from_the_run_plan(window, tmp_path):
    assert window.open_file(quickstart_copy(tmp_path))
    doc = window.doc
    plan = validate(doc.graph, window.registry, for_run=True).order
    assert command_nodes(plan, doc.spec) == {"sample": ["previews"], "save": [], "backup": ["train"]}
    doc.remove(["previews", "preview_settings"])
    plan = validate(doc.graph, window.registry, for_run=True).order
    assert command_nodes(plan, doc.spec) == {"sample": [], "save": [], "backup": ["train"]}
    add_sample_hook(doc, "orphan", connected=False)  # its output goes nowhere: it does not run
    check = validate(doc.graph, window.registry, for_run=True)
    assert check.ok, [str(p) for p in check.errors]
    assert "orphan" not in check.order
    assert command_nodes(check.order, doc.spec)["sample"] == []
    add_sample_hook(doc, "previews", connected=True)
    check = validate(doc.graph, window.registry, for_run=True)
    assert check.ok, [str(p) for p in check.errors]
    assert command_nodes(check.order, doc.spec) == {"sample": ["previews"], "save": [], "backup": ["train"]}


@needs_quickstart
def test_command_buttons_match_the_running_graph(window, tmp_path, started, no_exceptions):
    open_without_previews(window, tmp_path)
    panel = window.run_panel
    assert not panel.sample_button.isEnabled() and "no run is going" in panel.sample_button.toolTip()
    assert window.run_graph()
    assert panel.stop_button.isEnabled() and panel.backup_button.isEnabled()
    assert not panel.sample_button.isEnabled() and not panel.save_button.isEnabled()
    tip = panel.sample_button.toolTip()
    assert "no node in this run acts on 'sample'" in tip and "train.sample_hook" in tip
    assert "train.save_hook" in panel.save_button.toolTip()
    assert "(train)" in panel.backup_button.toolTip()
    finish(window, started, 130)
    add_sample_hook(window.doc, "orphan", connected=False)
    assert window.run_graph()
    assert not panel.sample_button.isEnabled()  # the hook is in the graph, but not in the run
    finish(window, started, 130)
    add_sample_hook(window.doc, "previews", connected=True)
    assert window.run_graph()
    assert panel.sample_button.isEnabled() and "previews" in panel.sample_button.toolTip()
    assert not panel.save_button.isEnabled()
    finish(window, started, 0)
    assert not any(b.isEnabled() for b in panel.command_buttons.values())


def test_opening_another_graph_clears_the_idle_panel(window, tmp_path, started):
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    for p in (first, second):
        graph_copy(MANIFEST, p)
    assert window.open_file(first)
    panel = window.run_panel
    assert "first.yaml" in panel.title.text()
    assert window.run_graph()
    panel._on_event({"event": "run_started", "nodes": ["scan", "manifest"], "workspace": str(tmp_path), "t": 0})
    panel._on_event({"event": "progress", "node": "scan", "step": 1, "total": 2, "loss": 0.5, "t": 0})
    panel._on_event(sample_event(tmp_path, 1, "a cat", 1))
    finish(window, started, 0)
    assert panel.log.toPlainText() and panel.gallery.count() == 1 and panel.state.losses
    assert window.open_file(second)
    assert panel.log.toPlainText() == "" and panel.gallery.count() == 0
    assert panel.chart.raw == [] and panel.state.losses == []
    assert "second.yaml" in panel.title.text() and panel.label.text() == "no run yet"
    assert panel.progress.format() == "idle"


def test_run_states_of_a_graph_no_longer_open_stay_off_the_canvas(window, tmp_path, started):
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"  # the same node ids
    for p in (first, second):
        graph_copy(MANIFEST, p)
    assert window.open_file(first)
    assert window.run_graph()
    assert window.open_file(second)
    window.run_panel.node_states_changed.emit({"scan": "done", "manifest": "running"})
    window.run_panel.node_failed.emit("scan", "boom")
    assert {v.view.run_state for v in window.canvas.views.values()} == {None}
    assert not any("boom" in msg for v in window.canvas.views.values() for _, msg in v.view.problems)
    finish(window, started, 0)
    assert "no longer open" in window.run_panel.title.text()


def write_backup_meta(runs_dir: Path, graph_name: str, step: int, stamp: str = "20260101-120000") -> Path:
    folder = runs_dir / f"{slug(graph_name)}-{stamp}" / "backups" / f"step-{step:06d}"
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"step": step, "time": 1.0e9 + step, "graph": graph_name}))
    return folder


def test_resume_last_runs_with_resume_last_in_the_same_runs_dir(window, tmp_path, started, no_exceptions):
    path = graph_copy(MANIFEST, tmp_path / "m.yaml")
    assert window.open_file(path)
    panel = window.run_panel
    assert not panel.resume_button.isEnabled() and "no backup" in panel.resume_button.toolTip()
    assert not window.resume_last() and "no backup of graph" in window.statusBar().currentMessage()
    assert not started.calls
    name = window.doc.graph.name  # the run folder comes from the graph's name:, not the file name
    backup = write_backup_meta(window.runs_dir, name, 7)
    write_backup_meta(tmp_path / "elsewhere", name, 9)
    window.update_resume()
    assert panel.resume_button.isEnabled() and str(backup) in panel.resume_button.toolTip()
    panel.resume_button.click()
    (call,) = started.calls
    assert call["resume"] == "last" and call["runs_dir"] == window.runs_dir
    assert call["argv"][-2:] == ["--resume", "last"] and "--runs-dir" in call["argv"]
    assert "--resume last" in panel.log.toPlainText() and panel.label.text().startswith("resuming")
    assert not panel.resume_button.isEnabled()  # while it runs
    finish(window, started, 0)
    assert panel.resume_button.isEnabled()


def test_resume_looks_only_at_this_graphs_runs(window, tmp_path, started):
    path = graph_copy(MANIFEST, tmp_path / "m.yaml")
    assert window.open_file(path)
    write_backup_meta(window.runs_dir, "another graph", 3)
    window.update_resume()
    assert not window.run_panel.resume_button.isEnabled()
    window.doc.set_meta(name="another graph")  # renamed: now those are its runs
    assert window.run_panel.resume_button.isEnabled()
