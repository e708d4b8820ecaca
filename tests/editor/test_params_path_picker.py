"""The "..." of a path param offers what the param takes: a file, a folder, or both (sd.load_model.path)."""

from __future__ import annotations

from pathlib import Path

from PySide6 import QtWidgets

from runtime import Dir, File, Param
from runtime.params import FileOrDir

from editor.param_widgets import PathEditor
from editor.properties import PropertiesPanel


class FakeDialogs:
    """QFileDialog's static methods, recording which one was asked and answering with a path."""

    def __init__(self, monkeypatch, file: str, folder: str):
        self.calls: list[str] = []
        self.filters: list[str] = []
        D = QtWidgets.QFileDialog

        def open_file(parent, caption, start, flt="", *a, **k):
            self.calls.append("file")
            self.filters.append(flt)
            return file, flt

        def folder_dialog(parent, caption, start, *a, **k):
            self.calls.append("dir")
            return folder

        def save_file(parent, caption, start, flt="", *a, **k):
            self.calls.append("save")
            return file, flt

        monkeypatch.setattr(D, "getOpenFileName", staticmethod(open_file))
        monkeypatch.setattr(D, "getExistingDirectory", staticmethod(folder_dialog))
        monkeypatch.setattr(D, "getSaveFileName", staticmethod(save_file))


def editor_for(qtbot, kind, tmp_path) -> PathEditor:
    p = Param(kind, doc="where")
    p.name = "path"
    ed = PathEditor(p, tmp_path)
    qtbot.addWidget(ed)
    return ed


def test_file_or_folder_param_offers_both_choices_others_their_one(qtbot, monkeypatch, tmp_path, no_exceptions):
    (tmp_path / "models" / "sd15").mkdir(parents=True)
    dialogs = FakeDialogs(monkeypatch, str(tmp_path / "models" / "one.safetensors"), str(tmp_path / "models" / "sd15"))
    ed = editor_for(qtbot, FileOrDir("open", filter="*.safetensors"), tmp_path)
    got = []
    ed.committed.connect(got.append)
    menu = ed.button.menu()
    assert menu is not None and ed.button.popupMode() == QtWidgets.QToolButton.ToolButtonPopupMode.InstantPopup
    actions = {a.text(): a for a in menu.actions()}
    assert list(actions) == ["Choose file\u2026", "Choose folder\u2026"]
    assert ed.edit.placeholderText() == "file or folder" and "a file or a folder" in ed.button.toolTip()
    actions["Choose folder\u2026"].trigger()
    assert dialogs.calls == ["dir"] and got == ["models/sd15"]  # a diffusers folder can be picked
    actions["Choose file\u2026"].trigger()
    assert dialogs.calls == ["dir", "file"] and got[-1] == "models/one.safetensors"
    assert dialogs.filters == ["*.safetensors"]
    for kind, call in ((File(), "file"), (Dir(), "dir"), (File("save"), "save"), (Dir("save"), "dir")):
        ed = editor_for(qtbot, kind, tmp_path)
        assert ed.button.menu() is None
        ed.button.click()
        assert dialogs.calls[-1] == call


def test_load_model_row_in_the_panel_offers_both(qtbot, doc, monkeypatch, tmp_path, no_exceptions):
    doc.graph.path = tmp_path / "g.yaml"
    (tmp_path / "sd15").mkdir()
    FakeDialogs(monkeypatch, "", str(tmp_path / "sd15"))
    nid = doc.add_node("sd.load_model")
    panel = PropertiesPanel()
    qtbot.addWidget(panel)
    panel.set_document(doc)
    panel.show_selection(nid)
    row = panel.node_rows["path"]
    assert isinstance(row.editor, PathEditor) and row.editor.picks == ("file", "dir")
    folder = next(a for a in row.editor.button.menu().actions() if a.text() == "Choose folder\u2026")
    folder.trigger()
    assert doc.graph.nodes[nid].params["path"] == "sd15"
    doc.graph.inputs.clear()
    doc.set_param(nid, "path", "${base_model}")  # a reference stays in the path field, which can replace it
    assert row.stack.currentWidget() is row.editor and row.editor.edit.text() == "${base_model}"
    assert Path(row.editor.start_dir()) == tmp_path
