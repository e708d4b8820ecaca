"""The canvas: a NodeGraphQt view that mirrors a ``Document``.

NodeGraphQt is only the view. Its own undo commands, ids, name uniqueness and
port constraints are bypassed: every interactive edit (a dropped or detached
connection, a slice, a move, a backdrop resize, a node dropped from the
library) becomes a ``Document`` edit, and the view follows the document's
signals. Connections are typed as the validator types them (``runtime.topology.GraphTypes``,
through ``Document.check_connection``). While a link is dragged, a port that
refuses it is marked red and the reason (both types) is shown at the cursor and
emitted on ``drag_message``; a refused drop restores the view and reports the
reason on ``status``, as does a drop that replaces a single input's link.
On every zoom the nodes get the view's scale (level of detail, node_items).
"""

from __future__ import annotations

from PySide6 import QtCore, QtGui, QtWidgets

from . import compat

compat.apply()

from NodeGraphQt import NodeGraph  # noqa: E402
from NodeGraphQt.constants import PipeEnum, PortTypeEnum  # noqa: E402
from NodeGraphQt.qgraphics.port import PortItem  # noqa: E402
from NodeGraphQt.qgraphics.node_abstract import AbstractNodeItem  # noqa: E402
from NodeGraphQt.widgets.viewer import NodeViewer  # noqa: E402

from runtime.graph import Link  # noqa: E402

from . import style  # noqa: E402
from .auto_layout import layered_positions  # noqa: E402
from .document import Document, Refused  # noqa: E402
from .node_items import NoteBackdrop, SpecNode, SpecNodeItem, add_output_port, make_view_node  # noqa: E402

#: drag-and-drop payload of the node library: a node type id
NODE_MIME = "application/x-nodetrainer-node-type"
#: screen pixels left around the nodes by Fit All (zoomed-out titles may reach past their node)
FIT_MARGIN_PX = 12.0


