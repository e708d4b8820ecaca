"""The main window's toolbar keeps its buttons in place, and the Help menu (About, quick reference,
node reference)."""

from __future__ import annotations

import sys

from PySide6 import QtWidgets

from runtime import __version__
from runtime.cli import describe_text
from runtime.paths import ROOT

from editor.tooltips import markdown_sections, quick_reference


def toolbar_geometries(window) -> list[tuple[str, tuple[int, int, int, int]]]:
    tb = window.findChild(QtWidgets.QToolBar, "main_toolbar")
    out = []
    for action in tb.actions():
        if action.isSeparator():
            continue
        r = tb.widgetForAction(action).geometry()
        out.append((action.text(), (r.x(), r.y(), r.width(), r.height())))
    return out


def test_toolbar_buttons_keep_their_places_when_the_undo_text_changes(window, qtbot, no_exceptions):
    qtbot.wait(20)
    before = toolbar_geometries(window)
    assert ("Undo" in dict(before)) and ("Redo" in dict(before))
    window.doc.add_node("test.lora", (0, 0), node_id="a_node_with_a_rather_long_identifier")
    window.doc.set_param("a_node_with_a_rather_long_identifier", "rank", 8)
    qtbot.wait(20)
    assert window.act_undo.text().startswith("&Undo set a_node_with")  # the Edit menu says what it undoes
    assert toolbar_geometries(window) == before
    assert window.tb_undo.text() == "Undo" and window.tb_undo.isEnabled()
    assert "Undo set a_node_with_a_rather_long_identifier.rank" in window.tb_undo.toolTip()
    assert "Ctrl+Z" in window.tb_undo.toolTip()
    window.tb_undo.trigger()
    assert window.doc.graph.nodes["a_node_with_a_rather_long_identifier"].params.get("rank", None) != 8
    qtbot.wait(20)
    assert toolbar_geometries(window) == before
    assert window.tb_redo.isEnabled() and "Redo set a_node_with" in window.tb_redo.toolTip()
    window.tb_redo.trigger()
    assert window.doc.graph.nodes["a_node_with_a_rather_long_identifier"].params["rank"] == 8


def test_toolbar_undo_says_when_there_is_nothing_to_undo(window):
    assert not window.tb_undo.isEnabled() and "Nothing to undo" in window.tb_undo.toolTip()


def help_menu(window) -> QtWidgets.QMenu:
    (menu,) = [a.menu() for a in window.menuBar().actions() if a.text() == "&Help"]
    return menu


def test_help_menu_has_about_quick_reference_and_node_reference(window):
    texts = [a.text() for a in help_menu(window).actions() if not a.isSeparator()]
    assert texts == ["&Quick Reference", "&Node Reference", "&About nodetrainer"]


def test_about_lists_versions_without_importing_torch(window):
    had_torch = "torch" in sys.modules
    dialog = window.show_about()
    text = dialog.plain_text()
    assert dialog.isVisible() and not dialog.isModal()
    assert f"nodetrainer  {__version__}" in text
    assert f"Python       {sys.version.split()[0]}" in text
    import PySide6

    assert f"PySide6      {PySide6.__version__}" in text
    assert "NodeGraphQt" in text and "torch" in text and "diffusers" in text
    if not had_torch:
        assert "torch" not in sys.modules  # the editor never imports it


def test_quick_reference_shows_the_readme_sections(window):
    dialog = window.show_quick_reference()
    text = dialog.plain_text()
    assert "Command line" in text and "nodetrainer run GRAPH" in text
    assert "nodetrainer edit" in text
    assert "Writing a node" not in text  # only the quick-reference sections
    assert dialog.windowTitle().startswith("Quick Reference")


def test_markdown_sections_skip_code_fences_and_images(tmp_path):
    text = ("# Title\nintro\n## Editor\n![shot](a.png)\nuse it\n```text\n## not a heading\n```\n"
            "## Other\nno\n## Command line\nrun it\n")
    assert markdown_sections(text, ("Editor", "Command line")) == [
        "## Editor\nuse it\n```text\n## not a heading\n```", "## Command line\nrun it"]
    assert "cannot be read" in quick_reference(tmp_path / "missing.md")
    (tmp_path / "r.md").write_text("# x\n## Else\n")
    assert "has no section" in quick_reference(tmp_path / "r.md")
    assert "## Command line" in quick_reference(ROOT / "README.md")


def test_node_reference_describes_the_selected_node(window):
    dialog = window.show_node_reference()
    assert "No node is selected" in dialog.plain_text()
    window.doc.add_node("test.lora", (0, 0), node_id="lora")
    window.doc.add_node("test.train", (300, 0), node_id="train")
    window.canvas.select(["lora"], center=False)
    text = window.show_node_reference().plain_text()
    assert text == "node 'lora'\n\n" + describe_text(window.registry.get("test.lora"))
    window.canvas.select(["lora", "train"], center=False)
    assert "2 nodes are selected" in window.show_node_reference().plain_text()


def test_node_reference_of_a_type_picked_in_the_library(window):
    window.canvas.select([], center=False)
    tree = window.library.tree
    item = next(tree.topLevelItem(i).child(j) for i in range(tree.topLevelItemCount())
                for j in range(tree.topLevelItem(i).childCount())
                if tree.topLevelItem(i).child(j).data(0, 256) == "test.train")
    tree.setCurrentItem(item)
    assert window.show_node_reference().plain_text() == describe_text(window.registry.get("test.train"))


def test_node_reference_of_an_unknown_type(window, tmp_path):
    from runtime.paths import GRAPHS_DIR

    path = tmp_path / "missing.yaml"
    path.write_text((GRAPHS_DIR / "example-manifest.yaml").read_text().replace("util.write_manifest@1",
                                                                                "acme.uploader@2"))
    assert window.open_file(path)
    window.canvas.select(["manifest"], center=False)
    text = window.show_node_reference().plain_text()
    assert "acme.uploader" in text and "no installed node or pack" in text
