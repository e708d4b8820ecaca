"""Validation on the canvas: a debounced live check and the problems list."""

from __future__ import annotations

from PySide6 import QtCore, QtGui, QtWidgets

from runtime.errors import ERROR, Problem
from runtime.validate import Validation, validate

from .document import Document
from .style import ERROR_BADGE, WARNING_BADGE


class LiveValidator(QtCore.QObject):
    """Runs ``runtime.validate.validate`` a moment after the document stops changing."""

    validated = QtCore.Signal(object)  # Validation

    def __init__(self, delay_ms: int = 250, parent: QtCore.QObject | None = None):
        super().__init__(parent)
        self.doc: Document | None = None
        self.last: Validation | None = None
        self.timer = QtCore.QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(delay_ms)
        self.timer.timeout.connect(self.validate_now)

    def set_document(self, doc: Document) -> None:
        if self.doc is not None:
            self.doc.changed.disconnect(self.timer.start)
        self.doc = doc
        doc.changed.connect(self.timer.start)
        self.validate_now()

    def validate_now(self) -> Validation:
        self.timer.stop()
        self.last = validate(self.doc.graph, self.doc.registry)
        self.validated.emit(self.last)
        return self.last


def problems_by_node(problems: list[Problem]) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for p in problems:
        if p.node:
            text = f"{p.field}: {p.message}" if p.field else p.message
            out.setdefault(p.node, []).append((p.severity, text))
    return out


class ProblemsPanel(QtWidgets.QTreeWidget):
    """Every problem of the last validation; clicking one selects and centres its node."""

    node_clicked = QtCore.Signal(str)

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.setColumnCount(3)
        self.setHeaderLabels(["", "where", "problem"])
        self.setRootIsDecorated(False)
        self.setAlternatingRowColors(True)
        self.setWordWrap(True)
        header = self.header()
        header.setSectionResizeMode(0, QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.itemClicked.connect(self._on_clicked)
        self.itemActivated.connect(self._on_clicked)
        self.problems: list[Problem] = []

    def set_problems(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        self.clear()
        for p in self.problems:
            sev = "error" if p.severity == ERROR else p.severity
            item = QtWidgets.QTreeWidgetItem(["\u25cf", p.where, p.message])
            item.setForeground(0, QtGui.QBrush(QtGui.QColor(ERROR_BADGE if p.severity == ERROR else WARNING_BADGE)))
            item.setToolTip(0, sev)
            item.setToolTip(2, p.message)
            item.setData(0, QtCore.Qt.ItemDataRole.UserRole, p.node)
            self.addTopLevelItem(item)

    def counts(self) -> tuple[int, int]:
        errors = sum(1 for p in self.problems if p.severity == ERROR)
        return errors, len(self.problems) - errors

    def _on_clicked(self, item: QtWidgets.QTreeWidgetItem, _column: int = 0) -> None:
        node = item.data(0, QtCore.Qt.ItemDataRole.UserRole)
        if node:
            self.node_clicked.emit(node)
