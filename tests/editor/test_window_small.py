"""A small main window leaves the canvas most of its space (legible nodes at Fit All); a big one keeps
the docks as the user arranged them, also after the window was small for a while and after a restart."""

from __future__ import annotations

import pytest
from PySide6 import QtCore

from runtime.paths import GRAPHS_DIR

from .test_canvas_lod import LEGIBLE_PX, drawn_title_height, shown_title, view_scale

H = QtCore.Qt.Orientation.Horizontal


def new_window(qtbot, registry, settings, tmp_path, size=None):
    from editor.main_window import MainWindow

    w = MainWindow(registry=registry, settings=settings, runs_dir=tmp_path / "runs")
    qtbot.addWidget(w)
    if size is not None:
        w.resize(*size)
    w.show()
    return w


def resize(qtbot, window, size) -> None:
    window.resize(*size)
    qtbot.waitUntil(lambda: window.size().toTuple() == size, timeout=3000)
    qtbot.wait(20)  # the layout settles


def assert_canvas_has_most_of_the_window(window) -> None:
    viewport = window.canvas.viewer.viewport()
    assert viewport.width() >= 0.5 * window.width(), (viewport.size(), window.size())
    assert viewport.height() >= 0.45 * window.height(), (viewport.size(), window.size())


def assert_quickstart_is_legible(window) -> None:
    assert window.open_file(GRAPHS_DIR / "quickstart.yaml")  # opening fits the whole graph
    canvas = window.canvas
    scale = view_scale(canvas)
    for nid, node in canvas.views.items():
        item = node.view
        assert drawn_title_height(item, scale) >= LEGIBLE_PX, nid
        first = shown_title(item).split()[0].rstrip("\u2026")
        assert len(first) >= 2 and item.name.startswith(first), (nid, shown_title(item))  # not a blank box
    window.doc.undo.setClean()


def side_widths(window) -> tuple[int, int]:
    """Widths of the left and right dock areas (beside the canvas), as the user sees them."""
    central = window.centralWidget().geometry()
    return central.left(), window.width() - 1 - central.right()


@pytest.mark.parametrize("size", [(700, 450), (1400, 900)])
def test_a_window_first_shown_at_this_size_gives_the_canvas_most_of_it(qtbot, registry, settings, tmp_path,
                                                                        dialogs, no_exceptions, size):
    window = new_window(qtbot, registry, settings, tmp_path, size)
    qtbot.waitUntil(lambda: assert_canvas_has_most_of_the_window(window), timeout=3000)
    assert window.size().toTuple() == size  # the docks' minimum sizes do not make it bigger
    assert_quickstart_is_legible(window)
    if size == (700, 450):  # library and properties share a tab group; problems/run stay low
        assert window.tabifiedDockWidgets(window.properties_dock) == [window.library_dock]
        assert window.problems_dock.height() <= 0.3 * window.height()
    window.run_panel.grab()  # the run panel still paints (in its scroll area)


@pytest.mark.parametrize("size", [(700, 450), (1000, 680), (1100, 900)])
def test_shrinking_a_big_window_gives_the_canvas_most_of_it(qtbot, window, no_exceptions, size):
    resize(qtbot, window, size)
    assert_canvas_has_most_of_the_window(window)
    assert_quickstart_is_legible(window)


def test_docks_resized_by_hand_in_a_big_window_are_kept(qtbot, window, no_exceptions):
    resize(qtbot, window, (1400, 900))
    default = side_widths(window)
    window.resizeDocks([window.properties_dock], [520], H)  # what dragging the separator does
    qtbot.wait(20)
    by_hand = side_widths(window)
    assert by_hand[0] == default[0] and by_hand[1] > default[1] + 100
    resize(qtbot, window, (1500, 950))  # still big: the window does not touch the docks
    assert side_widths(window) == by_hand
    resize(qtbot, window, (700, 450))
    assert_canvas_has_most_of_the_window(window)
    resize(qtbot, window, (1400, 900))  # big again: the user's arrangement is back
    assert side_widths(window) == by_hand
    assert window.tabifiedDockWidgets(window.properties_dock) == []


def test_a_dock_closed_by_the_user_stays_closed_across_sizes(qtbot, window, no_exceptions):
    window.run_dock.toggleViewAction().trigger()
    assert not window.run_dock.isVisible()
    resize(qtbot, window, (700, 450))
    assert not window.run_dock.isVisible() and window.problems_dock.isVisible()
    resize(qtbot, window, (1400, 900))
    assert not window.run_dock.isVisible() and window.library_dock.isVisible()
    # closed in the small window, reopened in the big one: the other size class follows
    resize(qtbot, window, (700, 450))
    window.problems_dock.toggleViewAction().trigger()
    window.run_dock.toggleViewAction().trigger()
    resize(qtbot, window, (1400, 900))
    assert not window.problems_dock.isVisible() and window.run_dock.isVisible()
    window.problems_dock.toggleViewAction().trigger()
    resize(qtbot, window, (700, 450))
    assert window.problems_dock.isVisible() and window.run_dock.isVisible()


def test_both_dock_layouts_are_remembered_across_sessions(qtbot, registry, settings, tmp_path, dialogs):
    first = new_window(qtbot, registry, settings, tmp_path, (1400, 900))
    resize(qtbot, first, (1400, 900))
    first.resizeDocks([first.properties_dock], [520], H)
    qtbot.wait(20)
    big = side_widths(first)
    resize(qtbot, first, (700, 450))
    first.resizeDocks([first.properties_dock], [300], H)  # the small window's side docks, by hand
    qtbot.wait(20)
    small = side_widths(first)
    assert small[0] == 0 and small != big
    first.close()
    second = new_window(qtbot, registry, settings, tmp_path)  # reopens at 700x450
    qtbot.waitUntil(lambda: second.size().toTuple() == (700, 450), timeout=3000)
    qtbot.wait(20)
    assert side_widths(second) == small
    assert second.tabifiedDockWidgets(second.properties_dock) == [second.library_dock]
    resize(qtbot, second, (1400, 900))
    assert side_widths(second) == big
