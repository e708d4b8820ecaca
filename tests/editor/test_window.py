"""The main window: files, presets, recent files, the unsaved-changes prompt, editing actions, validation."""

from __future__ import annotations

import shutil

import pytest
from PySide6 import QtCore, QtWidgets
from PySide6.QtTest import QTest

from runtime.graph import Link
from runtime.paths import GRAPHS_DIR, presets

PRESETS = presets()


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_open_and_save_unchanged_preset_is_byte_identical(window, tmp_path, preset):
    copy = tmp_path / preset.name
    shutil.copyfile(preset, copy)
    # keep relative paths pointing where they did
    assert window.open_file(copy)
    ids = list(window.doc.graph.nodes)
    assert set(window.canvas.views) == set(ids)
    assert not window.doc.modified
    assert window.save()
    assert copy.read_bytes() == preset.read_bytes()
    assert window.open_file(copy)
    assert list(window.doc.graph.nodes) == ids  # node ids stay stable


def test_moves_are_saved_as_layout(window, tmp_path):
    path = tmp_path / "g.yaml"
    shutil.copyfile(GRAPHS_DIR / "example-manifest.yaml", path)
    window.open_file(path)
    item = window.canvas.views["manifest"].view
    item.xy_pos = [333.3, 44.4]
    window.canvas.viewer.moved_nodes.emit({item: [280.0, 0.0]})
    assert window.doc.modified and window.windowTitle().startswith("g.yaml *")
    window.save()
    assert "manifest: [333, 44]" in path.read_text()
    assert not window.doc.modified


def test_unknown_node_type_opens_as_placeholder_and_names_the_type(window, tmp_path):
    path = tmp_path / "missing.yaml"
    text = (GRAPHS_DIR / "example-manifest.yaml").read_text().replace("util.write_manifest@1", "acme.uploader@2")
    path.write_text(text)
    assert window.open_file(path)
    assert window.canvas.views["manifest"].view.placeholder
    assert "acme.uploader" in window.statusBar().currentMessage()
    window.validator.validate_now()
    messages = [p.message for p in window.problems.problems if p.node == "manifest"]
    assert any("unknown node type 'acme.uploader'" in m for m in messages)
    window.save()
    assert path.read_text() == text  # the node, its params and links are kept


def test_unsaved_changes_prompt(window, dialogs):
    window.canvas.add_node("test.lora")
    dialogs.answer = QtWidgets.QMessageBox.StandardButton.Cancel
    window.new_graph()
    assert "lora" in window.doc.graph.nodes
    assert dialogs.calls and dialogs.calls[-1][0] == "question"
    dialogs.answer = QtWidgets.QMessageBox.StandardButton.Discard
    window.new_graph()
    assert window.doc.graph.nodes == {}
    calls = len(dialogs.calls)
    window.new_graph()  # nothing changed: no question
    assert len(dialogs.calls) == calls


def test_new_from_preset_and_recent_files(window, tmp_path):
    assert window.new_from_preset(GRAPHS_DIR / "example-manifest.yaml")
    assert window.doc.file_path is None and "unsaved" in window.windowTitle()
    assert window.doc.graph.base_dir == GRAPHS_DIR  # relative paths still resolve
    window._fill_presets()
    assert [a.text() for a in window.preset_menu.actions()] == [p.stem for p in presets()]
    path = tmp_path / "mine.yaml"
    window.doc.save(path)
    window.open_file(path)
    assert window.recent_files()[0] == str(path.resolve())
    window._fill_recent()
    assert window.recent_menu.actions()[0].text() == str(path.resolve())


def test_window_geometry_is_remembered(qtbot, registry, settings, tmp_path, dialogs):
    from editor.main_window import MainWindow

    first = MainWindow(registry=registry, settings=settings, runs_dir=tmp_path)
    qtbot.addWidget(first)
    first.resize(701, 489)  # within the offscreen screen, so restoring does not clamp it
    first.show()
    first.close()
    assert settings.value("geometry") is not None
    second = MainWindow(registry=registry, settings=settings, runs_dir=tmp_path)
    qtbot.addWidget(second)
    assert (second.width(), second.height()) == (701, 489)


def test_tab_search_adds_a_node(window, qtbot):
    viewer = window.canvas.viewer
    viewer.setFocus()
    QTest.keyClick(viewer, QtCore.Qt.Key.Key_Tab)
    assert window.search.isVisible()
    QTest.keyClicks(window.search.edit, "lora")
    assert "LoRA" in window.search.list.currentItem().text()  # best match first
    window.search.list.setCurrentRow(
        next(i for i in range(window.search.list.count())
             if window.search.list.item(i).data(QtCore.Qt.ItemDataRole.UserRole) == "test.lora"))
    QTest.keyClick(window.search.edit, QtCore.Qt.Key.Key_Return)
    assert not window.search.isVisible()
    assert [e.type for e in window.doc.graph.nodes.values()] == ["test.lora"]


