"""Assemble an imported graph: nodes with their params and links, a readable layout, the file text.

Params equal to the node type's default are left out, as in the shipped presets, so the file shows
what the import set. The layout puts each node one column right of the furthest node it reads from
and stacks a column's nodes in the order they were added (a concept's branch stays together).
"""

from __future__ import annotations

import re

from ...graph import Graph, Link, NodeEntry
from ...registry import Registry, default_registry

COLUMN, ROW, PORT = 260, 110, 24


class GraphBuilder:
    """Nodes by id, in the order added; ``add`` returns the id."""

    def __init__(self, registry: Registry | None = None):
        self.registry = registry or default_registry()
        self.nodes: dict[str, NodeEntry] = {}

    def add(self, node_id: str, type_id: str, params: dict | None = None, inputs: dict | None = None) -> str:
        """Add a node of ``type_id`` (``family.name@version``); ``inputs`` map a port to ``"node.port"``
        or a list of them. An id in use gets a number appended."""
        node_id = self.free_id(node_id)
        name, _, version = type_id.partition("@")
        spec = self.registry.get(name)
        if spec is None:
            raise KeyError(f"importer bug: unknown node type {name}")
        entry = NodeEntry(node_id, name, int(version) if version else spec.version)
        for key, value in (params or {}).items():
            self.set(entry, key, value)
        for port, value in (inputs or {}).items():
            if value is None or value == []:
                continue
            entry.inputs[port] = [Link.parse(v) for v in value] if isinstance(value, list) else Link.parse(value)
        self.nodes[node_id] = entry
        return node_id

    def set(self, entry: NodeEntry | str, key: str, value) -> None:
        """Set a param, or drop it when ``value`` is the type's default."""
        entry = self.nodes[entry] if isinstance(entry, str) else entry
        spec = self.registry.get(entry.type)
        if key not in spec.params:
            raise KeyError(f"importer bug: {entry.type} has no param {key!r}")
        default = spec.params[key].default
        if _same(value, default):
            entry.params.pop(key, None)
        else:
            entry.params[key] = list(value) if isinstance(value, tuple) else value

    def param(self, node_id: str, key: str):
        """A node's param as set, else its type's default."""
        entry = self.nodes[node_id]
        if key in entry.params:
            return entry.params[key]
        return self.registry.get(entry.type).params[key].default

    def free_id(self, wanted: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_-]+", "_", wanted).strip("_-") or "node"
        if not re.match(r"[A-Za-z_]", base):
            base = "n_" + base
        node_id, n = base, 2
        while node_id in self.nodes:
            node_id, n = f"{base}_{n}", n + 1
        return node_id

    def graph(self, name: str, description: str) -> Graph:
        g = Graph(name=name, description=description)
        g.nodes = dict(self.nodes)
        g.layout = self.layout()
        return g

    def layout(self) -> dict[str, tuple[float, float]]:
        depth: dict[str, int] = {}

        def column(node_id: str, seen=()) -> int:
            if node_id not in depth:
                ups = [lk.node for _, lk in self.nodes[node_id].links() if lk.node in self.nodes
                       and lk.node not in seen]
                depth[node_id] = 1 + max((column(u, (*seen, node_id)) for u in ups), default=-1)
            return depth[node_id]

        for node_id in self.nodes:
            column(node_id)
        # a node that reads nothing (a loader, an optimizer) sits just left of its first reader
        readers: dict[str, list[str]] = {}
        for node_id, entry in self.nodes.items():
            for _, lk in entry.links():
                readers.setdefault(lk.node, []).append(node_id)
        for node_id, entry in self.nodes.items():
            if not entry.links() and readers.get(node_id):
                depth[node_id] = max(0, min(depth[r] for r in readers[node_id]) - 1)
        tops: dict[int, int] = {}
        out = {}
        for node_id in self.nodes:
            col = depth[node_id]
            out[node_id] = (float(col * COLUMN), float(tops.get(col, 0)))
            tops[col] = tops.get(col, 0) + self._height(node_id)
        return out

    def _height(self, node_id: str) -> int:
        """Room for a node in its column: more ports, a taller node (a cache has one output per field)."""
        entry = self.nodes[node_id]
        spec = self.registry.get(entry.type)
        ports = max(len(spec.inputs), len(spec.outputs), len(entry.links()) if len(spec.outputs) == 1 else 0)
        return max(ROW, 50 + PORT * ports)


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b and type(a) is type(b) or (isinstance(a, (int, float)) and isinstance(b, (int, float))
                                             and not isinstance(a, bool) and a == b)
