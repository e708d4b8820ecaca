"""Mouse helpers for canvas tests: real press/move/release events on the viewer."""

from __future__ import annotations

from PySide6 import QtCore, QtGui, QtWidgets
from PySide6.QtTest import QTest


def port_center(canvas, node_id: str, port: str, output: bool) -> QtCore.QPoint:
    node = canvas.views[node_id]
    item = (node.get_output(port) if output else node.get_input(port)).view
    return canvas.viewer.mapFromScene(item.sceneBoundingRect().center())


def mouse_drag(widget: QtWidgets.QWidget, start: QtCore.QPoint, end: QtCore.QPoint, steps: int = 6) -> None:
    """Press, move in steps and release the left button, like a user dragging."""
    left, none = QtCore.Qt.MouseButton.LeftButton, QtCore.Qt.KeyboardModifier.NoModifier
    QTest.mousePress(widget, left, none, start)
    for i in range(1, steps + 1):
        pt = QtCore.QPointF(start + (end - start) * (i / steps))
        ev = QtGui.QMouseEvent(QtCore.QEvent.Type.MouseMove, pt, QtCore.QPointF(widget.mapToGlobal(pt)),
                               QtCore.Qt.MouseButton.NoButton, left, none)
        QtWidgets.QApplication.sendEvent(widget, ev)
    QTest.mouseRelease(widget, left, none, end)


def drag_link(canvas, src: str, out_port: str, dst: str, in_port: str) -> None:
    canvas.viewer.show()
    mouse_drag(canvas.viewer.viewport(), port_center(canvas, src, out_port, True),
               port_center(canvas, dst, in_port, False))
