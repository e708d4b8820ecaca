"""Data preview from the editor: the runtime's preview function, run by a child process."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.paths import ASSETS_DIR

from editor.preview import PreviewDialog, can_preview

DATA_GRAPH = Path(__file__).resolve().parent.parent / "data" / "example-data.yaml"


@pytest.fixture
def data_graph(tmp_path) -> Path:
    path = tmp_path / "data.yaml"
    path.write_text(DATA_GRAPH.read_text().replace("../../assets/demo_dataset", str(ASSETS_DIR / "demo_dataset")))
    return path


def run_dialog(qtbot, dialog: PreviewDialog) -> int:
    qtbot.addWidget(dialog)
    with qtbot.waitSignal(dialog.done, timeout=120000) as blocker:
        dialog.start()
    return blocker.args[0]


@pytest.mark.slow
def test_preview_shows_first_samples_with_image_caption_and_size(window, qtbot, data_graph):
    window.open_file(data_graph)
    window.doc.set_param("crop", "crop", "center")  # unsaved: the preview uses the edited graph
    window.canvas.select(["crop"], center=False)
    dialog = PreviewDialog(window.doc, "crop", window, count=4)
    assert run_dialog(qtbot, dialog) == 4
    assert dialog.table.rowCount() == 4
    captions = [dialog.table.item(r, 1).text() for r in range(4)]
    assert all("background" in c for c in captions)  # the demo dataset's .txt captions
    sizes = [dialog.table.item(r, 2).text() for r in range(4)]
    assert all("\u00d7" in s for s in sizes)
    assert not dialog.table.item(0, 0).icon().isNull()  # a thumbnail
    assert all(Path(item["thumbnail"]).is_file() for item in dialog.items)
    assert "first 4 sample(s)" in dialog.status.text()
    assert not list(data_graph.parent.glob(".preview-*"))  # the snapshot is gone
    dialog.close()


def test_preview_is_offered_for_data_nodes_only(window, data_graph):
    window.open_file(data_graph)
    assert can_preview(window.doc, "crop") is None
    assert can_preview(window.doc, "concept") is None
    nid = window.canvas.add_node("util.scan_files")
    assert "not a data node" in can_preview(window.doc, nid)
    window.canvas.select([nid], center=False)
    window.preview_selected()
    assert "not a data node" in window.statusBar().currentMessage()


@pytest.mark.slow
def test_preview_failure_is_shown(window, qtbot, data_graph):
    window.open_file(data_graph)
    window.doc.disconnect("crop", "image")  # a required input missing upstream of the node
    dialog = PreviewDialog(window.doc, "crop", window)
    assert run_dialog(qtbot, dialog) == 0
    assert "preview failed" in dialog.status.text() and "image" in dialog.status.text()
