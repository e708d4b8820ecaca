"""The properties panel generated from param specs, and its value editors."""

from __future__ import annotations

from PySide6 import QtWidgets

from runtime.graph import GraphInput

from editor import param_widgets
from editor.param_widgets import NumberSpinBox, format_number
from editor.properties import PropertiesPanel


def test_format_number_is_short_and_exact():
    assert format_number(1e-6) == "1e-6"
    assert format_number(5e-4) == "0.0005"
    assert format_number(2.5e-07) == "2.5e-7"
    assert format_number(16.0) == "16.0"
    assert format_number(1024) == "1024"
    for v in (1e-6, 3e-5, 0.1 + 0.2, 123456.789, 1e20):
        assert float(format_number(v)) == v


def test_number_spin_box_precision_bounds_and_steps(qtbot):
    spin = NumberSpinBox(integer=False, minimum=0.0, maximum=1.0)
    qtbot.addWidget(spin)
    spin.setValue(1e-6)
    assert spin.text() == "1e-6"
    got = []
    spin.committed.connect(got.append)
    spin.stepBy(1)
    assert spin.value() == 1.1e-6 and got == [1.1e-6]
    spin.lineEdit().setText("2")  # above the maximum: not taken
    spin.editingFinished.emit()
    assert spin.value() == 1.1e-6 and spin.text() == "1.1e-6"
    spin.lineEdit().setText("3e-5")
    spin.editingFinished.emit()
    assert got[-1] == 3e-5
    assert spin.validate("abc", 0) == spin.validate("abc", 0).Invalid
    seed = NumberSpinBox(integer=True, minimum=-1, maximum=2**32 - 1)
    seed.setValue(2**32 - 1)  # larger than a QSpinBox can hold
    assert seed.text() == "4294967295"
    seed.stepBy(1)
    assert seed.value() == 2**32 - 1


def node_panel(qtbot, doc, nid):
    panel = PropertiesPanel()
    qtbot.addWidget(panel)
    panel.set_document(doc)
    panel.show_selection(nid)
    return panel


def test_rows_are_generated_per_param_kind(qtbot, doc):
    nid = doc.add_node("test.train")
    panel = node_panel(qtbot, doc, nid)
    rows = panel.node_rows
    assert list(rows) == ["steps", "lr", "seed", "notes", "prompts", "save_to", "use_ema"]
    assert isinstance(rows["steps"].editor, param_widgets.NumberEditor)
    assert rows["lr"].editor.spin.text() == "1e-6"  # default shown with full precision
    assert rows["lr"].editor.spin.minimum == 0.0
    assert isinstance(rows["seed"].editor, param_widgets.NumberEditor)
    assert isinstance(rows["notes"].editor, param_widgets.TextEditor)
    assert isinstance(rows["prompts"].editor, param_widgets.StrListEditor)
    assert isinstance(rows["save_to"].editor, param_widgets.PathEditor)
    assert isinstance(rows["use_ema"].editor, param_widgets.BoolEditor)
    lora = doc.add_node("test.lora")
    panel.show_selection(lora)
    combo = panel.node_rows["targets"].editor.combo
    assert [combo.itemText(i) for i in range(combo.count())] == ["attn", "attn-mlp", "all-linear"]
    assert "LoRA rank" in panel.node_rows["rank"].label.toolTip()


def test_edits_go_to_the_document_and_undo_refreshes(qtbot, doc):
    nid = doc.add_node("test.train")
    panel = node_panel(qtbot, doc, nid)
    rows = panel.node_rows
    rows["lr"].editor.spin.lineEdit().setText("2e-5")
    rows["lr"].editor.spin.editingFinished.emit()
    assert doc.graph.nodes[nid].params["lr"] == 2e-5
    rows["use_ema"].editor.box.click()
    assert doc.graph.nodes[nid].params["use_ema"] is True
    rows["prompts"].editor.text.setPlainText("a red circle\n\n  a blue square \n")
    rows["prompts"].editor.text.finished.emit()
    assert doc.graph.nodes[nid].params["prompts"] == ["a red circle", "a blue square"]
    assert rows["lr"].label.font().bold()  # explicitly set
    doc.undo.undo()
    doc.undo.undo()
    assert "use_ema" not in doc.graph.nodes[nid].params
    assert not rows["use_ema"].editor.box.isChecked()
    doc.undo.undo()
    assert rows["lr"].editor.spin.text() == "1e-6" and not rows["lr"].label.font().bold()