def test_library_filter_and_double_click(window):
    lib = window.library
    lib.filter.setText("encode img")
    assert "test.encode" in lib.visible_types() and "test.lora" not in lib.visible_types()
    lib.filter.setText("")
    items = lib.tree.findItems("Train", QtCore.Qt.MatchFlag.MatchExactly | QtCore.Qt.MatchFlag.MatchRecursive)
    lib.tree.itemDoubleClicked.emit(items[0], 0)
    assert [e.type for e in window.doc.graph.nodes.values()] == ["test.train"]
    mime = lib.tree.mimeData([items[0]])
    assert bytes(mime.data("application/x-nodetrainer-node-type")) == b"test.train"


def test_copy_paste_delete_with_keys(window, qtbot):
    doc = window.doc
    doc.add_node("test.load_model", (0, 0), node_id="m")
    doc.add_node("test.lora", (300, 0), node_id="l")
    doc.connect("m", "model", "l", "model")
    window.canvas.select(["m", "l"], center=False)
    viewer = window.canvas.viewer
    viewer.setFocus()
    QTest.keyClick(viewer, QtCore.Qt.Key.Key_C, QtCore.Qt.KeyboardModifier.ControlModifier)
    QTest.keyClick(viewer, QtCore.Qt.Key.Key_V, QtCore.Qt.KeyboardModifier.ControlModifier)
    assert doc.graph.nodes["l2"].inputs == {"model": Link("m2", "model")}
    assert sorted(window.canvas.selected_node_ids()) == ["l2", "m2"]
    QTest.keyClick(viewer, QtCore.Qt.Key.Key_Delete)
    assert sorted(doc.graph.nodes) == ["l", "m"]
    QTest.keyClick(viewer, QtCore.Qt.Key.Key_Z, QtCore.Qt.KeyboardModifier.ControlModifier)
    assert sorted(doc.graph.nodes) == ["l", "l2", "m", "m2"]


def test_live_validation_badges_and_problem_click(window, qtbot):
    window.canvas.add_node("test.lora", (0, 0))
    with qtbot.waitSignal(window.validator.validated, timeout=3000):
        pass  # debounced: arrives a moment after the edit
    item = window.canvas.views["lora"].view
    assert any("required input is not connected" in msg for _, msg in item.problems)
    rows = [window.problems.topLevelItem(i) for i in range(window.problems.topLevelItemCount())]
    lora_row = next(r for r in rows if r.data(0, QtCore.Qt.ItemDataRole.UserRole) == "lora")
    window.canvas.select([], center=False)
    window.problems.itemClicked.emit(lora_row, 0)
    assert window.canvas.selected_node_ids() == ["lora"]
    assert window.properties.node_id == "lora"
    assert "error" in window.problem_count.text()
    window.doc.add_node("test.load_model", (0, 200), node_id="m")
    window.doc.connect("m", "model", "lora", "model")
    window.validate_now()  # on demand
    assert not any("required input" in msg for _, msg in item.problems)


def test_add_note_around_selection(window):
    window.doc.add_node("test.lora", (100, 100), node_id="l")
    window.canvas.select(["l"], center=False)
    window.add_note()
    (note,) = window.doc.graph.notes
    x, y, w, h = note.rect
    assert x < 100 < x + w and y < 100 < y + h
    assert len(window.canvas.backdrops) == 1
    assert window.canvas.backdrops[0].view.name == "Note"
    window.doc.update_note(0, title="Data prep")
    assert window.canvas.backdrops[0].view.name == "Data prep"
    # dragging and resizing the backdrop are edits of the note
    bd = window.canvas.backdrops[0].view
    bd.xy_pos = [x + 50.2, y + 10.0]
    window.canvas.viewer.moved_nodes.emit({bd: [x, y]})
    assert window.doc.graph.notes[0].rect[:2] == (round(x + 50.2), round(y + 10))
    window.canvas.graph._on_node_backdrop_updated(
        window.canvas.backdrops[0].id, "sizer_mouse_release", {"pos": bd.xy_pos, "width": 400, "height": 250})
    assert window.doc.graph.notes[0].rect[2:] == (400, 250)
    window.doc.undo.undo()
    window.doc.undo.undo()
    assert window.doc.graph.notes[0].rect == (x, y, w, h)
    assert window.canvas.backdrops[0].view.xy_pos == [float(x), float(y)]
