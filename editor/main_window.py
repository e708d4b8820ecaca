"""The editor's main window: canvas, node library, properties, problems, run panel, menus."""

from __future__ import annotations

import os
import tempfile
from html import escape
from pathlib import Path

from PySide6 import QtCore, QtGui, QtWidgets

from runtime.backups import list_backups, read_meta, run_folders
from runtime.errors import GraphFileError, Problem
from runtime.paths import ROOT, presets
from runtime.registry import Registry, default_registry
from runtime.validate import validate

from .canvas import Canvas
from .document import Document
from . import import_onetrainer as onetrainer_import
from .library import NodeLibrary, NodeSearch
from .preview import PreviewDialog, can_preview
from .properties import PropertiesPanel
from . import tooltips
from .run_panel import RunPanel
from .run_state import BUTTON_COMMANDS, command_nodes
from .validation_panel import LiveValidator, ProblemsPanel, problems_by_node

MAX_RECENT = 10
SNAPSHOT_SUFFIX = ".unsaved-run"
FILE_FILTER = "Graph files (*.yaml *.yml);;All files (*)"
#: a window narrower or lower than this gets the small window's dock layout
SMALL_BELOW = QtCore.QSize(1200, 700)
#: in a small window: the side docks' share of the window's width, the bottom docks' of its height
SMALL_SIDE, SMALL_BOTTOM = 0.34, 0.28
#: settings keys of the dock layouts of a big and of a small window
STATE_KEYS = {False: "window_state", True: "window_state_small"}


def is_small(size: QtCore.QSize) -> bool:
    """Whether a window of this size needs the small window's dock layout (the default one would
    leave the canvas less than half of it)."""
    return size.width() < SMALL_BELOW.width() or size.height() < SMALL_BELOW.height()


def scrolling(widget: QtWidgets.QWidget) -> QtWidgets.QScrollArea:
    """``widget`` in a frameless scroll area: its dock can then be smaller than the widget's minimum
    size (the run panel's is 640x220), as a small window needs."""
    area = QtWidgets.QScrollArea()
    area.setWidget(widget)
    area.setWidgetResizable(True)
    area.setFrameShape(QtWidgets.QFrame.Shape.NoFrame)
    return area