class Viewer(NodeViewer):
    """NodeViewer with typed feedback while dragging a link, Tab search and library drops."""

    tab_pressed = QtCore.Signal(QtCore.QPointF)
    type_dropped = QtCore.Signal(str, QtCore.QPointF)
    drag_hint = QtCore.Signal(str, QtCore.QPoint)  # feedback for the port a link is held over; '' when none
    scale_changed = QtCore.Signal(float)  # screen pixels per scene unit, after a zoom
    _last_scale = 1.0  # a class default: NodeViewer's __init__ already zooms

    def __init__(self, undo_stack=None, parent=None):
        super().__init__(parent, undo_stack=undo_stack)
        # (start PortItem, target PortItem) -> (refused, message), set by the canvas
        self.drag_check = None
        self.drag_target = None  # the port the dragged link is held over
        self.drag_refused = False
        self._drag_message = ""

    # NodeGraphQt's own accept/reject constraints are not used: the canvas decides (on drop
    # through the document, while dragging through drag_check).
    def _validate_accept_connection(self, from_port, to_port):
        return True

    def _validate_reject_connection(self, from_port, to_port):
        return False

    # -- feedback while dragging a link ----------------------------------------------------
    def sceneMouseMoveEvent(self, event):
        super().sceneMouseMoveEvent(event)
        if self._LIVE_PIPE.isVisible() and self._start_port is not None:
            self._drag_over(self._port_at(event.scenePos()), event.screenPos())

    def sceneMouseReleaseEvent(self, event):
        self._drag_over(None, event.screenPos())
        super().sceneMouseReleaseEvent(event)

    def _port_at(self, scene_pos):
        """The port under the cursor, as NodeGraphQt finds it (not the port the drag started from)."""
        for item in self.scene().items(scene_pos):
            if isinstance(item, PortItem):
                return None if item is self._start_port else item
        return None

    def _drag_over(self, target, screen_pos) -> None:
        refused, message = False, ""
        if target is not None and self.drag_check is not None and self._start_port is not None:
            refused, message = self.drag_check(self._start_port, target)
        marked = target if refused else None
        if marked is not self.drag_target or refused != self.drag_refused:
            if self.drag_target is not None:
                self.drag_target.set_refused(False)
            if marked is not None:
                marked.set_refused(True)
            self.drag_target, self.drag_refused = marked, refused
            color = style.REFUSED if refused else PipeEnum.ACTIVE_COLOR.value
            self._LIVE_PIPE.set_pipe_styling(color=color, width=3, style=PipeEnum.DRAW_TYPE_DASHED.value)
        if refused:  # NodeGraphQt drew the arrow in its own colours; redraw it snapped to the port, red
            center = target.sceneBoundingRect().center()
            self._LIVE_PIPE.draw_path(self._start_port, cursor_pos=center, color=style.REFUSED)
        if message != self._drag_message:
            self._drag_message = message
            self.drag_hint.emit(message, screen_pos)

    def _update_scene(self):  # every NodeGraphQt zoom, pan, fit and resize ends here
        super()._update_scene()
        scale = self.transform().m11()
        if scale != self._last_scale:
            self._last_scale = scale
            self.scale_changed.emit(scale)

    def zoom_to_nodes(self, nodes):
        super().zoom_to_nodes(nodes)
        if nodes and self.get_zoom() <= 0.1:  # fitted, not capped at 100 %: keep a margin for titles
            margin = FIT_MARGIN_PX / self.transform().m11()
            self._scene_range.adjust(-margin, -margin, margin, margin)
            self._update_scene()

    def _combined_rect(self, nodes):
        # NodeGraphQt groups the items to measure them: seconds for a few hundred nodes
        rect = QtCore.QRectF()
        for item in nodes:
            rect = rect.united(item.sceneBoundingRect())
        return rect

    def focusNextPrevChild(self, next):  # keep Tab for the node search
        return False

    def keyPressEvent(self, event):
        if event.key() == QtCore.Qt.Key.Key_Tab and not self._LIVE_PIPE.isVisible():
            cursor = self.mapFromGlobal(QtGui.QCursor.pos())
            if not self.rect().contains(cursor):
                cursor = self.rect().center()
            self.tab_pressed.emit(self.mapToScene(cursor))
            event.accept()
            return
        super().keyPressEvent(event)

    def _accepts(self, event) -> bool:
        return event.mimeData().hasFormat(NODE_MIME)

    def dragEnterEvent(self, event):
        if self._accepts(event):
            event.acceptProposedAction()
        else:
            super().dragEnterEvent(event)

    def dragMoveEvent(self, event):
        if self._accepts(event):
            event.acceptProposedAction()
        else:
            super().dragMoveEvent(event)

    def dropEvent(self, event):
        if self._accepts(event):
            type_id = bytes(event.mimeData().data(NODE_MIME)).decode()
            self.type_dropped.emit(type_id, self.mapToScene(event.position().toPoint()))
            event.acceptProposedAction()
            return
        super().dropEvent(event)


class ViewGraph(NodeGraph):
    """NodeGraph whose interactive edits go to the canvas instead of its own undo stack."""

    def __init__(self, canvas: Canvas):
        self._canvas = canvas
        stack = QtGui.QUndoStack()  # private; nothing is pushed to it
        super().__init__(undo_stack=stack, viewer=Viewer(undo_stack=stack))
        self._private_stack = stack

    def get_unique_name(self, name):  # titles may repeat; ids are what is unique
        return name

    def _on_connection_changed(self, disconnected, connected):
        self._canvas._on_gesture(disconnected, connected)

    def _on_connection_sliced(self, ports):
        self._canvas._on_gesture(ports, [])

    def _on_nodes_moved(self, node_data):
        self._canvas._on_moved(node_data)

    def _on_insert_node(self, pipe, node_id, prev_node_pos):
        pass  # dropping a node on a pipe does not rewire it

    def _on_node_backdrop_updated(self, node_id, update_property, value):
        self._canvas._on_backdrop_resized(node_id, value)

    def _on_node_name_changed(self, node_id, name):
        pass

    def _on_search_triggered(self, node_type, pos):
        pass