def test_choice_and_path_editors(qtbot, doc, tmp_path):
    doc.graph.path = tmp_path / "g.yaml"
    nid = doc.add_node("test.load_model")
    panel = node_panel(qtbot, doc, nid)
    dtype = panel.node_rows["dtype"].editor.combo
    dtype.activated.emit(2)
    assert doc.graph.nodes[nid].params["dtype"] == "bfloat16"
    (tmp_path / "models").mkdir()
    picker = panel.node_rows["path"].editor
    picker.set_picked(str(tmp_path / "models" / "a.safetensors"))  # what the file dialog returns
    assert doc.graph.nodes[nid].params["path"] == "models/a.safetensors"  # relative to the graph's folder
    picker.set_picked("/elsewhere/b.safetensors")
    assert doc.graph.nodes[nid].params["path"] == "/elsewhere/b.safetensors"


def test_references_to_graph_inputs(qtbot, doc):
    nid = doc.add_node("test.train")
    doc.expose_param(nid, "steps")
    panel = node_panel(qtbot, doc, nid)
    row = panel.node_rows["steps"]
    assert row.stack.currentWidget() is row.ref_editor
    assert row.ref_editor.edit.text() == "${steps}"
    row.ref_editor.edit.setText("250")  # typing a number turns the reference back into a value
    row.ref_editor.edit.editingFinished.emit()
    assert doc.graph.nodes[nid].params["steps"] == 250
    assert row.stack.currentWidget() is row.editor


def test_graph_inputs_come_first_in_their_own_section(qtbot, doc):
    doc.graph.inputs["dataset"] = GraphInput("dataset", "dir", doc="folder of images")
    doc.graph.inputs["steps"] = GraphInput("steps", "int", default=100, min=1)
    nid = doc.add_node("test.lora")
    panel = node_panel(qtbot, doc, nid)
    layout = panel._body.layout()
    assert layout.indexOf(panel.inputs_box) < layout.indexOf(panel.selection_box)
    assert panel.inputs_box.title() == "Graph inputs" and not panel.inputs_box.isHidden()
    assert list(panel.input_rows) == ["dataset", "steps"]
    steps = panel.input_rows["steps"].editor.spin
    assert steps.text() == "100" and steps.minimum == 1
    assert panel.input_rows["dataset"].label.text() == "dataset *"  # no value yet
    steps.lineEdit().setText("300")
    steps.editingFinished.emit()
    assert doc.graph.inputs["steps"].default == 300
    doc.undo.undo()
    assert panel.input_rows["steps"].editor.spin.text() == "100"


def test_note_and_graph_sections(qtbot, doc):
    panel = node_panel(qtbot, doc, None)
    assert panel.selection_box.title() == "Graph"
    name = panel.findChild(QtWidgets.QLineEdit, "graphName")
    name.setText("My LoRA")
    name.editingFinished.emit()
    assert doc.graph.name == "My LoRA"
    i = doc.add_note((0, 0, 200, 100), "About", "text")
    panel.show_selection(None, i)
    assert panel.selection_box.title() == "Note"


def test_param_menu_offers_compatible_inputs(qtbot, doc):
    doc.graph.inputs["n"] = GraphInput("n", "int", default=5)
    doc.graph.inputs["where"] = GraphInput("where", "dir")
    nid = doc.add_node("test.train")
    panel = node_panel(qtbot, doc, nid)
    menu = QtWidgets.QMenu()
    panel._param_menu(panel.node_rows["steps"], menu)
    use = next(a.menu() for a in menu.actions() if a.text() == "Use graph input")
    assert [a.text() for a in use.actions()] == ["n"]  # an int param cannot take a folder
    use.actions()[0].trigger()
    assert doc.graph.nodes[nid].params["steps"] == "${n}"


def test_an_optional_bool_shows_unset_as_partly_checked_and_can_go_back_to_unset(qtbot):
    from PySide6.QtCore import Qt

    from runtime.params import MISSING, Param

    editor = param_widgets.BoolEditor(Param(bool, optional=True, doc="nesterov (unset: the optimizer's default)"))
    qtbot.addWidget(editor)
    editor.set_value(None)
    assert editor.box.checkState() == Qt.CheckState.PartiallyChecked and editor.box.text() == "default"
    got = []
    editor.committed.connect(got.append)
    editor.box.click()  # partly checked -> checked
    editor.box.click()  # checked -> unchecked
    editor.box.click()  # unchecked -> partly checked: back to the default
    assert got == [True, False, MISSING]
    editor.set_value(False)
    assert editor.box.checkState() == Qt.CheckState.Unchecked and editor.box.text() == ""
    plain = param_widgets.BoolEditor(Param(bool, False, doc="x"))
    qtbot.addWidget(plain)
    plain.set_value(None)
    assert not plain.box.isTristate() and plain.box.checkState() == Qt.CheckState.Unchecked
