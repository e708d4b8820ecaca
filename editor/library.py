"""The node library (categories, filter box, drag to add) and the Tab search popup."""

from __future__ import annotations

from PySide6 import QtCore, QtGui, QtWidgets

from runtime.registry import Registry
from runtime.spec import NodeSpec

from . import style, tooltips
from .canvas import NODE_MIME


def matches(query: str, spec: NodeSpec) -> bool:
    """Every word of the query is a subsequence of the title, type id or category."""
    hay = f"{spec.title} {spec.type_id} {spec.category}".lower()
    for word in query.lower().split():
        it = iter(hay)
        if not all(ch in it for ch in word):
            return False
    return True


def rank(query: str, spec: NodeSpec) -> tuple:
    q = query.lower().strip()
    title, tid = spec.title.lower(), spec.type_id.lower()
    return (not title.startswith(q), q not in title, q not in tid, len(title), tid)


class _Tree(QtWidgets.QTreeWidget):
    def mimeData(self, items):
        mime = QtCore.QMimeData()
        type_id = items[0].data(0, QtCore.Qt.ItemDataRole.UserRole) if items else None
        if type_id:
            mime.setData(NODE_MIME, type_id.encode())
            mime.setText(type_id)
        return mime

    def mimeTypes(self):
        return [NODE_MIME]


class NodeLibrary(QtWidgets.QWidget):
    """Node types by category; drag one onto the canvas or double-click to add it."""

    add_requested = QtCore.Signal(str)

    def __init__(self, registry: Registry, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.registry = registry
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        self.filter = QtWidgets.QLineEdit()
        self.filter.setPlaceholderText("Filter nodes\u2026")
        self.filter.setClearButtonEnabled(True)
        self.filter.textChanged.connect(self.apply_filter)
        self.tree = _Tree()
        self.tree.setHeaderHidden(True)
        self.tree.setDragEnabled(True)
        self.tree.setDragDropMode(QtWidgets.QAbstractItemView.DragDropMode.DragOnly)
        self.tree.itemDoubleClicked.connect(self._on_double_clicked)
        lay.addWidget(self.filter)
        lay.addWidget(self.tree, 1)
        self.populate()

    def populate(self) -> None:
        self.tree.clear()
        for category, specs in self.registry.by_category().items():
            top = QtWidgets.QTreeWidgetItem([category])
            top.setFlags(top.flags() & ~QtCore.Qt.ItemFlag.ItemIsDragEnabled)
            top.setForeground(0, QtGui.QBrush(QtGui.QColor(style.category_color(category)).lighter(130)))
            font = top.font(0)
            font.setBold(True)
            top.setFont(0, font)
            for spec in specs:
                item = QtWidgets.QTreeWidgetItem([spec.title])
                item.setData(0, QtCore.Qt.ItemDataRole.UserRole, spec.type_id)
                item.setToolTip(0, tooltips.node_tooltip(spec, "(new)"))
                top.addChild(item)
            self.tree.addTopLevelItem(top)
        self.tree.expandAll()

    def apply_filter(self, text: str) -> None:
        for i in range(self.tree.topLevelItemCount()):
            top = self.tree.topLevelItem(i)
            shown = 0
            for j in range(top.childCount()):
                item = top.child(j)
                spec = self.registry.get(item.data(0, QtCore.Qt.ItemDataRole.UserRole))
                ok = not text.strip() or matches(text, spec)
                item.setHidden(not ok)
                shown += ok
            top.setHidden(shown == 0)

    def visible_types(self) -> list[str]:
        out = []
        for i in range(self.tree.topLevelItemCount()):
            top = self.tree.topLevelItem(i)
            for j in range(top.childCount()):
                if not top.child(j).isHidden() and not top.isHidden():
                    out.append(top.child(j).data(0, QtCore.Qt.ItemDataRole.UserRole))
        return out

    def selected_type(self) -> str | None:
        """The type id of the node type selected in the tree, if one is."""
        items = self.tree.selectedItems()
        return items[0].data(0, QtCore.Qt.ItemDataRole.UserRole) if items else None

    def _on_double_clicked(self, item: QtWidgets.QTreeWidgetItem) -> None:
        type_id = item.data(0, QtCore.Qt.ItemDataRole.UserRole)
        if type_id:
            self.add_requested.emit(type_id)


class NodeSearch(QtWidgets.QFrame):
    """The Tab popup: type to filter, Enter adds the highlighted node where Tab was pressed."""

    chosen = QtCore.Signal(str, QtCore.QPointF)

    def __init__(self, registry: Registry, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent, QtCore.Qt.WindowType.Popup)
        self.registry = registry
        self.scene_pos = QtCore.QPointF()
        self.setFrameShape(QtWidgets.QFrame.Shape.StyledPanel)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(3, 3, 3, 3)
        self.edit = QtWidgets.QLineEdit()
        self.edit.setPlaceholderText("Add node\u2026")
        self.list = QtWidgets.QListWidget()
        lay.addWidget(self.edit)
        lay.addWidget(self.list)
        self.resize(300, 320)
        self.edit.textChanged.connect(self.refresh)
        self.edit.returnPressed.connect(self.accept)
        self.list.itemActivated.connect(lambda _item: self.accept())
        self.edit.installEventFilter(self)

    def open_at(self, global_pos: QtCore.QPoint, scene_pos: QtCore.QPointF) -> None:
        self.scene_pos = scene_pos
        self.edit.clear()
        self.refresh("")
        self.move(global_pos)
        self.show()
        self.edit.setFocus()

    def refresh(self, text: str) -> None:
        self.list.clear()
        specs = [s for s in self.registry.specs() if not text.strip() or matches(text, s)]
        if text.strip():
            specs.sort(key=lambda s: rank(text, s))
        for spec in specs:
            item = QtWidgets.QListWidgetItem(f"{spec.title}   \u2014 {spec.category}")
            item.setData(QtCore.Qt.ItemDataRole.UserRole, spec.type_id)
            item.setToolTip(spec.summary)
            self.list.addItem(item)
        if self.list.count():
            self.list.setCurrentRow(0)

    def eventFilter(self, obj, event):
        if obj is self.edit and event.type() == QtCore.QEvent.Type.KeyPress:
            if event.key() in (QtCore.Qt.Key.Key_Down, QtCore.Qt.Key.Key_Up):
                row = self.list.currentRow() + (1 if event.key() == QtCore.Qt.Key.Key_Down else -1)
                self.list.setCurrentRow(max(0, min(self.list.count() - 1, row)))
                return True
            if event.key() == QtCore.Qt.Key.Key_Escape:
                self.hide()
                return True
        return super().eventFilter(obj, event)

    def accept(self) -> None:
        item = self.list.currentItem()
        self.hide()
        if item is not None:
            self.chosen.emit(item.data(QtCore.Qt.ItemDataRole.UserRole), self.scene_pos)
