"""File > Import OneTrainer config: a new unsaved graph, the import's warnings in the problems panel."""

from __future__ import annotations

import json

import pytest
from PySide6 import QtWidgets

from runtime.errors import WARNING
from runtime.graph import Graph
from runtime.interop.onetrainer.importer import import_onetrainer
from runtime.interop.onetrainer.report import NOTE, UNSUPPORTED, Report
from runtime.paths import GRAPHS_DIR

from editor.import_onetrainer import import_problems, locate


@pytest.fixture
def config(tmp_path):
    """A LoRA config with one unsupported key and a warmup fraction (mapped, with a note)."""
    data = tmp_path / "subject"
    data.mkdir()
    path = tmp_path / "ot-config.json"
    path.write_text(json.dumps({
        "__version": 11, "training_method": "LORA", "model_type": "STABLE_DIFFUSION_15",
        "base_model_name": str(tmp_path / "model"),
        "concepts": [{"name": "subject", "path": str(data), "text": {"enable_tag_shuffling": True}}],
        "force_circular_padding": True, "learning_rate_warmup_steps": 0.1}))
    return path


def _warnings(window):
    return [p for p in window.problems.problems if p.code == "onetrainer_import"]


def _panel_rows(window):
    panel = window.problems
    return [panel.topLevelItem(i).text(2) for i in range(panel.topLevelItemCount())]


def test_file_menu_lists_the_import_after_open_recent(window):
    file_menu = window.menuBar().actions()[0].menu()
    texts = [a.text() for a in file_menu.actions()]
    recent = texts.index("Open &Recent")
    assert texts[recent + 1] == "&Import OneTrainer config\u2026"


def test_the_menu_entry_asks_for_a_json_file_and_imports_it(window, config, monkeypatch):
    asked = []

    def choose(parent, title, start, filters):
        asked.append(filters)
        return str(config), filters.split(";;")[0]

    monkeypatch.setattr(QtWidgets.QFileDialog, "getOpenFileName", choose)
    window.act_import_onetrainer.trigger()
    assert asked and "*.json" in asked[0].split(";;")[0]
    assert set(window.doc.graph.nodes) == set(import_onetrainer(config).graph.nodes)


def test_import_opens_a_new_unsaved_graph(window, config):
    window.doc.add_node("test.lora", (0, 0), node_id="mine")
    window.doc.undo.setClean()
    before = window.doc
    assert window.import_onetrainer(config)
    expected = import_onetrainer(config, registry=window.registry)
    assert window.doc is not before
    assert window.doc.file_path is None and window.doc.graph.path is None
    assert "unsaved" in window.windowTitle()
    assert window.doc.graph.name == expected.graph.name
    assert set(window.doc.graph.nodes) == set(expected.graph.nodes)
    assert set(window.canvas.views) == set(expected.graph.nodes)
    assert window.doc.text() == expected.text(window.registry)
    assert "ot-config.json" in window.statusBar().currentMessage()


def test_unsupported_rows_and_notes_are_warnings_in_the_problems_panel(window, config):
    window.import_onetrainer(config)
    report = import_onetrainer(config).report
    warnings = _warnings(window)
    rows = report.of_kind(UNSUPPORTED) + report.of_kind(NOTE)
    assert len(warnings) == len(rows) >= 2
    assert all(p.severity == WARNING for p in warnings)
    # an unsupported key has no node: the message names the OneTrainer key and the reason
    (reason,) = [r.target for r in report.of_kind(UNSUPPORTED) if r.key == "force_circular_padding"]
    (circular,) = [p for p in warnings if "force_circular_padding" in p.message]
    assert circular.node is None
    assert circular.message == f"OneTrainer force_circular_padding: unsupported: {reason}"
    # a note on a mapped key sits at the node and param the key was mapped to
    (warmup_target,) = [r.target for r in report.rows if r.kind == "mapped" and r.key == "learning_rate_warmup_steps"]
    node, param = warmup_target.split(".")
    (warmup,) = [p for p in warnings if "learning_rate_warmup_steps" in p.message]
    assert (warmup.node, warmup.field) == (node, param)
    assert node in window.doc.graph.nodes
    badges = window.canvas.views[node].view.problems
    assert any(sev == WARNING and warmup.message in text for sev, text in badges)
    assert circular.message in _panel_rows(window)
    assert "warning" in window.problem_count.text()


def test_import_warnings_stay_through_revalidation_until_the_graph_is_saved(window, config, tmp_path, qtbot):
    window.import_onetrainer(config)
    count = len(_warnings(window))
    assert count
    schedule = next(n for n, e in window.doc.graph.nodes.items() if e.type.startswith("train.lr_schedule"))
    with qtbot.waitSignal(window.validator.validated, timeout=3000):
        window.doc.set_param(schedule, "warmup", 5.0)  # an edit: the live validation runs again
    assert len(_warnings(window)) == count
    window.validate_now()
    assert len(_warnings(window)) == count
    assert len([t for t in _panel_rows(window) if t.startswith("OneTrainer ")]) == count
    assert window._save_to(tmp_path / "imported.yaml")
    assert _warnings(window) == []
    assert not any(t.startswith("OneTrainer ") for t in _panel_rows(window))
    window.validate_now()
    assert _warnings(window) == []


