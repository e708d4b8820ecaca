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


def pipe_color(canvas) -> tuple[int, int, int]:
    return canvas.viewer._LIVE_PIPE.pen().color().getRgb()[:3]


def test_incompatible_port_is_refused_while_dragging_with_both_types(qtbot, canvas, no_exceptions):
    from editor import style

    three_nodes(canvas)
    messages = []
    canvas.drag_message.connect(messages.append)
    vae_in = canvas.views["enc"].get_input("vae").view
    model_in = canvas.views["l"].get_input("model").view
    drag = Drag(canvas, port(canvas, "m", "model", output=True)).move(port(canvas, "enc", "vae"))
    # before the drop: the port is marked, the live pipe is red, the reason is at the cursor and emitted
    assert vae_in.refused and canvas.viewer.drag_target is vae_in
    assert pipe_color(canvas) == style.REFUSED
    assert messages[-1].startswith("DiffusionModel \u2192 VAE: a DiffusionModel output cannot feed a VAE input")
    assert "m.model" in messages[-1] and "enc.vae" in messages[-1]
    assert QtWidgets.QToolTip.isVisible() and QtWidgets.QToolTip.text() == messages[-1]
    canvas.viewer.viewport().grab()
    # over a compatible port: nothing is marked, the pipe has its normal colour, the message is cleared
    drag.move(port(canvas, "l", "model"))
    assert not vae_in.refused and not model_in.refused and canvas.viewer.drag_target is None
    assert pipe_color(canvas) != style.REFUSED
    assert messages[-1] == ""
    qtbot.waitUntil(lambda: not QtWidgets.QToolTip.isVisible(), timeout=3000)  # Qt hides it after 300 ms
    # an output held over another output is refused too
    drag.move(port(canvas, "l", "adapted", output=True))
    assert canvas.views["l"].get_output("adapted").view.refused and "two outputs" in messages[-1]
    drag.move(empty_spot(canvas))
    drag.release()
    assert messages[-1] == "" and canvas.viewer.drag_target is None
    assert canvas.doc.graph.nodes["enc"].inputs == {} and canvas.doc.graph.nodes["l"].inputs == {}


def test_drag_feedback_uses_the_runtime_type_check(canvas):
    from runtime.port_types import is_compatible

    doc = canvas.doc
    sources = {"m": "test.load_model", "img": "test.images", "enc": "test.encode", "h": "test.sample_hook"}
    sinks = {"l": "test.lora", "enc2": "test.encode", "b": "test.batches", "t": "test.train"}
    for i, (nid, t) in enumerate({**sources, **sinks}.items()):
        doc.add_node(t, (300 * i, 0), node_id=nid)
    checked = refused_count = 0
    for src in sources:
        for out in canvas.views[src].output_ports():
            out_t = doc.spec(src).outputs[out.name()].type
            for dst in sinks:
                for inp in canvas.views[dst].input_ports():
                    in_t = doc.spec(dst).inputs[inp.name()].type
                    refused, message = canvas._drag_check(out.view, inp.view)
                    assert refused == (not is_compatible(out_t, in_t)), (src, out.name(), dst, inp.name())
                    if refused:
                        assert f"{out_t.name} \u2192 {in_t.name}" in message
                        refused_count += 1
                    # the same from the other end (a drag that starts on the input)
                    assert canvas._drag_check(inp.view, out.view)[0] == refused
                    checked += 1
    assert checked > 20 and 0 < refused_count < checked  # subtypes (Image into Field) are accepted


def test_drop_that_replaces_a_link_says_so_and_is_one_undo_step(canvas, no_exceptions):
    from .test_canvas import view_links

    doc = canvas.doc
    three_nodes(canvas)
    doc.add_node("test.load_model", (0, 220), node_id="m2")
    doc.connect("m", "model", "l", "model")
    hints, status = [], []
    canvas.drag_message.connect(hints.append)
    canvas.status.connect(status.append)
    steps = doc.undo.count()
    drag = Drag(canvas, port(canvas, "m2", "model", output=True)).move(port(canvas, "l", "model"))
    assert hints[-1] == "dropping here replaces m.model \u2192 l.model"
    assert not canvas.views["l"].get_input("model").view.refused
    drag.release()
    assert doc.graph.nodes["l"].inputs == {"model": Link("m2", "model")}
    assert view_links(canvas, "l", "model") == {("m2", "model")}
    assert status == ["l.model: replaced m.model with m2.model (Undo restores it)"]
    assert doc.undo.count() == steps + 1 and doc.undo.undoText() == "replace link into l.model"
    doc.undo.undo()  # one Ctrl-Z restores the old link
    assert doc.graph.nodes["l"].inputs == {"model": Link("m", "model")}
    assert view_links(canvas, "l", "model") == {("m", "model")}
    # a plain connection to a free input says nothing about replacing
    hints.clear()
    Drag(canvas, port(canvas, "m", "vae", output=True)).move(port(canvas, "enc", "vae")).release()
    assert doc.graph.nodes["enc"].inputs == {"vae": Link("m", "vae")} and not any(hints)
