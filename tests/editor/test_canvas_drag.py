"""Connection drags with real mouse events: no exception, feedback while dragging, replacing a link."""

from __future__ import annotations

from PySide6 import QtCore, QtGui, QtWidgets
from PySide6.QtTest import QTest

from runtime.graph import Link

from .qt_helpers import port_center

LEFT, NO_MOD = QtCore.Qt.MouseButton.LeftButton, QtCore.Qt.KeyboardModifier.NoModifier


class Drag:
    """A left-button drag on the canvas, step by step: press, moves, release."""

    def __init__(self, canvas, start: QtCore.QPoint):
        self.canvas, self.widget, self.pos = canvas, canvas.viewer.viewport(), start
        QTest.mousePress(self.widget, LEFT, NO_MOD, start)

    def move(self, end: QtCore.QPoint, steps: int = 4) -> Drag:
        start = self.pos
        for i in range(1, steps + 1):
            pt = QtCore.QPointF(start + (end - start) * (i / steps))
            ev = QtGui.QMouseEvent(QtCore.QEvent.Type.MouseMove, pt, QtCore.QPointF(self.widget.mapToGlobal(pt)),
                                   QtCore.Qt.MouseButton.NoButton, LEFT, NO_MOD)
            QtWidgets.QApplication.sendEvent(self.widget, ev)
        self.pos = end
        return self

    def release(self) -> None:
        QTest.mouseRelease(self.widget, LEFT, NO_MOD, self.pos)


def three_nodes(canvas):
    """m (model, vae outputs) -> l (model input); enc has an image and a vae input."""
    doc = canvas.doc
    doc.add_node("test.load_model", (0, 0), node_id="m")
    doc.add_node("test.lora", (360, 0), node_id="l")
    doc.add_node("test.encode", (360, 220), node_id="enc")
    canvas.viewer.show()
    canvas.viewer.centerOn(250, 140)


def port(canvas, node_id, name, output=False):
    return port_center(canvas, node_id, name, output)


def empty_spot(canvas):
    return canvas.viewer.mapFromScene(QtCore.QPointF(200, 400))


def read_selection_like_the_window(canvas):
    # the main window reads the selection on every change (properties panel)
    canvas.selection_changed.connect(lambda: (canvas.selected_node_ids(), canvas.selected_note_indexes()))


def test_connection_drags_raise_nothing(canvas, no_exceptions):
    three_nodes(canvas)
    read_selection_like_the_window(canvas)
    # over empty canvas, a compatible input, an incompatible one, then released on empty canvas
    drag = Drag(canvas, port(canvas, "m", "model", output=True)).move(empty_spot(canvas))
    drag.move(port(canvas, "l", "model")).move(port(canvas, "enc", "vae")).move(empty_spot(canvas))
    drag.release()
    assert canvas.doc.graph.nodes["l"].inputs == {} and canvas.doc.graph.nodes["enc"].inputs == {}
    # released on a compatible input: connected; on an incompatible one: refused
    Drag(canvas, port(canvas, "m", "model", output=True)).move(port(canvas, "l", "model")).release()
    Drag(canvas, port(canvas, "m", "model", output=True)).move(port(canvas, "enc", "vae")).release()
    assert canvas.doc.graph.nodes["l"].inputs == {"model": Link("m", "model")}
    assert canvas.doc.graph.nodes["enc"].inputs == {}
    # a drag that starts on a connected input and ends on empty canvas detaches the link
    Drag(canvas, port(canvas, "l", "model")).move(empty_spot(canvas)).release()
    assert canvas.doc.graph.nodes["l"].inputs == {}
    assert canvas.selected_note_indexes() == [] and canvas.selected_node_ids() == []
