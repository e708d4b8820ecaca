"""A number param whose graph file holds text (``steps: abc``) or a reference: the spin box shows the bad
value as it is, marked, and arrows, wheel and keys raise nothing (they printed 23 TypeErrors)."""

from __future__ import annotations

import pytest
from PySide6 import QtCore, QtGui, QtWidgets
from PySide6.QtTest import QTest

from editor.param_widgets import NumberSpinBox

GRAPH = """\
format: nodetrainer.graph/1
name: bad numbers
inputs:
  n: {type: int, default: 5}
  rate: {type: float, default: oops}
nodes:
  lora:
    type: test.lora@1
    params: {rank: abc, alpha: '${n}', dropout: [1, 2]}
  train:
    type: test.train@1
    params: {steps: '${n}', lr: .nan, seed: 'twelve'}
"""


def poke(spin: NumberSpinBox) -> None:
    """Everything a user does to a spin box without typing a number."""
    spin.setFocus()
    spin.show()
    QtWidgets.QApplication.processEvents()
    for key in (QtCore.Qt.Key.Key_Up, QtCore.Qt.Key.Key_Down, QtCore.Qt.Key.Key_PageUp, QtCore.Qt.Key.Key_PageDown):
        QTest.keyClick(spin, key)
    centre = QtCore.QPointF(spin.rect().center())
    for dy in (120, -120):
        ev = QtGui.QWheelEvent(centre, QtCore.QPointF(spin.mapToGlobal(centre.toPoint())), QtCore.QPoint(0, 0),
                               QtCore.QPoint(0, dy), QtCore.Qt.MouseButton.NoButton,
                               QtCore.Qt.KeyboardModifier.NoModifier, QtCore.Qt.ScrollPhase.NoScrollPhase, False)
        QtWidgets.QApplication.sendEvent(spin, ev)
    opt = QtWidgets.QStyleOptionSpinBox()
    spin.initStyleOption(opt)
    for control in (QtWidgets.QStyle.SubControl.SC_SpinBoxUp, QtWidgets.QStyle.SubControl.SC_SpinBoxDown):
        rect = spin.style().subControlRect(QtWidgets.QStyle.ComplexControl.CC_SpinBox, opt, control, spin)
        QTest.mouseClick(spin, QtCore.Qt.MouseButton.LeftButton, QtCore.Qt.KeyboardModifier.NoModifier,
                         rect.center())
    spin.stepBy(1)
    spin.repaint()
    spin.clearFocus()
    QtWidgets.QApplication.processEvents()


def test_a_graph_with_text_in_number_params_opens_without_exceptions(window, tmp_path, no_exceptions):
    path = tmp_path / "bad.yaml"
    path.write_text(GRAPH)
    assert window.open_file(path)
    for nid in ("lora", "train"):
        window.canvas.select([nid], center=False)
        QtWidgets.QApplication.processEvents()
        assert window.properties.node_id == nid
        for name, row in window.properties.node_rows.items():
            if hasattr(row.editor, "spin") and row.stack.currentWidget() is row.editor:
                poke(row.editor.spin)
    for row in window.properties.input_rows.values():
        poke(row.editor.spin)
    rows = window.properties.node_rows  # train's
    assert rows["lr"].editor.spin.text() == "nan" and rows["lr"].editor.spin.is_bad
    assert rows["seed"].editor.spin.text() == "twelve"
    window.canvas.select(["lora"], center=False)
    rank = window.properties.node_rows["rank"].editor.spin
    assert rank.text() == "abc", "the bad value is shown as the file has it"
    assert rank.is_bad and "not a whole number" in rank.toolTip()
    assert window.doc.graph.nodes["lora"].params == {"rank": "abc", "alpha": "${n}", "dropout": [1, 2]}, \
        "poking changed nothing"
    assert window.properties.input_rows["rate"].editor.spin.text() == "oops"


@pytest.mark.parametrize("value", ["abc", "${steps}", [1, 2], {"a": 1}, True, 2.5, float("nan"), 10**400])
def test_spin_box_with_a_value_that_is_not_its_number(qtbot, no_exceptions, value):
    for integer in (True, False):
        spin = NumberSpinBox(integer, 0, 100)
        qtbot.addWidget(spin)
        got = []
        spin.committed.connect(got.append)
        spin.setValue(value)
        bad = value is True or isinstance(value, (str, list, dict)) or value != value \
            or (integer and value == 2.5) or (not integer and value == 10**400)
        assert spin.is_bad == bad
        if bad:
            assert spin.stepEnabled() == QtWidgets.QAbstractSpinBox.StepEnabledFlag.StepNone
            assert "color" in spin.lineEdit().styleSheet()
        poke(spin)
        if bad:
            assert got == [] and spin.value() is value, "arrows and wheel leave a bad value as it is"
        got.clear()
        assert len(spin.text()) <= 80
        spin.lineEdit().setText("7")  # typing a number fixes it
        spin.editingFinished.emit()
        assert got == [7 if integer else 7.0] and not spin.is_bad and spin.lineEdit().styleSheet() == ""
