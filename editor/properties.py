"""The properties panel, generated from param specs.

Top to bottom: the graph's inputs (the preset's knobs, edited as defaults),
then the selected node's params (or the graph's name and description, or the
selected note). Every row edits the document; rows refresh when the document
changes, so undo shows at once.
"""

from __future__ import annotations

from html import escape
from typing import Callable

from PySide6 import QtCore, QtWidgets

from runtime.graph import GraphInput
from runtime.params import MISSING, Param

from . import tooltips
from .document import Document
from .param_widgets import LineEditor, ValueEditor, coerce_text, is_reference, make_editor


def input_param(gi: GraphInput) -> Param:
    """A graph input seen as a param, so it gets the same editor."""
    p = Param(gi.kind(), gi.default if gi.has_default else MISSING, min=gi.min, max=gi.max, doc=gi.doc)
    p.name = gi.name
    return p


class ParamRow(QtWidgets.QWidget):
    """Label, editor (or a ``${input}`` reference field) and a menu, for one param."""

    committed = QtCore.Signal(str, object)  # param name, value (MISSING = reset)

    def __init__(self, param: Param, base_dir, menu_builder: Callable[[ParamRow, QtWidgets.QMenu], None] | None = None,
                 parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.param = param
        self.menu_builder = menu_builder
        self.explicit = False
        lay = QtWidgets.QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(3)
        self.stack = QtWidgets.QStackedWidget()
        self.editor: ValueEditor = make_editor(param, base_dir)
        self.ref_editor = LineEditor(param, placeholder="${input}")
        self.stack.addWidget(self.editor)
        self.stack.addWidget(self.ref_editor)
        self.stack.setSizePolicy(QtWidgets.QSizePolicy.Policy.Expanding, self.editor.sizePolicy().verticalPolicy())
        lay.addWidget(self.stack, 1)
        self.menu_button = QtWidgets.QToolButton()
        self.menu_button.setText("\u22ee")
        self.menu_button.setAutoRaise(True)
        self.menu_button.setPopupMode(QtWidgets.QToolButton.ToolButtonPopupMode.InstantPopup)
        self.menu = QtWidgets.QMenu(self.menu_button)
        self.menu.aboutToShow.connect(self._fill_menu)
        self.menu_button.setMenu(self.menu)
        lay.addWidget(self.menu_button)
        tip = tooltips.param_tooltip(param)
        self.editor.setToolTip(tip)
        self.editor.committed.connect(lambda v: self.committed.emit(param.name, v))
        self.ref_editor.committed.connect(lambda text: self.committed.emit(param.name, coerce_text(param, text)))
        self.label = QtWidgets.QLabel(param.label or param.name)
        self.label.setToolTip(tip)

    def show_value(self, value, explicit: bool) -> None:
        self.explicit = explicit
        kind = self.param.kind  # text-like kinds edit a reference in their own field
        ref = is_reference(value) and not (kind.is_path or kind.name in ("str", "text", "strlist"))
        self.stack.setCurrentIndex(1 if ref else 0)
        self.stack.setFixedHeight(self.stack.currentWidget().sizeHint().height())
        (self.ref_editor if ref else self.editor).set_value(None if value is MISSING else value)
        font = self.label.font()
        font.setBold(explicit)
        self.label.setFont(font)
        required = self.param.required and not explicit
        self.label.setText((self.param.label or self.param.name) + (" *" if required else ""))
        self.label.setStyleSheet("color: #e53935;" if required else "")

    def as_reference(self) -> None:
        self.stack.setCurrentIndex(1)
        self.stack.setFixedHeight(self.ref_editor.sizeHint().height())
        self.ref_editor.focus_widget().setFocus()

    def _fill_menu(self) -> None:
        self.menu.clear()
        if self.menu_builder:
            self.menu_builder(self, self.menu)


class PropertiesPanel(QtWidgets.QScrollArea):
    """Graph inputs first, then the selection's params."""

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.doc: Document | None = None
        self.node_id: str | None = None
        self.note_index: int | None = None
        self.node_rows: dict[str, ParamRow] = {}
        self.input_rows: dict[str, ParamRow] = {}
        self._body = QtWidgets.QWidget()
        self._layout = QtWidgets.QVBoxLayout(self._body)
        self._layout.setContentsMargins(6, 6, 6, 6)
        self.inputs_box = QtWidgets.QGroupBox("Graph inputs")
        self.inputs_box.setObjectName("graphInputs")
        self.inputs_form = QtWidgets.QFormLayout(self.inputs_box)
        self.selection_box = QtWidgets.QGroupBox("Graph")
        self.selection_form = QtWidgets.QFormLayout(self.selection_box)
        for form in (self.inputs_form, self.selection_form):
            form.setFieldGrowthPolicy(QtWidgets.QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self._layout.addWidget(self.inputs_box)
        self._layout.addWidget(self.selection_box)
        self._layout.addStretch(1)
        self.setWidget(self._body)

    # -- wiring --------------------------------------------------------------------
    def set_document(self, doc: Document) -> None:
        if self.doc is not None:
            for sig, slot in self._wiring(self.doc):
                sig.disconnect(slot)
        self.doc = doc
        for sig, slot in self._wiring(doc):
            sig.connect(slot)
        self.node_id = None
        self.note_index = None
        self._build_inputs()
        self._build_selection()

    def _wiring(self, doc: Document):
        return [
            (doc.params_changed, self._on_params_changed),
            (doc.inputs_changed, self._on_inputs_changed),
            (doc.node_removed, self._on_node_removed),
            (doc.meta_changed, self._on_meta_changed),
            (doc.notes_changed, self._on_notes_changed),
        ]

    def show_selection(self, node_id: str | None, note_index: int | None = None) -> None:
        if node_id == self.node_id and note_index == self.note_index:
            return
        self.node_id, self.note_index = node_id, note_index
        self._build_selection()

    def _on_params_changed(self, node_id: str) -> None:
        if node_id == self.node_id:
            self._refresh_node()

    def _on_inputs_changed(self) -> None:
        if set(self.input_rows) == set(self.doc.graph.inputs):
            self._refresh_inputs()
        else:
            self._build_inputs()

    def _on_node_removed(self, node_id: str) -> None:
        if node_id == self.node_id:
            self.show_selection(None)

    def _on_meta_changed(self) -> None:
        if self.node_id is None and self.note_index is None:
            self._build_selection()

    def _on_notes_changed(self) -> None:
        if self.note_index is not None:
            if self.note_index >= len(self.doc.graph.notes):
                self.note_index = None
            self._build_selection()

    # -- building ------------------------------------------------------------------
    @staticmethod
    def _clear(form: QtWidgets.QFormLayout) -> None:
        while form.rowCount():
            form.removeRow(0)

    def _build_inputs(self) -> None:
        self._clear(self.inputs_form)
        self.input_rows = {}
        g = self.doc.graph
        self.inputs_box.setVisible(bool(g.inputs))
        for name, gi in g.inputs.items():
            row = ParamRow(input_param(gi), g.base_dir, self._input_menu)
            row.committed.connect(self._commit_input)
            self.inputs_form.addRow(row.label, row)
            self.input_rows[name] = row
        self._refresh_inputs()

    def _refresh_inputs(self) -> None:
        for name, row in self.input_rows.items():
            gi = self.doc.graph.inputs[name]
            row.show_value(gi.default, gi.has_default)

    def _build_selection(self) -> None:
        self._clear(self.selection_form)
        self.node_rows = {}
        if self.node_id is not None and self.node_id in self.doc.graph.nodes:
            self._build_node()
        elif self.note_index is not None and self.note_index < len(self.doc.graph.notes):
            self._build_note()
        else:
            self._build_graph_meta()

    def _build_graph_meta(self) -> None:
        g = self.doc.graph
        self.selection_box.setTitle("Graph")
        name = QtWidgets.QLineEdit(g.name)
        name.setObjectName("graphName")
        name.editingFinished.connect(lambda: name.text() != self.doc.graph.name and self.doc.set_meta(name=name.text()))
        desc = QtWidgets.QPlainTextEdit(g.description)
        desc.setFixedHeight(90)
        self.selection_form.addRow("name", name)
        self.selection_form.addRow("description", desc)
        save = QtWidgets.QPushButton("Apply description")
        save.clicked.connect(lambda: self.doc.set_meta(description=desc.toPlainText()))
        self.selection_form.addRow("", save)

    def _build_note(self) -> None:
        note = self.doc.graph.notes[self.note_index]
        idx = self.note_index
        self.selection_box.setTitle("Note")
        title = QtWidgets.QLineEdit(note.title)
        title.editingFinished.connect(lambda: self.doc.update_note(idx, title=title.text()))
        text = QtWidgets.QPlainTextEdit(note.text)
        text.setFixedHeight(120)
        apply = QtWidgets.QPushButton("Apply text")
        apply.clicked.connect(lambda: self.doc.update_note(idx, text=text.toPlainText()))
        self.selection_form.addRow("title", title)
        self.selection_form.addRow("text", text)
        self.selection_form.addRow("", apply)

    def _build_node(self) -> None:
        entry = self.doc.graph.nodes[self.node_id]
        spec = self.doc.registry.get(entry.type)
        if spec is None:
            self.selection_box.setTitle(f"{self.node_id}: unknown type")
            info = QtWidgets.QLabel(
                f"<b style='color:#e53935'>Unknown node type {escape(entry.qualified_type)}</b><br>"
                "Install the node pack that provides it. Its params are kept as they are:")
            info.setWordWrap(True)
            self.selection_form.addRow(info)
            for k, v in entry.params.items():
                self.selection_form.addRow(k, QtWidgets.QLabel(escape(repr(v))))
            return
        self.selection_box.setTitle(f"{spec.title}  \u00b7  {self.node_id}")
        header = QtWidgets.QLabel(f"<span style='color:gray'>{escape(spec.qualified)} \u00b7 "
                                  f"{escape(spec.category)}</span><br>{escape(spec.summary)}")
        header.setWordWrap(True)
        header.setToolTip(tooltips.node_tooltip(spec, self.node_id))
        self.selection_form.addRow(header)
        if not spec.params:
            self.selection_form.addRow(QtWidgets.QLabel("<i>no params</i>"))
        for name, p in spec.params.items():
            row = ParamRow(p, self.doc.graph.base_dir, self._param_menu)
            row.committed.connect(self._commit_param)
            self.selection_form.addRow(row.label, row)
            self.node_rows[name] = row
        self._refresh_node()

    def _refresh_node(self) -> None:
        entry = self.doc.graph.nodes[self.node_id]
        for name, row in self.node_rows.items():
            explicit = name in entry.params
            row.show_value(entry.params[name] if explicit else row.param.default, explicit)

    # -- commits -------------------------------------------------------------------
    def _commit_param(self, name: str, value) -> None:
        if self.node_id is not None:
            self.doc.set_param(self.node_id, name, value)

    def _commit_input(self, name: str, value) -> None:
        self.doc.set_input_default(name, value)

    # -- row menus -----------------------------------------------------------------
    def _param_menu(self, row: ParamRow, menu: QtWidgets.QMenu) -> None:
        node_id, name = self.node_id, row.param.name
        reset = menu.addAction("Reset to default")
        reset.setEnabled(row.explicit)
        reset.triggered.connect(lambda: self.doc.set_param(node_id, name, MISSING))
        use = menu.addMenu("Use graph input")
        kind = row.param.kind
        names = [n for n, gi in self.doc.graph.inputs.items() if gi.type in kind.accepts_inputs or gi.type == kind.name]
        for n in names:
            use.addAction(n).triggered.connect(lambda _=False, n=n: self.doc.set_param(node_id, name, f"${{{n}}}"))
        use.setEnabled(bool(names))
        menu.addAction("Expose as graph input").triggered.connect(lambda: self.doc.expose_param(node_id, name))
        menu.addAction("Type a reference\u2026").triggered.connect(row.as_reference)

    def _input_menu(self, row: ParamRow, menu: QtWidgets.QMenu) -> None:
        name = row.param.name
        clear = menu.addAction("Clear default (must be set with --set)")
        clear.setEnabled(row.explicit)
        clear.triggered.connect(lambda: self.doc.set_input_default(name, MISSING))