class MainWindow(QtWidgets.QMainWindow):
    def __init__(self, registry: Registry | None = None, settings: QtCore.QSettings | None = None,
                 runs_dir: Path | None = None):
        super().__init__()
        self.registry = registry or default_registry()
        self.settings = settings or QtCore.QSettings("nodetrainer", "editor")
        self.runs_dir = Path(runs_dir) if runs_dir else Path(self.settings.value("runs_dir", str(Path.cwd() / "runs")))
        self.doc: Document | None = None
        self.undo_group = QtGui.QUndoGroup(self)

        self.canvas = Canvas(self)
        self.setCentralWidget(self.canvas.widget)
        self.library = NodeLibrary(self.registry)
        self.properties = PropertiesPanel()
        self.problems = ProblemsPanel()
        self.run_panel = RunPanel()
        self.search = NodeSearch(self.registry, self)
        self.validator = LiveValidator(parent=self)
        self.problem_count = QtWidgets.QLabel()
        self.statusBar().addPermanentWidget(self.problem_count)
        self._run_problems: dict[str, list[tuple[str, str]]] = {}
        #: the warnings of the OneTrainer import that made this document, until it is saved
        self._import_problems: list[Problem] = []
        self._run_doc: Document | None = None  # the document whose run the run panel shows
        self.help_dialog: HelpDialog | None = None
        self._drag_status = ""  # the drag hint the status bar shows, if it still shows it

        self.library_dock = self._dock("Nodes", self.library)
        self.properties_dock = self._dock("Properties", self.properties)
        self.problems_dock = self._dock("Problems", self.problems)
        self.run_dock = self._dock("Run", scrolling(self.run_panel))
        self.compact = False  # the dock layout of a small window (see is_small)
        self._place_docks()

        self._make_actions()
        self._make_menus()
        self._wire()
        self.set_document(Document(self.registry))
        self.resize(1400, 900)
        geometry = self.settings.value("geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        #: the last dock layout of a big and of a small window (a user's, to restore when the window
        #: is that size again); None: the default one
        self._dock_states = {False: self.settings.value(STATE_KEYS[False]),
                             True: self.settings.value(STATE_KEYS[True])}
        if self._dock_states[False] is not None:
            self.restoreState(self._dock_states[False])
        for dock in self.docks():
            dock.installEventFilter(self)  # see eventFilter

    def _dock(self, title: str, widget: QtWidgets.QWidget) -> QtWidgets.QDockWidget:
        dock = QtWidgets.QDockWidget(title, self)
        dock.setObjectName(title.lower() + "_dock")
        dock.setWidget(widget)
        return dock

    def docks(self) -> list[QtWidgets.QDockWidget]:
        return [self.library_dock, self.properties_dock, self.problems_dock, self.run_dock]

    # -- dock layout -------------------------------------------------------------------------
    def _place_docks(self) -> None:
        """The default dock layout for the window's size class: node library left, properties right,
        problems and run tabbed under the canvas; in a small window library and properties share one
        tab group on the right, and the docks take fixed fractions of the window."""
        Area, H, V = QtCore.Qt.DockWidgetArea, QtCore.Qt.Orientation.Horizontal, QtCore.Qt.Orientation.Vertical
        self.addDockWidget(Area.RightDockWidgetArea if self.compact else Area.LeftDockWidgetArea, self.library_dock)
        self.addDockWidget(Area.RightDockWidgetArea, self.properties_dock)
        self.addDockWidget(Area.BottomDockWidgetArea, self.problems_dock)
        self.addDockWidget(Area.BottomDockWidgetArea, self.run_dock)
        self.tabifyDockWidget(self.problems_dock, self.run_dock)
        self.problems_dock.raise_()
        if self.compact:
            self.tabifyDockWidget(self.properties_dock, self.library_dock)
            self.library_dock.raise_()
            self.resizeDocks([self.properties_dock], [round(self.width() * SMALL_SIDE)], H)
            self.resizeDocks([self.problems_dock], [round(self.height() * SMALL_BOTTOM)], V)
        else:
            self.resizeDocks([self.library_dock, self.properties_dock], [230, 360], H)
            self.resizeDocks([self.problems_dock], [280], V)

    def eventFilter(self, watched: QtCore.QObject, event: QtCore.QEvent) -> bool:
        # A dock was resized (a separator drag), shown or hidden: remember the arrangement while it is
        # the one of this window size. When the window shrinks past SMALL_BELOW, Qt squeezes the docks
        # before resizeEvent runs; that squeezed state is not the user's and is not kept.
        if (event.type() in (QtCore.QEvent.Type.Resize, QtCore.QEvent.Type.Show, QtCore.QEvent.Type.Hide)
                and watched in self.docks() and is_small(self.size()) == self.compact):
            self._dock_states[self.compact] = self.saveState()
        return super().eventFilter(watched, event)

    def resizeEvent(self, event: QtGui.QResizeEvent) -> None:
        super().resizeEvent(event)
        if is_small(event.size()) != self.compact:
            self._switch_dock_layout(not self.compact)

    def _switch_dock_layout(self, compact: bool) -> None:
        """Going from a big window to a small one or back: bring back the docks as they were last
        arranged for the new size class (or its default). Docks the user closed stay closed."""
        live = self.isVisible()  # not the first layout of the window
        closed = [d for d in self.docks() if not d.toggleViewAction().isChecked()]
        self.compact = compact
        state = self._dock_states[compact]
        if state is None or not self.restoreState(state):
            self._place_docks()
        if live:
            for dock in self.docks():
                dock.setVisible(dock not in closed)

    # -- actions ---------------------------------------------------------------------
    def _action(self, text: str, slot, shortcut=None, tip: str = "", canvas_only: bool = False) -> QtGui.QAction:
        action = QtGui.QAction(text, self)
        if shortcut is not None:
            keys = shortcut if isinstance(shortcut, list) else [shortcut]
            action.setShortcuts([QtGui.QKeySequence(k) for k in keys])
        if tip:
            action.setStatusTip(tip)
            action.setToolTip(tip)
        action.triggered.connect(lambda _checked=False: slot())
        if canvas_only:  # keep Delete, Ctrl+C... for text fields when they have focus
            action.setShortcutContext(QtCore.Qt.ShortcutContext.WidgetWithChildrenShortcut)
            self.canvas.widget.addAction(action)
        else:
            self.addAction(action)
        return action

    def _make_actions(self) -> None:
        K = QtGui.QKeySequence.StandardKey
        self.act_new = self._action("&New", self.new_graph, K.New, "Start an empty graph")
        self.act_open = self._action("&Open\u2026", self.open_dialog, K.Open, "Open a graph file")
        self.act_import_onetrainer = self._action(
            "&Import OneTrainer config\u2026", self.import_onetrainer_dialog,
            tip="Open a OneTrainer training config (JSON) as a new unsaved graph (nodetrainer import onetrainer)")
        self.act_save = self._action("&Save", self.save, K.Save, "Save the graph")
        self.act_save_as = self._action("Save &As\u2026", self.save_as, K.SaveAs, "Save under a new name")
        self.act_quit = self._action("&Quit", self.close, K.Quit)
        self.act_undo = self.undo_group.createUndoAction(self, "&Undo")
        self.act_undo.setShortcuts(K.Undo)
        self.act_redo = self.undo_group.createRedoAction(self, "&Redo")
        self.act_redo.setShortcuts(K.Redo)
        self.addActions([self.act_undo, self.act_redo])
        # the toolbar's own Undo/Redo keep fixed texts, so its buttons never move; what they undo is in
        # their tooltips (and in the Edit menu, whose actions above carry it in their texts)
        self.tb_undo = self._toolbar_twin("Undo", self.undo_group.undo, self.undo_group.canUndoChanged,
                                          self.undo_group.undoTextChanged, self.act_undo)
        self.tb_redo = self._toolbar_twin("Redo", self.undo_group.redo, self.undo_group.canRedoChanged,
                                          self.undo_group.redoTextChanged, self.act_redo)
        self.act_cut = self._action("Cu&t", self.cut, K.Cut, canvas_only=True)
        self.act_copy = self._action("&Copy", self.copy, K.Copy, canvas_only=True)
        self.act_paste = self._action("&Paste", self.paste, K.Paste, canvas_only=True)
        self.act_duplicate = self._action("D&uplicate", self.duplicate, "Ctrl+D", canvas_only=True)
        self.act_delete = self._action("&Delete", self.delete_selection, [K.Delete, "Backspace"], canvas_only=True)
        self.act_select_all = self._action("Select &All", self.select_all, K.SelectAll, canvas_only=True)
        self.act_search = self._action("Add &Node\u2026", self.open_search_at_center, "Tab",
                                       "Search node types and add one (Tab on the canvas)")
        self.act_search.setShortcutContext(QtCore.Qt.ShortcutContext.WidgetShortcut)
        self.act_note = self._action("Add N&ote", self.add_note, "Ctrl+B", "Add a note (backdrop) around the selection")
        self.act_layout = self._action("Auto &Layout", self.auto_layout, "Ctrl+L", "Arrange the nodes by dependency")
        self.act_fit = self._action("&Fit All", self.canvas.fit, "F", canvas_only=True)
        self.act_validate = self._action("&Validate", self.validate_now, "F7", "Check the whole graph now")
        self.act_run = self._action("&Run", self.run_graph, "F5", "Run the graph in a separate process")
        self.act_stop = self._action("S&top", self.run_panel.stop, "Shift+F5", "Stop after the current step")
        self.act_preview = self._action("&Preview Data\u2026", self.preview_selected, "Ctrl+P",
                                        "Show the first samples a data node produces")
        self.act_runs_dir = self._action("Runs &Folder\u2026", self.choose_runs_dir,
                                         tip="Where runs started from the editor write their workspaces")
        self.act_resume = self._action("Resume &Last", self.resume_last, tip="Continue the newest stopped run "
                                       "of this graph from its backup (nodetrainer run GRAPH --resume last)")
        self.act_about = self._action("&About nodetrainer", self.show_about, tip="Versions of nodetrainer and "
                                      "the libraries it runs on")
        self.act_quick_ref = self._action("&Quick Reference", self.show_quick_reference, K.HelpContents,
                                          "The editor and command-line sections of the README")
        self.act_node_ref = self._action("&Node Reference", self.show_node_reference, "Shift+F1",
                                         "What the selected node does: its ports and params "
                                         "(nodetrainer nodes --describe TYPE)")

    def _toolbar_twin(self, text: str, slot, enabled_signal, text_signal, menu_action) -> QtGui.QAction:
        """A fixed-text copy of an undo-group action for the toolbar; its tooltip says what it does."""
        action = QtGui.QAction(text, self)
        action.triggered.connect(lambda _checked=False: slot())
        enabled_signal.connect(action.setEnabled)
        keys = menu_action.shortcut().toString(QtGui.QKeySequence.SequenceFormat.NativeText)

        def retip(what: str) -> None:
            tip = f"{text} {what}" if what else f"Nothing to {text.lower()}"
            action.setToolTip(f"{tip} ({keys})" if keys else tip)
            action.setStatusTip(tip)

        text_signal.connect(retip)
        action.setEnabled(False)
        retip("")
        return action

    def _make_menus(self) -> None:
        mb = self.menuBar()
        file = mb.addMenu("&File")
        file.addAction(self.act_new)
        self.preset_menu = file.addMenu("New from &Preset")
        self.preset_menu.aboutToShow.connect(self._fill_presets)
        file.addAction(self.act_open)
        self.recent_menu = file.addMenu("Open &Recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        file.addAction(self.act_import_onetrainer)
        file.addSeparator()
        file.addActions([self.act_save, self.act_save_as])
        file.addSeparator()
        file.addAction(self.act_quit)
        edit = mb.addMenu("&Edit")
        edit.addActions([self.act_undo, self.act_redo])
        edit.addSeparator()
        edit.addActions([self.act_cut, self.act_copy, self.act_paste, self.act_duplicate, self.act_delete,
                         self.act_select_all])
        edit.addSeparator()
        edit.addActions([self.act_search, self.act_note, self.act_layout])
        view = mb.addMenu("&View")
        view.addAction(self.act_fit)
        view.addSeparator()
        for dock in (self.library_dock, self.properties_dock, self.problems_dock, self.run_dock):
            view.addAction(dock.toggleViewAction())
        graph = mb.addMenu("&Graph")
        graph.addActions([self.act_validate, self.act_run, self.act_stop, self.act_preview])
        graph.insertAction(self.act_stop, self.act_resume)
        graph.addSeparator()
        graph.addAction(self.act_runs_dir)
        help_menu = mb.addMenu("&Help")
        help_menu.addActions([self.act_quick_ref, self.act_node_ref])
        help_menu.addSeparator()
        help_menu.addAction(self.act_about)

        tb = self.addToolBar("Main")
        tb.setObjectName("main_toolbar")
        tb.addActions([self.act_new, self.act_open, self.act_save])
        tb.addSeparator()
        tb.addActions([self.tb_undo, self.tb_redo])
        tb.addSeparator()
        tb.addActions([self.act_search, self.act_note, self.act_layout])
        tb.addSeparator()
        tb.addActions([self.act_validate, self.act_run, self.act_stop, self.act_preview])

        ctx = self.canvas.context_menu()
        ctx.addActions([self.act_undo, self.act_redo])
        ctx.addSeparator()
        ctx.addActions([self.act_search, self.act_note, self.act_layout, self.act_fit])
        ctx.addSeparator()
        ctx.addActions([self.act_copy, self.act_paste, self.act_duplicate, self.act_delete])
        ctx.addSeparator()
        ctx.addAction(self.act_preview)

    def _wire(self) -> None:
        self.canvas.status.connect(lambda text: self.statusBar().showMessage(text, 10000))
        self.canvas.drag_message.connect(self._on_drag_message)
        self.canvas.selection_changed.connect(self._on_selection)
        self.canvas.tab_search.connect(self.open_search)
        self.canvas.node_activated.connect(lambda _nid: self.properties_dock.raise_())
        self.search.chosen.connect(lambda type_id, pos: self.canvas.add_node(type_id, (pos.x(), pos.y())))
        self.library.add_requested.connect(lambda type_id: self.canvas.add_node(type_id))
        self.problems.node_clicked.connect(lambda nid: self.canvas.select([nid], center=True))
        self.validator.validated.connect(self._on_validated)
        self.run_panel.run_requested.connect(self.run_graph)
        self.run_panel.resume_requested.connect(self.resume_last)
        self.run_panel.providers = self._command_providers()
        self.run_panel.node_states_changed.connect(self._on_run_states)
        self.run_panel.node_failed.connect(self._on_node_failed)
        self.run_panel.finished.connect(self._on_run_finished)

    def _on_drag_message(self, text: str) -> None:
        """Show why the port under a dragged link refuses it (or what the drop replaces); '' clears
        the hint, but not a message shown since."""
        bar = self.statusBar()
        if text:
            bar.showMessage(text)  # for as long as the link is held there
        elif self._drag_status and bar.currentMessage() == self._drag_status:
            bar.clearMessage()
        self._drag_status = text

    # -- document ----------------------------------------------------------------------
    def set_document(self, doc: Document) -> None:
        if self.doc is not None:
            self.doc.undo.cleanChanged.disconnect(self._update_title)
            self.undo_group.removeStack(self.doc.undo)
            self.doc.deleteLater()
        self.doc = doc
        doc.setParent(self)
        self.undo_group.addStack(doc.undo)
        self.undo_group.setActiveStack(doc.undo)
        doc.undo.cleanChanged.connect(self._update_title)
        doc.meta_changed.connect(self.update_resume)
        self._run_problems = {}
        self._import_problems = []
        self.canvas.set_document(doc)
        self.properties.set_document(doc)
        self.validator.set_document(doc)
        self.canvas.fit()
        self._update_title()
        self.run_panel.show_graph(doc.display_name)
        self.update_resume()

    def _update_title(self, *_args) -> None:
        mark = " *" if self.doc.modified else ""
        self.setWindowTitle(f"{self.doc.display_name}{mark} \u2014 nodetrainer")

    def maybe_save(self) -> bool:
        """True when it is fine to drop the current document (saved, discarded, or unchanged)."""
        if self.doc is None or not self.doc.modified:
            return True
        answer = QtWidgets.QMessageBox.question(
            self, "Unsaved changes", f"Save the changes to {self.doc.display_name}?",
            QtWidgets.QMessageBox.StandardButton.Save | QtWidgets.QMessageBox.StandardButton.Discard
            | QtWidgets.QMessageBox.StandardButton.Cancel, QtWidgets.QMessageBox.StandardButton.Save)
        if answer == QtWidgets.QMessageBox.StandardButton.Save:
            return self.save()
        return answer == QtWidgets.QMessageBox.StandardButton.Discard

    def new_graph(self) -> None:
        if self.maybe_save():
            self.set_document(Document(self.registry))

    def new_from_preset(self, path: str | Path) -> bool:
        if not self.maybe_save():
            return False
        return self._load(Path(path), preset=True)

    def open_dialog(self) -> None:
        start = str(self.doc.file_path.parent) if self.doc and self.doc.file_path else str(Path.cwd())
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Open graph", start, FILE_FILTER)
        if path:
            self.open_file(path)

    def open_file(self, path: str | Path) -> bool:
        if not self.maybe_save():
            return False
        return self._load(Path(path), preset=False)

    def _load(self, path: Path, preset: bool) -> bool:
        try:
            doc = Document.from_preset(path, self.registry) if preset else Document.open(path, self.registry)
        except GraphFileError as e:
            QtWidgets.QMessageBox.critical(self, "Cannot open graph", str(e))
            self.statusBar().showMessage(f"cannot open {path}", 10000)
            return False
        self.set_document(doc)
        if not preset:
            self._add_recent(path)
        notes = list(doc.graph.upgrades)
        missing = sorted({e.type for e in doc.graph.nodes.values() if self.registry.get(e.type) is None})
        if missing:
            notes.append("node type(s) not installed: " + ", ".join(missing) +
                         " \u2014 shown as red placeholders; their data is kept and saved unchanged")
            self.problems_dock.raise_()
        self.statusBar().showMessage("; ".join(notes) if notes else f"opened {path}", 15000)
        return True

    def import_onetrainer_dialog(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Import OneTrainer config", str(Path.cwd()),
                                                        onetrainer_import.FILE_FILTER)
        if path:
            self.import_onetrainer(path)

    def import_onetrainer(self, path: str | Path, concepts: str | Path | None = None,
                          samples: str | Path | None = None) -> bool:
        """Open OneTrainer config ``path`` as a new unsaved graph (``concepts``/``samples``: files that
        replace the config's own); what the import could not express shows in the problems panel as
        warnings until the graph is saved."""
        try:
            doc, problems = onetrainer_import.load(path, self.registry, concepts, samples)
        except ValueError as e:
            QtWidgets.QMessageBox.critical(self, "Cannot import OneTrainer config", str(e))
            self.statusBar().showMessage(f"cannot import {path}", 10000)
            return False
        if not self.maybe_save():
            doc.deleteLater()
            return False
        self.set_document(doc)
        self._import_problems = problems
        self.validator.validate_now()
        if problems:
            self.problems_dock.raise_()
        self.statusBar().showMessage(onetrainer_import.summary(path, doc, problems), 15000)
        return True

    def save(self) -> bool:
        if self.doc.file_path is None:
            return self.save_as()
        return self._save_to(self.doc.file_path)

    def save_as(self) -> bool:
        start = str(self.doc.file_path or (Path.cwd() / f"{self.doc.graph.name}.yaml"))
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Save graph as", start, FILE_FILTER)
        if not path:
            return False
        if not Path(path).suffix:
            path += ".yaml"
        return self._save_to(Path(path))

    def _save_to(self, path: Path) -> bool:
        try:
            self.doc.save(path)
        except OSError as e:
            QtWidgets.QMessageBox.critical(self, "Cannot save", f"{path}: {e}")
            return False
        self._add_recent(path)
        self._update_title()
        if self._import_problems:  # the saved graph is what it is now: the import's warnings go
            self._import_problems = []
            self.validator.validate_now()
        self.statusBar().showMessage(f"saved {path}", 5000)
        return True

    # -- recent files and presets ------------------------------------------------------------
    def recent_files(self) -> list[str]:
        value = self.settings.value("recent_files", [])
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in (value or [])]

    def _add_recent(self, path: Path) -> None:
        p = str(Path(path).resolve())
        items = [p] + [r for r in self.recent_files() if r != p]
        self.settings.setValue("recent_files", items[:MAX_RECENT])

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        for p in self.recent_files():
            action = self.recent_menu.addAction(p)
            action.setEnabled(Path(p).exists())
            action.triggered.connect(lambda _=False, p=p: self.open_file(p))
        if not self.recent_menu.actions():
            self.recent_menu.addAction("(none)").setEnabled(False)

    def _fill_presets(self) -> None:
        self.preset_menu.clear()
        for p in presets():
            self.preset_menu.addAction(p.stem).triggered.connect(lambda _=False, p=p: self.new_from_preset(p))
        if not self.preset_menu.actions():
            self.preset_menu.addAction("(no presets in graphs/)").setEnabled(False)

    # -- editing ---------------------------------------------------------------------------
    def _on_selection(self) -> None:
        nodes = self.canvas.selected_node_ids()
        notes = self.canvas.selected_note_indexes()
        if len(nodes) == 1:
            self.properties.show_selection(nodes[0])
        elif not nodes and len(notes) == 1:
            self.properties.show_selection(None, notes[0])
        else:
            self.properties.show_selection(None)

    def copy(self) -> None:
        ids = self.canvas.selected_node_ids()
        if ids:
            QtWidgets.QApplication.clipboard().setText(self.doc.copy_text(ids))

    def cut(self) -> None:
        self.copy()
        self.delete_selection()

    def paste(self) -> None:
        ids = self.doc.paste_text(QtWidgets.QApplication.clipboard().text())
        if ids:
            self.canvas.select(ids, center=False)
        else:
            self.statusBar().showMessage("the clipboard holds no nodes", 5000)

    def duplicate(self) -> None:
        ids = self.canvas.selected_node_ids()
        if ids:
            self.canvas.select(self.doc.paste_text(self.doc.copy_text(ids)), center=False)

    def delete_selection(self) -> None:
        self.doc.remove(self.canvas.selected_node_ids(), self.canvas.selected_note_indexes())

    def select_all(self) -> None:
        self.canvas.select(list(self.doc.graph.nodes), center=False)

    def open_search(self, scene_pos: QtCore.QPointF) -> None:
        view = self.canvas.viewer
        global_pos = view.mapToGlobal(view.mapFromScene(scene_pos))
        self.search.open_at(global_pos, scene_pos)

    def open_search_at_center(self) -> None:
        view = self.canvas.viewer
        self.open_search(view.mapToScene(view.viewport().rect().center()))

    def add_note(self) -> None:
        ids = self.canvas.selected_node_ids()
        if ids:
            rects = [self.canvas.views[n].view.sceneBoundingRect() for n in ids]
            box = rects[0]
            for r in rects[1:]:
                box = box.united(r)
            box = box.adjusted(-30, -60, 30, 30)
        else:
            c = self.canvas.viewer.mapToScene(self.canvas.viewer.viewport().rect().center())
            box = QtCore.QRectF(c.x() - 150, c.y() - 100, 300, 200)
        self.doc.add_note((box.x(), box.y(), box.width(), box.height()), "Note", "")

    def auto_layout(self) -> None:
        ids = self.canvas.selected_node_ids()
        self.canvas.auto_layout(ids if len(ids) > 1 else None)
        self.canvas.fit()

    # -- validation ------------------------------------------------------------------------
    def validate_now(self) -> None:
        result = self.validator.validate_now()
        self.problems_dock.raise_()
        errors = len(result.errors)
        self.statusBar().showMessage("the graph is valid" if not errors else f"{errors} error(s)", 5000)

    def _on_validated(self, result) -> None:
        problems = list(result.problems) + self._import_problems
        self.problems.set_problems(problems)
        badges = problems_by_node(problems)
        for nid, items in self._run_problems.items():
            badges.setdefault(nid, []).extend(items)
        self.canvas.set_problems(badges)
        errors, warnings = self.problems.counts()
        self.problem_count.setText(f"{errors} error(s), {warnings} warning(s)" if errors or warnings else "valid")

    # -- runs ----------------------------------------------------------------------------
    def run_graph(self, resume: str | None = None) -> bool:
        """Validate and run the graph (``resume``: a ``--resume`` value, e.g. ``last``)."""
        if self.run_panel.running:
            return False
        check = validate(self.doc.graph, self.registry, for_run=True)
        if not check.ok:
            self.problems.set_problems(list(check.problems) + self._import_problems)
            self.problems_dock.raise_()
            self.statusBar().showMessage(f"cannot run: {len(check.errors)} problem(s); see Problems", 10000)
            return False
        graph_file, cleanup = self._file_to_run()
        self._run_problems = {}
        self._run_doc = self.doc
        self.run_dock.raise_()
        self.canvas.set_run_states({n: "pending" for n in check.order})
        self.run_panel.start(graph_file, self.runs_dir, cleanup, commands=command_nodes(check.order, self.doc.spec),
                             resume=resume, name=self.doc.display_name)
        self.update_resume()
        return True

    def resume_last(self) -> bool:
        """Continue the newest stopped run of this graph from its backup, as ``--resume last`` does."""
        if self.run_panel.running:
            return False
        if self.newest_backup() is None:
            self.statusBar().showMessage(self._no_backup_text(), 10000)
            self.update_resume()
            return False
        ranks = backup_ranks(self.newest_backup())
        if ranks > 1 or self.run_panel.processes.value() > 1:
            # a backup resumes on the number of processes that wrote it (its data position is per rank)
            self.run_panel.processes.setMaximum(max(ranks, self.run_panel.processes.maximum()))
            self.run_panel.processes.setValue(ranks)
        return self.run_graph(resume="last")

    def newest_backup(self) -> Path | None:
        """The newest backup of a run of this graph (by its ``name:``) in the runs folder, by its meta
        only (the run itself checks that it is intact and says so if not)."""
        name = self.doc.graph.name
        for workspace in reversed(run_folders(self.runs_dir, name)):
            backups = list_backups(workspace)
            if backups:
                return backups[-1]
        return None

    def _no_backup_text(self) -> str:
        return (f"no backup of graph {self.doc.graph.name!r} in {self.runs_dir} yet: a run writes one when it "
                "is stopped (or by Backup now, or a backup hook)")

    def update_resume(self) -> None:
        """Enable Resume last when the runs folder holds a backup of this graph."""
        if self.doc is None:
            return
        backup = self.newest_backup()
        tip = (f"Continue the newest stopped run of {self.doc.graph.name!r} from {backup}" if backup is not None
               else "Disabled: " + self._no_backup_text())
        self.run_panel.set_resume(backup is not None, tip)
        self.act_resume.setEnabled(backup is not None and not self.run_panel.running)
        self.act_resume.setToolTip(tip)

    def _command_providers(self) -> dict[str, list[str]]:
        """Command -> the installed node types that act on it (for the disabled buttons' hints)."""
        out: dict[str, list[str]] = {c: [] for c in BUTTON_COMMANDS}
        for spec in self.registry.specs():
            for command in spec.commands:
                if command in out:
                    out[command].append(f"{spec.title} ({spec.type_id})")
        return out

    def _file_to_run(self) -> tuple[Path, list[Path]]:
        """The saved file if it is up to date, else a snapshot beside it (so relative paths still work)."""
        if self.doc.file_path is not None and not self.doc.modified:
            return self.doc.file_path, []
        base = self.doc.graph.base_dir
        stem = (self.doc.file_path or self.doc.graph.path or Path("untitled")).stem
        text = self.doc.text()
        # not *.yaml, so preset listings never see it while it exists
        try:
            fd, name = tempfile.mkstemp(prefix=f".{stem}-", suffix=SNAPSHOT_SUFFIX, dir=base)
        except OSError:
            fd, name = tempfile.mkstemp(prefix=f"{stem}-", suffix=SNAPSHOT_SUFFIX)
            self.statusBar().showMessage(f"{base} is not writable: running a copy from {Path(name).parent}", 10000)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        return Path(name), [Path(name)]

    def choose_runs_dir(self) -> None:
        chosen = QtWidgets.QFileDialog.getExistingDirectory(self, "Runs folder", str(self.runs_dir))
        if chosen:
            self.runs_dir = Path(chosen)
            self.settings.setValue("runs_dir", chosen)
            self.statusBar().showMessage(f"runs go to {chosen}", 5000)
            self.update_resume()

    def _on_run_states(self, states: dict) -> None:
        if self.doc is self._run_doc:  # not onto the nodes of a graph opened since
            self.canvas.set_run_states(states)

    def _on_node_failed(self, node_id: str, message: str) -> None:
        if self.doc is not self._run_doc:
            return
        self._run_problems.setdefault(node_id, []).append(("error", message))
        if self.validator.last is not None:
            self._on_validated(self.validator.last)
        self.canvas.select([node_id], center=True)
        self.statusBar().showMessage(message, 20000)

    def _on_run_finished(self, status: str) -> None:
        self.statusBar().showMessage(f"run {status}", 10000)
        self.update_resume()
        if self.doc is not self._run_doc:
            name = escape(self.run_panel.graph_name)
            self.run_panel.title.setText(f"<b>{name}</b> (its graph is no longer open)")

    # -- help ----------------------------------------------------------------------------
    def _show_help(self, title: str, text: str, markdown: bool = False) -> HelpDialog:
        if self.help_dialog is None:
            self.help_dialog = HelpDialog(self)
        self.help_dialog.show_text(title, text, markdown)
        return self.help_dialog

    def show_about(self) -> HelpDialog:
        import NodeGraphQt
        import PySide6

        qt = {"PySide6": f"{PySide6.__version__} (Qt {QtCore.qVersion()})",
              "NodeGraphQt": getattr(NodeGraphQt, "__version__", "") or "installed"}
        rows = tooltips.about_versions(qt)
        text = ("nodetrainer: diffusion-model training pipelines as node graphs.\n\n"
                + "\n".join(f"{name:<12} {version}" for name, version in rows)
                + f"\n\nInstalled at {ROOT}")
        return self._show_help("About nodetrainer", text)

    def show_quick_reference(self) -> HelpDialog:
        return self._show_help("Quick Reference", tooltips.quick_reference(ROOT / "README.md"), markdown=True)

    def show_node_reference(self) -> HelpDialog:
        """``nodetrainer nodes --describe`` for the selected node (or the node type picked in the library)."""
        ids = self.canvas.selected_node_ids()
        if len(ids) == 1:
            entry = self.doc.graph.nodes[ids[0]]
            text = tooltips.node_reference(self.doc.spec(ids[0]), ids[0], entry.type)
        elif self.library.selected_type() and self.registry.get(self.library.selected_type()):
            text = tooltips.node_reference(self.registry.get(self.library.selected_type()))
        elif ids:
            text = f"{len(ids)} nodes are selected: select one to see its reference."
        else:
            text = tooltips.node_reference(None)
        return self._show_help("Node Reference", text)

    # -- data preview ------------------------------------------------------------------------
    def preview_selected(self) -> None:
        ids = self.canvas.selected_node_ids()
        if len(ids) != 1:
            self.statusBar().showMessage("select one data node to preview", 5000)
            return
        why = can_preview(self.doc, ids[0])
        if why:
            self.statusBar().showMessage(why, 8000)
            return
        dialog = PreviewDialog(self.doc, ids[0], self)
        dialog.show()
        dialog.start()

    # -- closing -----------------------------------------------------------------------------
    def closeEvent(self, event: QtGui.QCloseEvent) -> None:
        if not self.maybe_save():
            event.ignore()
            return
        if self.run_panel.running:
            self.run_panel.process.stop(grace_ms=3000)
            self.run_panel.process.proc.waitForFinished(10000)
        self.settings.setValue("geometry", self.saveGeometry())
        self._dock_states[self.compact] = self.saveState()
        for compact, key in STATE_KEYS.items():
            if self._dock_states[compact] is not None:
                self.settings.setValue(key, self._dock_states[compact])
        self.settings.sync()
        event.accept()


class HelpDialog(QtWidgets.QDialog):
    """A non-modal window for Help texts (About, the quick reference, a node's reference)."""

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.resize(760, 560)
        self.browser = QtWidgets.QTextBrowser()
        self.browser.setOpenLinks(False)  # README links are relative to the repository, not to this text
        self.browser.anchorClicked.connect(self._open_link)
        buttons = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.close)
        lay = QtWidgets.QVBoxLayout(self)
        lay.addWidget(self.browser, 1)
        lay.addWidget(buttons)

    def show_text(self, title: str, text: str, markdown: bool = False) -> None:
        self.setWindowTitle(f"{title} \u2014 nodetrainer")
        if markdown:
            self.browser.setMarkdown(text)
            self.browser.setFont(QtWidgets.QApplication.font())
        else:
            self.browser.setPlainText(text)
            self.browser.setFont(QtGui.QFontDatabase.systemFont(QtGui.QFontDatabase.SystemFont.FixedFont))
        self.text = text
        self.show()
        self.raise_()

    def plain_text(self) -> str:
        return self.browser.toPlainText()

    @staticmethod
    def _open_link(url: QtCore.QUrl) -> None:
        if url.isRelative():
            url = QtCore.QUrl.fromLocalFile(str(ROOT / url.path()))
        QtGui.QDesktopServices.openUrl(url)


def backup_ranks(backup: Path) -> int:
    """How many processes wrote ``backup`` (its meta's ``ranks``; 1 for older backups)."""
    ranks = (read_meta(backup) or {}).get("ranks", 1)
    return ranks if isinstance(ranks, int) and not isinstance(ranks, bool) and 1 <= ranks <= 1024 else 1