@pytest.mark.parametrize("then", ["open", "new", "preset"])
def test_opening_another_graph_drops_the_import_warnings(window, config, then):
    window.import_onetrainer(config)
    assert _warnings(window)
    if then == "open":
        assert window.open_file(GRAPHS_DIR / "example-manifest.yaml")
    elif then == "new":
        window.new_graph()
    else:
        assert window.new_from_preset(GRAPHS_DIR / "example-manifest.yaml")
    assert _warnings(window) == []
    window.validate_now()
    assert _warnings(window) == []


def test_a_second_import_replaces_the_first_ones_warnings(window, config, tmp_path):
    window.import_onetrainer(config)
    other = tmp_path / "plain.json"
    data = json.loads(config.read_text())
    del data["force_circular_padding"]
    other.write_text(json.dumps(data))
    window.import_onetrainer(other)
    messages = [p.message for p in _warnings(window)]
    assert not any("force_circular_padding" in m for m in messages)
    report = import_onetrainer(other).report
    assert len(messages) == len(report.of_kind(UNSUPPORTED) + report.of_kind(NOTE))


@pytest.mark.parametrize("content", ["{not json", "[1, 2]",
                                     '{"model_type": "NO_SUCH_MODEL", "concepts": [], "samples": []}'])
def test_a_bad_file_is_one_error_line_and_nothing_changes(window, dialogs, tmp_path, content):
    window.doc.add_node("test.lora", (0, 0), node_id="mine")  # unsaved changes: no prompt for a bad file
    before, nodes, title = window.doc, set(window.doc.graph.nodes), window.windowTitle()
    window.validate_now()
    problems = list(window.problems.problems)
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(ValueError) as raised:
        import_onetrainer(bad)
    calls = len(dialogs.calls)
    assert not window.import_onetrainer(bad)
    assert dialogs.calls[calls:] == [("critical", str(raised.value))]
    assert "\n" not in str(raised.value)
    assert window.doc is before and set(window.doc.graph.nodes) == nodes
    assert window.windowTitle() == title
    assert window.problems.problems == problems


def test_a_missing_file_is_an_error_too(window, dialogs, tmp_path):
    assert not window.import_onetrainer(tmp_path / "absent.json")
    kind, text = dialogs.calls[-1]
    assert kind == "critical" and "absent.json" in text


def test_cancel_at_the_unsaved_changes_prompt_keeps_the_graph(window, dialogs, config):
    window.doc.add_node("test.lora", (0, 0), node_id="mine")
    before = window.doc
    dialogs.answer = QtWidgets.QMessageBox.StandardButton.Cancel
    assert not window.import_onetrainer(config)
    assert dialogs.calls[-1][0] == "question"
    assert window.doc is before and "mine" in window.doc.graph.nodes
    assert _warnings(window) == []


def test_locate_takes_the_first_target_that_names_a_node():
    graph = Graph()
    graph.add_node("optimizer", "train.optimizer")
    graph.add_node("base", "sd.load_model")
    report = Report()
    report.mapped("a", "gone.lr, optimizer.lr")
    report.mapped("b", "base (sd.load_model@1), sd nodes")
    report.mapped("c", "setup (sd.lora_setup@1)")
    report.unsupported("d", "no such thing")
    assert locate("a", report, graph) == ("optimizer", "lr")
    assert locate("b", report, graph) == ("base", None)
    assert locate("c", report, graph) == (None, None)  # 'setup' is a role, not a node of this graph
    assert locate("d", report, graph) == (None, None)  # no mapped row
    report.note("a", "a = 3: rounded")
    report.note("b", "loads in float32")
    report.note("(file)", "samples file not found")
    problems = import_problems(report, graph)
    assert [(p.node, p.field, p.message) for p in problems] == [
        (None, None, "OneTrainer d: unsupported: no such thing"),
        ("optimizer", "lr", "OneTrainer a = 3: rounded"),
        ("base", None, "OneTrainer b: loads in float32"),
        (None, None, "OneTrainer config: samples file not found"),
    ]


def test_a_concepts_file_replaces_the_configs_own(window, config, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    concepts = tmp_path / "concepts.json"
    concepts.write_text(json.dumps([{"name": "other", "path": str(other)}]))
    assert window.import_onetrainer(config, concepts=concepts)
    folders = [e.params.get("folder") for e in window.doc.graph.nodes.values() if e.type == "data.concept"]
    assert folders == [str(other)]
