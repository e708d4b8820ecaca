"""The editor's document: one runtime ``Graph``, its file, and an undo stack.

The runtime graph is the single source of truth; the canvas is only a view
of it. Every edit runs inside ``Document.edit()``: the graph is captured
before and after, the difference becomes one undoable command, and applying
a difference emits fine-grained signals (node added/removed, links, params,
position, graph inputs, notes) that the views follow. Undo and redo apply the
same differences, so the views cannot drift from the graph.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any as _Any, Iterator

from PySide6 import QtCore, QtGui

from runtime.errors import GraphFileError
from runtime.fileio import atomic_write_text
from runtime.graph import Graph, GraphInput, Link, NodeEntry, Note
from runtime.graph_file import dumps_graph, load_graph, loads_graph
from runtime.params import MISSING
from runtime.port_types import SAMPLE, VALUE, PortType
from runtime.registry import Registry
from runtime.topology import GraphTypes


class Refused(ValueError):
    """An edit the document will not make (an incompatible connection, a cycle...)."""


# -- snapshots -----------------------------------------------------------------

def _copy_value(v):
    return list(v) if isinstance(v, list) else v


def copy_entry(e: NodeEntry) -> NodeEntry:
    return NodeEntry(e.id, e.type, e.version, {k: _copy_value(v) for k, v in e.params.items()},
                     {k: _copy_value(v) for k, v in e.inputs.items()})


def _copy_input(gi: GraphInput) -> GraphInput:
    return dataclasses.replace(gi, default=_copy_value(gi.default),
                               choices=list(gi.choices) if gi.choices else gi.choices)


@dataclass
class _Capture:
    nodes: dict[str, NodeEntry]
    layout: dict[str, tuple]
    inputs: dict[str, GraphInput]
    notes: list[Note]
    meta: tuple[str, str]


@dataclass
class Part:
    """One side of a change: the state to restore for what differs."""

    nodes: dict[str, NodeEntry | None] = field(default_factory=dict)
    layout: dict[str, tuple | None] = field(default_factory=dict)
    node_order: list[str] | None = None
    layout_order: list[str] | None = None
    inputs: dict[str, GraphInput] | None = None
    notes: list[Note] | None = None
    meta: tuple[str, str] | None = None


def _diff(a: _Capture, b: _Capture) -> tuple[Part, Part] | None:
    """(undo part, redo part) taking ``b`` back to ``a`` and ``a`` to ``b``; None if equal."""
    undo, redo = Part(), Part()
    for nid in list(a.nodes) + [n for n in b.nodes if n not in a.nodes]:
        x, y = a.nodes.get(nid), b.nodes.get(nid)
        if x != y:
            undo.nodes[nid], redo.nodes[nid] = x, y
    for nid in list(a.layout) + [n for n in b.layout if n not in a.layout]:
        x, y = a.layout.get(nid), b.layout.get(nid)
        if x != y:
            undo.layout[nid], redo.layout[nid] = x, y
    if list(a.nodes) != list(b.nodes):
        undo.node_order, redo.node_order = list(a.nodes), list(b.nodes)
    if list(a.layout) != list(b.layout):
        undo.layout_order, redo.layout_order = list(a.layout), list(b.layout)
    if a.inputs != b.inputs or list(a.inputs) != list(b.inputs):
        undo.inputs, redo.inputs = a.inputs, b.inputs
    if a.notes != b.notes:
        undo.notes, redo.notes = a.notes, b.notes
    if a.meta != b.meta:
        undo.meta, redo.meta = a.meta, b.meta
    empty = Part()
    if undo == empty and redo == empty:
        return None
    return undo, redo


class ChangeCommand(QtGui.QUndoCommand):
    """One edit: applies its redo part, or its undo part."""

    def __init__(self, doc: Document, text: str, undo: Part, redo: Part):
        super().__init__(text)
        self.doc = doc
        self.undo_part = undo
        self.redo_part = redo

    def redo(self) -> None:
        self.doc._apply(self.redo_part)

    def undo(self) -> None:
        self.doc._apply(self.undo_part)


# -- the document ----------------------------------------------------------------

class Document(QtCore.QObject):
    """A graph being edited. ``file_path`` is where Save writes (None: untitled)."""

    node_added = QtCore.Signal(str)
    node_removed = QtCore.Signal(str)
    links_changed = QtCore.Signal(str)  # the consumer whose inputs changed
    params_changed = QtCore.Signal(str)
    node_moved = QtCore.Signal(str)
    inputs_changed = QtCore.Signal()
    notes_changed = QtCore.Signal()
    meta_changed = QtCore.Signal()
    changed = QtCore.Signal()  # after any applied change
    saved = QtCore.Signal(str)

    def __init__(self, registry: Registry, graph: Graph | None = None, file_path: Path | None = None,
                 parent: QtCore.QObject | None = None):
        super().__init__(parent)
        self.registry = registry
        self.graph = graph if graph is not None else Graph()
        self.file_path = Path(file_path) if file_path else None
        self.undo = QtGui.QUndoStack(self)
        self._editing = False

    # -- files -------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, registry: Registry) -> Document:
        """Load a graph file (raises GraphFileError listing every structural problem)."""
        path = Path(path)
        return cls(registry, load_graph(path, registry), path)

    @classmethod
    def from_preset(cls, path: str | Path, registry: Registry) -> Document:
        """An untitled copy of a preset; relative paths still resolve against the preset's folder."""
        doc = cls.open(path, registry)
        doc.file_path = None
        return doc

    def text(self) -> str:
        """The file content Save writes."""
        return dumps_graph(self.graph, self.registry)

    def save(self, path: str | Path | None = None) -> Path:
        """Write the file atomically. Saving into another folder keeps relative paths pointing at the same files."""
        target = Path(path) if path else self.file_path
        if target is None:
            raise ValueError("an untitled graph needs a file name")
        self.rebase_paths(target.parent)
        atomic_write_text(target, self.text())
        self.file_path = target
        self.graph.path = target
        self.undo.setClean()
        self.saved.emit(str(target))
        return target

    def rebase_paths(self, new_dir: str | Path) -> int:
        """Rewrite relative path values (params and graph-input defaults) for a file in ``new_dir``.

        Relative paths resolve against the graph file's folder, so a graph saved
        elsewhere would otherwise point at other files. Returns how many changed.
        """
        old = self.graph.base_dir
        new = Path(os.path.abspath(new_dir))
        if old == new:
            return 0

        def moved(value):
            if not isinstance(value, str) or not value.strip() or "${" in value or value.startswith("~"):
                return value
            if Path(value).is_absolute():
                return value
            target = os.path.normpath(old / value)
            try:
                return Path(os.path.relpath(target, new)).as_posix()
            except ValueError:  # another drive
                return target

        changes = 0
        with self.edit("keep relative paths"):
            for gi in self.graph.inputs.values():
                if gi.type in ("path", "file", "dir") and moved(gi.default) != gi.default:
                    gi.default = moved(gi.default)
                    changes += 1
            for entry in self.graph.nodes.values():
                spec = self.registry.get(entry.type)
                for name, value in list(entry.params.items()):
                    param = spec.params.get(name) if spec else None
                    if param is not None and param.kind.is_path and moved(value) != value:
                        entry.params[name] = moved(value)
                        changes += 1
        return changes

    @property
    def modified(self) -> bool:
        return not self.undo.isClean()

    @property
    def display_name(self) -> str:
        return self.file_path.name if self.file_path else f"{self.graph.name} (unsaved)"

    # -- edit machinery ----------------------------------------------------------
    def _capture(self) -> _Capture:
        g = self.graph
        return _Capture(
            {nid: copy_entry(e) for nid, e in g.nodes.items()},
            dict(g.layout),
            {k: _copy_input(v) for k, v in g.inputs.items()},
            [dataclasses.replace(n) for n in g.notes],
            (g.name, g.description),
        )

    @contextlib.contextmanager
    def edit(self, text: str) -> Iterator[None]:
        """Mutate ``self.graph`` inside the block; the change becomes one undo step.

        If the block raises, the graph is restored and nothing is recorded.
        Nested blocks join the outermost one.
        """
        if self._editing:
            yield
            return
        before = self._capture()
        fields = self._mirrored_fields()
        self._editing = True
        try:
            yield
            self._follow_fields(fields)
        except BaseException:
            self._editing = False
            after = self._capture()
            d = _diff(before, after)
            if d:
                self._apply(d[0], emit=False)
            raise
        self._editing = False
        d = _diff(before, self._capture())
        if d is None:
            return
        self._apply(d[0], emit=False)  # back to before; the command's redo re-applies with signals
        self.undo.push(ChangeCommand(self, text, *d))

    def _apply(self, part: Part, emit: bool = True) -> None:
        g = self.graph
        removed, added, links, params, moved = [], [], [], [], []
        for nid, entry in part.nodes.items():
            cur = g.nodes.get(nid)
            if entry is None:
                if cur is not None:
                    removed.append(nid)
                    del g.nodes[nid]
                continue
            if cur is None:
                added.append(nid)
            elif (cur.type, cur.version) != (entry.type, entry.version):
                removed.append(nid)
                added.append(nid)
            else:
                if cur.inputs != entry.inputs:
                    links.append(nid)
                if cur.params != entry.params:
                    params.append(nid)
            g.nodes[nid] = copy_entry(entry)
        if part.node_order is not None:
            ordered = {nid: g.nodes[nid] for nid in part.node_order if nid in g.nodes}
            g.nodes.clear()
            g.nodes.update(ordered)
        for nid, pos in part.layout.items():
            if pos is None:
                g.layout.pop(nid, None)
            else:
                g.layout[nid] = pos
            moved.append(nid)
        if part.layout_order is not None:
            ordered_layout = {nid: g.layout[nid] for nid in part.layout_order if nid in g.layout}
            g.layout.clear()
            g.layout.update(ordered_layout)
        if part.inputs is not None:
            g.inputs = {k: _copy_input(v) for k, v in part.inputs.items()}
        if part.notes is not None:
            g.notes = [dataclasses.replace(n) for n in part.notes]
        if part.meta is not None:
            g.name, g.description = part.meta
        if not emit:
            return
        for nid in removed:
            self.node_removed.emit(nid)
        for nid in added:
            self.node_added.emit(nid)
        for nid in added + links:
            if nid in g.nodes:
                self.links_changed.emit(nid)
        for nid in params:
            self.params_changed.emit(nid)
        for nid in moved:
            if nid in g.nodes and nid not in added:
                self.node_moved.emit(nid)
        if part.inputs is not None:
            self.inputs_changed.emit()
        if part.notes is not None:
            self.notes_changed.emit()
        if part.meta is not None:
            self.meta_changed.emit()
        self.changed.emit()

    def _mirrored_fields(self) -> dict[str, dict[Link, str]]:
        """For each node whose outputs mirror an input (a cache): its links there -> their field names."""
        out = {}
        for nid, entry in self.graph.nodes.items():
            spec = self.registry.get(entry.type)
            if spec is not None and spec.mirror is not None:
                out[nid] = {link: name for name, link in reversed(spec.mirrored(entry.inputs, entry.params))}
        return out

    def _follow_fields(self, before: dict[str, dict[Link, str]]) -> None:
        """Edges from a cache's fields follow what this edit did to them: a field renamed (its link kept)
        takes its edges along; a field no longer connected loses them (its port is gone)."""
        after = self._mirrored_fields()
        for nid, old in before.items():
            new = after.get(nid)
            if new is None or new == old:
                continue
            names = set(new.values())
            moved = {name: new[lk] for lk, name in old.items() if lk in new and new[lk] != name}
            gone = {name for name in old.values() if name not in names and name not in moved}
            for entry in self.graph.nodes.values():
                for port, value in list(entry.inputs.items()):
                    links = value if isinstance(value, list) else [value]
                    kept = [Link(nid, moved[lk.port]) if lk.node == nid and lk.port in moved else lk
                            for lk in links if not (lk.node == nid and lk.port in gone)]
                    if kept == links:
                        continue
                    if not kept:
                        del entry.inputs[port]
                    else:
                        entry.inputs[port] = kept if isinstance(value, list) else kept[0]

    def output_ports(self, node_id: str) -> dict[str, tuple[_Any, PortType]]:
        """name -> (output, its type as connected) for the ports ``node_id`` has in this graph: a cache has
        one per field, typed like what feeds it."""
        types = GraphTypes(self.graph, self.spec)
        return {name: (o, types.output_type(node_id, name)) for name, o in types.outputs(node_id).items()}

    # -- queries -------------------------------------------------------------------
    def spec(self, node_id: str):
        entry = self.graph.nodes.get(node_id)
        return self.registry.get(entry.type) if entry else None

    def position(self, node_id: str) -> tuple[float, float] | None:
        return self.graph.layout.get(node_id)

    def check_connection(self, src: str, out_port: str, dst: str, in_port: str) -> str | None:
        """Why ``src.out_port -> dst.in_port`` may not be made, or None when it may."""
        g = self.graph
        if src not in g.nodes or dst not in g.nodes:
            missing = src if src not in g.nodes else dst
            return f"no node {missing!r}"
        if src == dst:
            return f"cannot connect node {src!r} to itself"
        s_spec, d_spec = self.spec(src), self.spec(dst)
        for nid, sp in ((src, s_spec), (dst, d_spec)):
            if sp is None:
                return f"node {nid!r} has an unknown type ({g.nodes[nid].type}): its ports are not known"
        if in_port not in d_spec.inputs:
            return f"{d_spec.type_id} has no input {in_port!r}"
        types = GraphTypes(g, self.spec)  # the validator's types: a pass-through has the type it is fed
        if out_port not in types.outputs(src):
            return f"{s_spec.type_id} has no output {out_port!r}"
        why = self._duplicate_field(types, Link(src, out_port), dst, in_port)
        if why:
            return why
        out_t, in_t = types.output_type(src, out_port), d_spec.inputs[in_port].type
        if not types.fits(src, out_port, in_t):
            why = types.passes_on(src, out_port)
            return (f"{type_refusal(out_t, in_t)} ({src}.{out_port} \u2192 {dst}.{in_port}"
                    f"{f'; {src}.{out_port} {why}' if why else ''})")
        if src in self.downstream(dst) or src == dst:
            return f"connecting {src}.{out_port} to {dst}.{in_port} would make a cycle"
        return self._knock_on(types, Link(src, out_port), dst, in_port)

    def _duplicate_field(self, types: GraphTypes, link: Link, dst: str, in_port: str) -> str | None:
        """A field name the link would give ``dst`` (a cache) twice, as the validator words it."""
        decl = self.spec(dst).mirror
        current = self.graph.nodes[dst].inputs.get(in_port)
        if decl is None or decl.mirrors != in_port or link in (current if isinstance(current, list) else [current]):
            return None
        before = set(types.duplicate_fields(dst))
        new = [m for m in types.duplicate_fields(dst, self._links_with(dst, in_port, link)) if m not in before]
        return f"{dst}: {new[0]}" if new else None

    def _knock_on(self, types: GraphTypes, link: Link, dst: str, in_port: str) -> str | None:
        """What the link would break beyond its own edge: a model an objective of ``dst`` does not serve,
        or a type a pass-through behind ``dst`` would carry to an input that does not take it. Problems
        the graph has already (shown by validation) are not this drag's."""
        before = types.serve_refusals(dst)
        after = types.serve_refusals(dst, self._links_with(dst, in_port, link))
        new = [message for r, message in after if (r, message) not in before]
        if not new and not self.spec(dst).inputs[in_port].multi:
            ahead = GraphTypes(self.graph, self.spec, (dst, in_port, link))
            old = set(types.downstream_refusals(dst, in_port))
            new = [m for m in ahead.downstream_refusals(dst, in_port) if m not in old]
        return new[0] if new else None

    def _links_with(self, dst: str, in_port: str, link: Link) -> dict[str, Link | list[Link]]:
        """``dst``'s links as they would be once ``link`` is dropped on ``in_port``."""
        links = dict(self.graph.nodes[dst].inputs)
        decl = self.spec(dst).inputs[in_port]
        old = links.get(in_port)
        links[in_port] = ([*old, link] if isinstance(old, list) else [link]) if decl.multi else link
        return links

    def replaced_link(self, src: str, out_port: str, dst: str, in_port: str) -> Link | None:
        """The link that connecting ``src.out_port -> dst.in_port`` would replace (single inputs only)."""
        spec = self.spec(dst)
        if spec is None or in_port not in spec.inputs or spec.inputs[in_port].multi:
            return None
        old = self.graph.nodes[dst].inputs.get(in_port)
        return old if isinstance(old, Link) and old != Link(src, out_port) else None

    def downstream(self, node_id: str) -> set[str]:
        """Every node that (transitively) consumes an output of ``node_id``, itself included."""
        consumers: dict[str, set[str]] = {}
        for e in self.graph.nodes.values():
            for _, link in e.links():
                consumers.setdefault(link.node, set()).add(e.id)
        seen, todo = {node_id}, [node_id]
        while todo:
            for c in consumers.get(todo.pop(), ()):
                if c not in seen:
                    seen.add(c)
                    todo.append(c)
        return seen

    # -- edits ---------------------------------------------------------------------
    def add_node(self, type_id: str, pos: tuple[float, float] | None = None, *, node_id: str | None = None,
                 params: dict | None = None) -> str:
        """Add a node of a registered type; returns its id (stable, derived from the type name)."""
        spec = self.registry.get(type_id.split("@")[0])
        if spec is None:
            raise Refused(f"unknown node type {type_id!r}")
        nid = node_id or self.graph.unique_id(spec.type_id.rsplit(".", 1)[-1])
        with self.edit(f"add {spec.title}"):
            self.graph.add_node(nid, spec.type_id, spec.version, params,
                                pos=_round_pos(pos) if pos is not None else None)
        return nid

    def remove(self, node_ids: list[str] = (), note_indexes: list[int] = ()) -> None:
        node_ids = [n for n in node_ids if n in self.graph.nodes]
        note_indexes = sorted({i for i in note_indexes if 0 <= i < len(self.graph.notes)}, reverse=True)
        if not node_ids and not note_indexes:
            return
        label = f"delete {', '.join(node_ids)}" if node_ids else "delete note"
        with self.edit(label):
            for nid in node_ids:
                self.graph.remove_node(nid)
            for i in note_indexes:
                del self.graph.notes[i]

    def connect(self, src: str, out_port: str, dst: str, in_port: str) -> None:
        """Link ``src.out_port`` into ``dst.in_port``; raises Refused naming both types when it may not."""
        self.apply_links([], [(src, out_port, dst, in_port)])

    def disconnect(self, dst: str, in_port: str, link: Link | None = None) -> None:
        self.apply_links([(dst, in_port, link)], [])

    def apply_links(self, disconnects: list[tuple[str, str, Link | None]],
                    connects: list[tuple[str, str, str, str]], text: str | None = None) -> None:
        """Remove then add links as one undo step (named ``text``); nothing changes if any is refused."""
        what = text or ("connect" if connects else "disconnect")
        with self.edit(what):
            for dst, in_port, link in disconnects:
                if dst in self.graph.nodes:
                    self.graph.disconnect(dst, in_port, link)
            for src, out_port, dst, in_port in connects:
                why = self.check_connection(src, out_port, dst, in_port)
                if why:
                    raise Refused(why)
                multi = self.spec(dst).inputs[in_port].multi
                self.graph.connect(src, out_port, dst, in_port, multi=multi)

    def set_param(self, node_id: str, name: str, value: _Any) -> None:
        """Set a param as written in the file (``${input}`` references allowed); MISSING resets it."""
        entry = self.graph.nodes[node_id]
        with self.edit(f"set {node_id}.{name}"):
            if value is MISSING:
                entry.params.pop(name, None)
            else:
                entry.params[name] = _copy_value(value)

    def move(self, positions: dict[str, tuple[float, float]]) -> None:
        with self.edit("move"):
            for nid, pos in positions.items():
                if nid in self.graph.nodes:
                    self.graph.layout[nid] = _round_pos(pos)

    def set_input_default(self, name: str, value: _Any) -> None:
        gi = self.graph.inputs[name]
        with self.edit(f"set input {name}"):
            gi.default = MISSING if value is MISSING else _copy_value(value)

    def set_meta(self, name: str | None = None, description: str | None = None) -> None:
        with self.edit("rename graph" if name is not None else "edit description"):
            if name is not None and name.strip():
                self.graph.name = name
            if description is not None:
                self.graph.description = description

    def expose_param(self, node_id: str, param: str, input_name: str | None = None) -> str:
        """Turn a node param into a graph input (a preset knob) referenced as ``${name}``."""
        spec = self.spec(node_id)
        p = spec.params[param]
        entry = self.graph.nodes[node_id]
        name = input_name or param
        i = 2
        while name in self.graph.inputs:
            name = f"{input_name or param}{i}"
            i += 1
        # a path the node writes must not be checked for existence: expose it as text
        kind = "str" if getattr(p.kind, "mode", "open") == "save" else p.kind.name
        gi = GraphInput(name, kind, doc=p.doc, min=p.min, max=p.max,
                        choices=list(getattr(p.kind, "options", ())) or None)
        current = entry.params.get(param, p.default)
        if current is not MISSING and current is not None:
            gi.default = _copy_value(current)
        with self.edit(f"expose {node_id}.{param}"):
            self.graph.inputs[name] = gi
            entry.params[param] = f"${{{name}}}"
        return name

    def add_note(self, rect: tuple[float, float, float, float], title: str = "Note", text: str = "") -> int:
        with self.edit("add note"):
            self.graph.notes.append(Note(title, text, tuple(round(v) for v in rect)))
        return len(self.graph.notes) - 1

    def update_note(self, index: int, *, title: str | None = None, text: str | None = None,
                    rect: tuple[float, float, float, float] | None = None) -> None:
        note = self.graph.notes[index]
        with self.edit("edit note"):
            if title is not None:
                note.title = title
            if text is not None:
                note.text = text
            if rect is not None:
                note.rect = tuple(round(v) for v in rect)

    # -- clipboard -----------------------------------------------------------------
    def copy_text(self, node_ids: list[str]) -> str:
        """The selected nodes (with the links between them) as graph-file text."""
        ids = [n for n in self.graph.nodes if n in set(node_ids)]
        sub = Graph(name="clipboard")
        for nid in ids:
            e = copy_entry(self.graph.nodes[nid])
            for port, value in list(e.inputs.items()):
                links = value if isinstance(value, list) else [value]
                kept = [lk for lk in links if lk.node in ids]
                if not kept:
                    del e.inputs[port]
                else:
                    e.inputs[port] = kept if isinstance(value, list) else kept[0]
            sub.nodes[nid] = e
            if nid in self.graph.layout:
                sub.layout[nid] = self.graph.layout[nid]
        return dumps_graph(sub, self.registry)

    def paste_text(self, text: str, offset: tuple[float, float] = (40, 40)) -> list[str]:
        """Add the nodes of graph-file text with fresh ids; returns the new ids (empty if not a graph)."""
        try:
            sub = loads_graph(text, self.registry)
        except GraphFileError:
            return []
        if not sub.nodes:
            return []
        renamed: dict[str, str] = {}
        taken = set(self.graph.nodes)
        for nid in sub.nodes:
            new = nid
            if new in taken:
                new = _unique_id(nid.rstrip("0123456789") or nid, taken)
            renamed[nid] = new
            taken.add(new)
        with self.edit(f"paste {len(renamed)} node(s)"):
            for nid, e in sub.nodes.items():
                new = copy_entry(e)
                new.id = renamed[nid]
                for port, value in list(new.inputs.items()):
                    links = value if isinstance(value, list) else [value]
                    moved = [Link(renamed.get(lk.node, lk.node), lk.port) for lk in links]
                    new.inputs[port] = moved if isinstance(value, list) else moved[0]
                self.graph.nodes[new.id] = new
                if nid in sub.layout:
                    x, y = sub.layout[nid]
                    self.graph.layout[new.id] = _round_pos((x + offset[0], y + offset[1]))
        return list(renamed.values())


def _article(word: str) -> str:
    return f"an {word}" if word[:1].lower() in "aeiou" else f"a {word}"


def type_refusal(out_t: PortType, in_t: PortType) -> str:
    """Why an output of type ``out_t`` cannot feed an input of type ``in_t``, naming both types."""
    head = f"{out_t.name} \u2192 {in_t.name}: "
    if out_t.lifetime != in_t.lifetime:
        kind = {SAMPLE: "per-sample", VALUE: "once-per-run"}
        return (f"{head}{_article(kind[out_t.lifetime])} {out_t.name} output cannot feed "
                f"{_article(kind[in_t.lifetime])} {in_t.name} input")
    return f"{head}{_article(out_t.name)} output cannot feed {_article(in_t.name)} input"


def _unique_id(base: str, taken: set[str]) -> str:
    i = 2
    while f"{base}{i}" in taken:
        i += 1
    return f"{base}{i}"


def _round_pos(pos: tuple[float, float]) -> tuple[int, int]:
    """Positions are stored as the file writes them (whole numbers)."""
    return int(round(pos[0])), int(round(pos[1]))
