"""Level of detail: legible titles at Fit All, port labels only when they can be read."""

from __future__ import annotations

import pytest
from PySide6 import QtGui

from runtime.graph_file import load_graph
from runtime.paths import GRAPHS_DIR

LEGIBLE_PX = 10.0  # a title line at least this tall on screen


def view_scale(canvas) -> float:
    return canvas.viewer.transform().m11()


def port_labels_shown(item) -> bool:
    return any(t.isVisible() for items in (item._input_items, item._output_items) for t in items.values())


def drawn_title_height(item, scale: float) -> float:
    """Screen height of the title line as the node draws it now."""
    if item._text_item.isVisible():
        return QtGui.QFontMetricsF(item._text_item.font()).height() * scale
    title = item._overview_title
    assert title is not None and title.isVisible(), f"{item.node_id}: no title drawn"
    return title.screen_line_height()


def shown_title(item) -> str:
    if item._text_item.isVisible():
        return item._text_item.toPlainText()
    return " ".join(item._overview_title.lines)


def quickstart_canvas(qtbot, registry, size):
    from editor.canvas import Canvas
    from editor.document import Document

    canvas = Canvas()
    qtbot.addWidget(canvas.widget)
    canvas.widget.resize(*size)
    canvas.widget.show()
    canvas.set_document(Document(registry, load_graph(GRAPHS_DIR / "quickstart.yaml", registry)))
    canvas.fit()
    return canvas


def test_quickstart_titles_are_legible_at_fit_all_in_a_1400x900_window(window):
    assert window.open_file(GRAPHS_DIR / "quickstart.yaml")  # opening fits the whole graph
    canvas = window.canvas
    scale = view_scale(canvas)
    assert scale < 0.5  # 19 nodes over ~2300 px: far below 100 %
    for nid, node in canvas.views.items():
        item = node.view
        assert drawn_title_height(item, scale) >= LEGIBLE_PX, nid
        assert not port_labels_shown(item), nid  # unreadable at this zoom: hidden
    shown = {nid: shown_title(n.view) for nid, n in canvas.views.items()}
    whole = [nid for nid, text in shown.items() if text == canvas.views[nid].view.name]
    assert len(whole) >= 17, shown  # nearly every title in full; the rest elided, never blank
    window.canvas.viewer.viewport().grab()  # paints


@pytest.mark.parametrize("size", [(700, 450), (400, 260)])
def test_nodes_in_a_small_canvas_show_their_titles(qtbot, registry, no_exceptions, size):
    canvas = quickstart_canvas(qtbot, registry, size)
    scale = view_scale(canvas)
    for nid, node in canvas.views.items():
        item = node.view
        assert drawn_title_height(item, scale) >= LEGIBLE_PX, nid
        first = shown_title(item).split()[0].rstrip("\u2026")
        assert len(first) >= 2 and item.name.startswith(first), (nid, shown_title(item))  # not a blank box
    image = canvas.viewer.viewport().grab().toImage()
    assert not image.isNull()


def test_port_labels_show_at_100_percent_and_hide_when_zoomed_out(canvas):
    canvas.doc.add_node("test.encode", (0, 0), node_id="enc")
    canvas.viewer.show()
    item = canvas.views["enc"].view
    canvas.viewer.reset_zoom()
    assert view_scale(canvas) == pytest.approx(1.0, abs=0.02)  # NodeGraphQt fits the widget, not the viewport
    assert port_labels_shown(item) and item._text_item.isVisible() and not item.overview
    assert drawn_title_height(item, 1.0) >= LEGIBLE_PX
    canvas.viewer.scale(0.4, 0.4)
    scale = view_scale(canvas)
    assert scale < 0.5 and item.overview and not port_labels_shown(item)
    assert drawn_title_height(item, scale) >= LEGIBLE_PX
    item.draw_node()  # NodeGraphQt re-shows every label when it lays a node out
    assert not port_labels_shown(item)
    # nodes added while zoomed out start zoomed out
    canvas.doc.add_node("test.lora", (300, 0), node_id="l")
    assert canvas.views["l"].view.overview and not port_labels_shown(canvas.views["l"].view)
    canvas.viewer.reset_zoom()
    assert port_labels_shown(item) and not item.overview
    assert not item._overview_title.isVisible()


def test_problem_badge_stays_visible_when_zoomed_out(canvas, no_exceptions):
    from editor import style

    canvas.doc.add_node("test.lora", (0, 0), node_id="l")
    canvas.viewer.show()
    canvas.viewer.scale(0.3, 0.3)
    canvas.viewer.centerOn(80, 30)
    item = canvas.views["l"].view
    canvas.set_problems({"l": [("error", "input 'model': required input is not connected")]})
    image = canvas.viewer.viewport().grab().toImage()
    corner = canvas.viewer.mapFromScene(item.sceneBoundingRect().topRight())
    # the badge is 14 px on screen over the node's top-right corner (16 scene px would be 4 px here)
    red = sum(image.pixelColor(corner.x() + dx, corner.y() + dy).name() == style.ERROR_BADGE
              for dx in range(-14, 4) for dy in range(-4, 14))
    assert red >= 60, red