class Canvas(QtCore.QObject):
    """Keeps a NodeGraphQt view equal to a Document and turns gestures into edits."""

    status = QtCore.Signal(str)
    #: while a link is dragged: why the port under the cursor refuses it, or what the drop will
    #: replace; '' when there is nothing to say (also shown as a tooltip at the cursor)
    drag_message = QtCore.Signal(str)
    selection_changed = QtCore.Signal()
    node_activated = QtCore.Signal(str)
    tab_search = QtCore.Signal(QtCore.QPointF)

    def __init__(self, parent: QtCore.QObject | None = None):
        super().__init__(parent)
        self.graph = ViewGraph(self)
        self.graph.set_acyclic(False)  # cycles are the document's to refuse
        self.graph.set_pipe_collision(False)
        self.graph.register_node(SpecNode)
        self.graph.register_node(NoteBackdrop)
        self.viewer: Viewer = self.graph.viewer()
        self.viewer.drag_check = self._drag_check
        self.viewer.drag_hint.connect(self._on_drag_hint)
        self.viewer.scale_changed.connect(self._on_scale_changed)
        self.viewer.tab_pressed.connect(self.tab_search)
        self.viewer.type_dropped.connect(self._on_type_dropped)
        self.viewer.node_double_clicked.connect(self._on_double_clicked)
        self.viewer.scene().selectionChanged.connect(self.selection_changed)
        self.viewer._ctx_graph_menu.clear()
        self.doc: Document | None = None
        self.views: dict[str, SpecNode] = {}
        self._by_view_id: dict[str, str] = {}
        self.backdrops: list[NoteBackdrop] = []
        self._auto_pos: dict[str, tuple[float, float]] = {}

    @property
    def widget(self) -> QtWidgets.QWidget:
        return self.viewer

    def context_menu(self) -> QtWidgets.QMenu:
        """The canvas's right-click menu (add actions to it)."""
        return self.viewer._ctx_graph_menu

    # -- document ------------------------------------------------------------------
    def set_document(self, doc: Document) -> None:
        if self.doc is not None:
            for sig, slot in self._wiring(self.doc):
                sig.disconnect(slot)
        self.doc = doc
        for sig, slot in self._wiring(doc):
            sig.connect(slot)
        self.rebuild()

    def _wiring(self, doc: Document):
        return [
            (doc.node_added, self._on_node_added),
            (doc.node_removed, self._on_node_removed),
            (doc.links_changed, self._on_links_changed),
            (doc.params_changed, self.sync_ports),
            (doc.node_moved, self._on_node_moved),
            (doc.notes_changed, self.sync_notes),
        ]

    def rebuild(self) -> None:
        """Recreate the whole view from the document."""
        viewer_scene = self.viewer.scene()
        viewer_scene.blockSignals(True)
        try:
            for node in list(self.graph.all_nodes()):
                self.graph.remove_node(node, push_undo=False)
            self.views.clear()
            self._by_view_id.clear()
            self.backdrops.clear()
            g = self.doc.graph
            missing = [n for n in g.nodes if n not in g.layout]
            self._auto_pos = layered_positions(g) if missing else {}
            for nid in g.nodes:
                self._create_view(nid)
            for nid in g.nodes:
                self.sync_links(nid)
            self.sync_notes()
        finally:
            viewer_scene.blockSignals(False)
        self.selection_changed.emit()

    def _used_outputs(self, node_id: str) -> list[str]:
        ports = []
        for _, _, link in self.doc.graph.consumers(node_id):
            if link.port not in ports:
                ports.append(link.port)
        return ports

    def _create_view(self, node_id: str) -> SpecNode:
        entry = self.doc.graph.nodes[node_id]
        spec = self.doc.registry.get(entry.type)
        suggestions = self.doc.registry.suggest(entry.type) if spec is None else []
        outputs = self.doc.output_ports(node_id) if spec is not None else None
        node = make_view_node(entry, spec, self._used_outputs(node_id) if spec is None else (), suggestions, outputs)
        pos = self.doc.graph.layout.get(node_id) or self._auto_pos.get(node_id) or self._free_spot()
        self.graph.add_node(node, pos=[float(pos[0]), float(pos[1])], selected=False, push_undo=False)
        self.views[node_id] = node
        self._by_view_id[node.id] = node_id
        node.view.set_view_scale(self.view_scale())
        return node

    def _free_spot(self) -> tuple[float, float]:
        if not self.views:
            return (0.0, 0.0)
        xs = [n.view.xy_pos[0] + n.view.width for n in self.views.values()]
        ys = [n.view.xy_pos[1] for n in self.views.values()]
        return (max(xs) + 60.0, min(ys))

    def _on_node_added(self, node_id: str) -> None:
        node = self._create_view(node_id)
        for consumer, _, _ in self.doc.graph.consumers(node_id):
            if consumer in self.views:
                self.sync_links(consumer)
        node.view.setSelected(False)

    def _on_node_removed(self, node_id: str) -> None:
        node = self.views.pop(node_id, None)
        if node is not None:
            self._by_view_id.pop(node.id, None)
            self.graph.remove_node(node, push_undo=False)

    def _on_node_moved(self, node_id: str) -> None:
        pos = self.doc.graph.layout.get(node_id)
        node = self.views.get(node_id)
        if node is not None and pos is not None and node.view.xy_pos != [float(pos[0]), float(pos[1])]:
            node.view.xy_pos = [float(pos[0]), float(pos[1])]
            node.model.pos = [float(pos[0]), float(pos[1])]

    def _on_links_changed(self, node_id: str) -> None:
        self.sync_ports(node_id)
        self.sync_links(node_id)

    def sync_ports(self, node_id: str) -> None:
        """Give a node whose outputs mirror an input (a cache) a port per field, as the document has them:
        a field connected adds one, a field disconnected (or renamed) removes its port."""
        node = self.views.get(node_id)
        spec = self.doc.spec(node_id) if node is not None else None
        if spec is None or spec.mirror is None:
            return
        wanted = self.doc.output_ports(node_id)
        have = [(p.name(), tuple(p.color[:3])) for p in node.output_ports()]
        if have == [(n, style.rgb(t.color)[:3]) for n, (_, t) in wanted.items()]:
            return
        for port in list(node.output_ports()):
            port.clear_connections(push_undo=False, emit_signal=False)
            node.delete_output(port)
        for p, port_type in wanted.values():
            add_output_port(node, p, port_type)
        node.view.draw_node()
        for consumer in {c for c, _, _ in self.doc.graph.consumers(node_id)}:
            self.sync_links(consumer)

    def sync_links(self, node_id: str) -> None:
        """Make the view's links into ``node_id`` equal the document's."""
        node = self.views.get(node_id)
        entry = self.doc.graph.nodes.get(node_id) if self.doc else None
        if node is None or entry is None:
            return
        for in_port in node.input_ports():
            value = entry.inputs.get(in_port.name())
            links = value if isinstance(value, list) else ([value] if value else [])
            wanted = {}
            for lk in links:
                src = self.views.get(lk.node)
                out = src.get_output(lk.port) if src is not None else None
                if out is not None:
                    wanted[(lk.node, lk.port)] = out
            have = {(self._by_view_id.get(p.node().id), p.name()): p for p in in_port.connected_ports()}
            for key, out in have.items():
                if key not in wanted:
                    in_port.disconnect_from(out, push_undo=False, emit_signal=False)
            for key, out in wanted.items():
                if key not in have:
                    in_port.connect_to(out, push_undo=False, emit_signal=False)
            # a drag may have removed pipe items the model still has; redraw what is missing
            wanted_views = [out.view for out in wanted.values()]
            drawn = []
            for pipe in list(in_port.view.connected_pipes):
                if pipe.output_port not in wanted_views or pipe.output_port in drawn:
                    pipe.delete()
                else:
                    drawn.append(pipe.output_port)
            for out_view in wanted_views:
                if out_view not in drawn:
                    self.viewer.establish_connection(in_port.view, out_view)
            for pipe in in_port.view.connected_pipes:
                color = tuple(pipe.output_port.color[:3]) + (255,)
                if pipe.color != color:
                    pipe.color = color
                    pipe.reset()

    # -- notes -----------------------------------------------------------------------
    def sync_notes(self) -> None:
        notes = self.doc.graph.notes
        if len(notes) != len(self.backdrops):
            for bd in self.backdrops:
                self.graph.remove_node(bd, push_undo=False)
            self.backdrops = []
            for _ in notes:
                bd = NoteBackdrop()
                self.graph.add_node(bd, selected=False, push_undo=False)
                self.backdrops.append(bd)
        for bd, note in zip(self.backdrops, notes):
            x, y, w, h = (float(v) for v in note.rect)
            bd.model.name = note.title
            bd.view.name = note.title
            bd.view.backdrop_text = note.text
            bd.model.set_property("backdrop_text", note.text)
            bd.view.width, bd.view.height = w, h
            bd.model.width, bd.model.height = w, h
            bd.view.xy_pos = [x, y]
            bd.model.pos = [x, y]
            bd.view.update()

    def _note_index(self, view_id: str) -> int | None:
        for i, bd in enumerate(self.backdrops):
            if bd.id == view_id:
                return i
        return None

    # -- gestures ----------------------------------------------------------------------
    def _port_ref(self, port_view) -> tuple[str | None, str, str]:
        return self._by_view_id.get(port_view.node.id), port_view.name, port_view.port_type

    def _as_link(self, a, b):
        """(src id, out port, dst id, in port) for two port items in either order."""
        if a.port_type == PortTypeEnum.IN.value:
            a, b = b, a
        src, dst = self._by_view_id.get(a.node.id), self._by_view_id.get(b.node.id)
        return src, a.name, dst, b.name

    def _drag_check(self, start, target) -> tuple[bool, str]:
        """(refused, message) for a link dragged from port item ``start`` and held over ``target``."""
        if target.port_type == start.port_type:
            kind = "inputs" if start.port_type == PortTypeEnum.IN.value else "outputs"
            return True, f"cannot connect two {kind}: a link goes from an output to an input"
        src, out, dst, inp = self._as_link(start, target)
        if src is None or dst is None or self.doc is None:
            return False, ""
        why = self.doc.check_connection(src, out, dst, inp)
        if why:
            return True, why
        old = self.doc.replaced_link(src, out, dst, inp)
        return False, (f"dropping here replaces {old.node}.{old.port} \u2192 {dst}.{inp}" if old else "")

    def _on_drag_hint(self, message: str, screen_pos: QtCore.QPoint) -> None:
        if message:
            QtWidgets.QToolTip.showText(screen_pos, message, self.viewer)
        else:
            QtWidgets.QToolTip.hideText()
        self.drag_message.emit(message)

    def _on_gesture(self, disconnected, connected) -> None:
        removes, adds, touched = [], [], set()
        for a, b in disconnected:
            src, out, dst, inp = self._as_link(a, b)
            if src is not None and dst is not None:
                removes.append((dst, inp, Link(src, out)))
                touched.add(dst)
        for a, b in connected:
            src, out, dst, inp = self._as_link(a, b)
            if src is not None and dst is not None:
                adds.append((src, out, dst, inp))
                touched.add(dst)
        replaced = [(Link(src, out), dst, inp, old) for src, out, dst, inp in adds
                    for rdst, rinp, old in removes if (rdst, rinp) == (dst, inp) and old != Link(src, out)]
        try:
            if replaced:
                new, dst, inp, old = replaced[0]
                self.doc.apply_links(removes, adds, text=f"replace link into {dst}.{inp}")
                self.status.emit(f"{dst}.{inp}: replaced {old.node}.{old.port} with {new.node}.{new.port} "
                                 "(Undo restores it)")
            elif removes or adds:
                self.doc.apply_links(removes, adds)
        except Refused as e:
            self.status.emit(str(e))
        finally:
            for dst in touched:
                self.sync_links(dst)

    def _on_moved(self, node_data: dict) -> None:
        positions, notes = {}, {}
        for item, _prev in node_data.items():
            nid = self._by_view_id.get(item.id)
            if nid is not None:
                positions[nid] = tuple(item.xy_pos)
                continue
            idx = self._note_index(item.id)
            if idx is not None:
                notes[idx] = item
        with self.doc.edit("move"):
            if positions:
                self.doc.move(positions)
            for idx, item in notes.items():
                x, y = item.xy_pos
                self.doc.update_note(idx, rect=(x, y, item.width, item.height))
        # positions snap to whole numbers (as saved)
        for nid in positions:
            self._on_node_moved(nid)

    def _on_backdrop_resized(self, view_id: str, value) -> None:
        idx = self._note_index(view_id)
        if idx is None or not isinstance(value, dict):
            return
        x, y = value["pos"]
        self.doc.update_note(idx, rect=(x, y, value["width"], value["height"]))
        self.sync_notes()

    # -- level of detail -------------------------------------------------------------------
    def view_scale(self) -> float:
        """Screen pixels per scene unit (1.0 at 100 %)."""
        return self.viewer.transform().m11()

    def _on_scale_changed(self, scale: float) -> None:
        for node in self.views.values():
            node.view.set_view_scale(scale)

    def _on_type_dropped(self, type_id: str, pos: QtCore.QPointF) -> None:
        self.add_node(type_id, (pos.x(), pos.y()))

    def _on_double_clicked(self, view_id: str) -> None:
        nid = self._by_view_id.get(view_id)
        if nid:
            self.node_activated.emit(nid)

    # -- API used by the window and tests ------------------------------------------------
    def add_node(self, type_id: str, pos: tuple[float, float] | None = None) -> str | None:
        if pos is None:
            c = self.viewer.mapToScene(self.viewer.viewport().rect().center())
            pos = (c.x(), c.y())
        try:
            nid = self.doc.add_node(type_id, pos)
        except Refused as e:
            self.status.emit(str(e))
            return None
        self.select([nid], center=False)
        return nid

    def connect_ports(self, src: str, out_port: str, dst: str, in_port: str) -> bool:
        """Connect as a mouse drop would: through the viewer's gesture signal."""
        out = self.views[src].get_output(out_port)
        inp = self.views[dst].get_input(in_port)
        self.viewer.connection_changed.emit([], [(out.view, inp.view)])
        entry = self.doc.graph.nodes[dst]
        value = entry.inputs.get(in_port)
        links = value if isinstance(value, list) else [value]
        return Link(src, out_port) in links

    def selected_node_ids(self) -> list[str]:
        out = []
        for item in self.viewer.scene().selectedItems():
            if isinstance(item, SpecNodeItem):
                nid = self._by_view_id.get(item.id)
                if nid:
                    out.append(nid)
        return out

    def selected_note_indexes(self) -> list[int]:
        # only node items have ids: a connection drag selects NodeGraphQt's live-pipe arrow
        ids = {item.id for item in self.viewer.scene().selectedItems() if isinstance(item, AbstractNodeItem)}
        return [i for i, bd in enumerate(self.backdrops) if bd.id in ids]

    def select(self, node_ids: list[str], center: bool = True) -> None:
        scene = self.viewer.scene()
        scene.blockSignals(True)
        scene.clearSelection()
        for nid in node_ids:
            node = self.views.get(nid)
            if node is not None:
                node.view.setSelected(True)
        scene.blockSignals(False)
        self.selection_changed.emit()
        if center and node_ids:
            nodes = [self.views[n] for n in node_ids if n in self.views]
            if nodes:
                self.graph.center_on(nodes)

    def fit(self) -> None:
        if self.views:
            self.graph.center_on(list(self.views.values()))
            self.viewer.zoom_to_nodes([n.view for n in self.views.values()])

    def set_problems(self, problems: dict[str, list[tuple[str, str]]]) -> None:
        for nid, node in self.views.items():
            node.view.set_problems(problems.get(nid, []))

    def set_run_states(self, states: dict[str, str | None]) -> None:
        for nid, node in self.views.items():
            node.view.set_run_state(states.get(nid))

    def view_position(self, node_id: str) -> tuple[float, float]:
        x, y = self.views[node_id].view.xy_pos
        return x, y

    def auto_layout(self, node_ids: list[str] | None = None) -> None:
        """Arrange nodes left to right by dependency depth (one undo step)."""
        positions = layered_positions(self.doc.graph, self._sizes())
        if node_ids:
            positions = {k: v for k, v in positions.items() if k in node_ids}
        self.doc.move(positions)

    def _sizes(self) -> dict[str, tuple[float, float]]:
        return {nid: (n.view.width, n.view.height) for nid, n in self.views.items()}
