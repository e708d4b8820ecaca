"""The in-memory graph: what a graph file holds, independent of YAML.

Edges live on the consumer: ``node.inputs[port]`` is a ``Link`` to another
node's output (or a list of them for a multi input). Param values are kept as
written, ``${name}`` references included; resolution happens in ``resolve``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any as _Any

from .errors import shown
from .params import INPUT_KINDS, MISSING, Choice, ParamKind

# \Z, not $: "$" also matches before a final newline, so "scan\n" passed as a node id
NODE_ID_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
LINK_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*)\.([A-Za-z_][A-Za-z0-9_]*)\Z")


@dataclass(frozen=True)
class Link:
    """A reference to an output port: ``node.port``."""

    node: str
    port: str

    @classmethod
    def parse(cls, text: object) -> Link | None:
        if not isinstance(text, str):
            return None
        m = LINK_RE.fullmatch(text.strip())
        return cls(m.group(1), m.group(2)) if m else None

    def __str__(self) -> str:
        return f"{self.node}.{self.port}"


@dataclass
class NodeEntry:
    """One node of a graph: its id, type, pinned version, params and incoming links."""

    id: str
    type: str
    version: int | None = None
    params: dict[str, _Any] = field(default_factory=dict)
    inputs: dict[str, Link | list[Link]] = field(default_factory=dict)

    @property
    def qualified_type(self) -> str:
        return f"{self.type}@{self.version}" if self.version is not None else self.type

    def links(self) -> list[tuple[str, Link]]:
        """(input port, link) pairs, multi inputs flattened."""
        out = []
        for port, value in self.inputs.items():
            for link in value if isinstance(value, list) else [value]:
                out.append((port, link))
        return out


@dataclass
class GraphInput:
    """A preset knob declared in ``inputs:``; params use it as ``${name}``."""

    name: str
    type: str
    default: _Any = MISSING
    doc: str = ""
    min: float | None = None
    max: float | None = None
    choices: list[str] | None = None

    def kind(self) -> ParamKind:
        if self.type == "choice":
            return Choice(*(self.choices or []))
        return INPUT_KINDS[self.type]()

    @property
    def has_default(self) -> bool:
        return self.default is not MISSING


@dataclass
class Note:
    """An editor backdrop with a title and text; never affects a run."""

    title: str = ""
    text: str = ""
    rect: tuple[float, float, float, float] = (0.0, 0.0, 300.0, 200.0)


@dataclass
class Graph:
    """A whole graph file."""

    name: str = "untitled"
    description: str = ""
    inputs: dict[str, GraphInput] = field(default_factory=dict)
    nodes: dict[str, NodeEntry] = field(default_factory=dict)
    layout: dict[str, tuple[float, float]] = field(default_factory=dict)
    notes: list[Note] = field(default_factory=list)
    #: the file this graph came from; relative paths in params resolve against its folder
    path: Path | None = None
    #: messages about node versions upgraded while loading
    upgrades: list[str] = field(default_factory=list, compare=False, repr=False)

    @property
    def base_dir(self) -> Path:
        return Path(os.path.abspath(self.path.parent if self.path else Path.cwd()))

    # -- editing helpers (used by the editor and by tests) ------------------
    def add_node(self, node_id: str, type_id: str, version: int | None = None, params: dict | None = None,
                 pos: tuple[float, float] | None = None) -> NodeEntry:
        if not isinstance(node_id, str) or not NODE_ID_RE.fullmatch(node_id):
            raise ValueError(f"invalid node id {shown(node_id)}")
        if node_id in self.nodes:
            raise ValueError(f"node id {shown(node_id)} already exists")
        entry = NodeEntry(node_id, type_id, version, dict(params or {}))
        self.nodes[node_id] = entry
        if pos is not None:
            self.layout[node_id] = pos
        return entry

    def unique_id(self, base: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_-]", "_", base) or "node"
        if not re.match(r"[A-Za-z_]", base[0]):
            base = "n_" + base
        if base not in self.nodes:
            return base
        i = 2
        while f"{base}{i}" in self.nodes:
            i += 1
        return f"{base}{i}"

    def remove_node(self, node_id: str) -> None:
        self.nodes.pop(node_id, None)
        self.layout.pop(node_id, None)
        for entry in self.nodes.values():
            for port in list(entry.inputs):
                self.disconnect(entry.id, port, source=node_id)

    def connect(self, src: str, out_port: str, dst: str, in_port: str, multi: bool = False) -> None:
        link = Link(src, out_port)
        entry = self.nodes[dst]
        if multi:
            current = entry.inputs.get(in_port)
            links = current if isinstance(current, list) else ([current] if current else [])
            if link not in links:
                links.append(link)
            entry.inputs[in_port] = links
        else:
            entry.inputs[in_port] = link

    def disconnect(self, dst: str, in_port: str, source: str | Link | None = None) -> None:
        """Remove links into ``dst.in_port``: all of them, or those from a node / a link."""
        entry = self.nodes[dst]
        current = entry.inputs.get(in_port)
        if current is None:
            return

        def keep(link: Link) -> bool:
            if source is None:
                return False
            if isinstance(source, Link):
                return link != source
            return link.node != source

        if isinstance(current, list):
            rest = [lk for lk in current if keep(lk)]
            if rest:
                entry.inputs[in_port] = rest
            else:
                del entry.inputs[in_port]
        elif not keep(current):
            del entry.inputs[in_port]

    def consumers(self, node_id: str) -> list[tuple[str, str, Link]]:
        """(consumer id, input port, link) for every edge leaving ``node_id``."""
        return [
            (e.id, port, link)
            for e in self.nodes.values()
            for port, link in e.links()
            if link.node == node_id
        ]
