"""The window's status bar says why a dragged link is refused (or what it replaces) while dragging."""

from __future__ import annotations

from .test_canvas_drag import Drag, empty_spot, port, three_nodes


def status_text(window) -> str:
    return window.statusBar().currentMessage()


def test_refusal_is_on_the_status_bar_during_the_drag_and_cleared_after(window, no_exceptions):
    canvas = window.canvas
    three_nodes(canvas)
    assert status_text(window) == ""
    drag = Drag(canvas, port(canvas, "m", "model", output=True)).move(port(canvas, "enc", "vae"))
    # before the drop: the reason, naming both types and both ends
    shown = status_text(window)
    assert shown.startswith("DiffusionModel \u2192 VAE: a DiffusionModel output cannot feed a VAE input"), shown
    assert "m.model" in shown and "enc.vae" in shown
    drag.move(port(canvas, "l", "adapted", output=True))
    assert "two outputs" in status_text(window)
    drag.move(port(canvas, "l", "model"))  # a compatible, free input: nothing to say
    assert status_text(window) == ""
    drag.move(port(canvas, "enc", "vae"))
    assert "cannot feed a VAE input" in status_text(window)
    drag.move(empty_spot(canvas))
    assert status_text(window) == ""
    drag.release()
    assert status_text(window) == ""
    assert canvas.doc.graph.nodes["enc"].inputs == {} and canvas.doc.graph.nodes["l"].inputs == {}


def test_replacing_drop_is_announced_during_the_drag(window, no_exceptions):
    canvas, doc = window.canvas, window.doc
    three_nodes(canvas)
    doc.add_node("test.load_model", (0, 220), node_id="m2")
    doc.connect("m", "model", "l", "model")
    drag = Drag(canvas, port(canvas, "m2", "model", output=True)).move(port(canvas, "l", "model"))
    assert status_text(window) == "dropping here replaces m.model \u2192 l.model"
    drag.release()  # the canvas's own report of the replacement follows the cleared hint
    assert status_text(window) == "l.model: replaced m.model with m2.model (Undo restores it)"


def test_clearing_the_hint_keeps_a_message_shown_since(window, no_exceptions):
    canvas = window.canvas
    three_nodes(canvas)
    drag = Drag(canvas, port(canvas, "m", "model", output=True)).move(port(canvas, "enc", "vae"))
    assert "cannot feed" in status_text(window)
    window.statusBar().showMessage("run finished", 10000)  # e.g. a run ended during the drag
    drag.move(empty_spot(canvas))
    assert status_text(window) == "run finished"
    drag.release()
    assert status_text(window) == "run finished"
