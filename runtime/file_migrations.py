"""Ordered migrations of the graph-file format, applied on load.

``MIGRATIONS[k]`` turns the raw mapping of format ``k`` into format ``k + 1``.
Node-type migrations live on the node classes (``migrations = {1: fn}``).
"""

from __future__ import annotations

from typing import Callable

from .errors import shown

FORMAT_PREFIX = "nodetrainer.graph/"
CURRENT_FORMAT = 1


def _from_0(data: dict) -> dict:
    """Format 0, the pre-release draft: ``parameters:`` instead of ``inputs:``,
    nodes as a list of ``{id, type, version, inputs, pos}``; layout per node."""
    out = {k: v for k, v in data.items() if k not in ("parameters", "nodes", "format")}
    if "parameters" in data:
        out["inputs"] = data["parameters"]
    nodes_in = data.get("nodes")
    if isinstance(nodes_in, list):
        nodes: dict = {}
        layout: dict = dict(data.get("layout") or {}) if isinstance(data.get("layout"), dict) else {}
        for item in nodes_in:
            if not isinstance(item, dict) or "id" not in item:
                raise ValueError("format 0: every entry of 'nodes' needs an 'id'")
            node_id = item["id"]
            entry: dict = {}
            if "type" in item:
                version = item.get("version")
                entry["type"] = f"{item['type']}@{version}" if version is not None else item["type"]
            if "inputs" in item:
                entry["in"] = item["inputs"]
            if "params" in item:
                entry["params"] = item["params"]
            unknown = set(item) - {"id", "type", "version", "inputs", "params", "pos"}
            if unknown:
                keys = shown(sorted(map(str, unknown)))
                raise ValueError(f"format 0: node {shown(node_id)} has unknown key(s) {keys}")
            if not isinstance(node_id, str) or node_id in nodes:
                raise ValueError(f"format 0: node id {shown(node_id)} is invalid or repeated")
            nodes[node_id] = entry
            if "pos" in item:
                layout[node_id] = item["pos"]
        out["nodes"] = nodes
        if layout:
            out["layout"] = layout
    elif nodes_in is not None:
        out["nodes"] = nodes_in
    out["format"] = f"{FORMAT_PREFIX}1"
    return out


MIGRATIONS: dict[int, Callable[[dict], dict]] = {0: _from_0}
