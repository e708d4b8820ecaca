"""Automatic layout: columns by dependency depth, ordered to keep links short."""

from __future__ import annotations

from runtime.graph import Graph

DEFAULT_SIZE = (200.0, 110.0)
GAP_X, GAP_Y = 90.0, 40.0


def layered_positions(graph: Graph, sizes: dict[str, tuple[float, float]] | None = None) -> dict[str, tuple[int, int]]:
    """Top-left positions for every node: a node sits one column right of its deepest source."""
    sizes = sizes or {}
    sources = {nid: [lk.node for _, lk in e.links() if lk.node in graph.nodes and lk.node != nid]
               for nid, e in graph.nodes.items()}
    depth: dict[str, int] = {}

    def depth_of(nid: str, visiting: set[str]) -> int:
        if nid in depth:
            return depth[nid]
        if nid in visiting:  # a cycle: break it here
            return 0
        visiting.add(nid)
        d = 1 + max((depth_of(s, visiting) for s in sources[nid]), default=-1)
        visiting.discard(nid)
        depth[nid] = d
        return d

    for nid in graph.nodes:
        depth_of(nid, set())
    columns: dict[int, list[str]] = {}
    for nid in graph.nodes:
        columns.setdefault(depth[nid], []).append(nid)

    rank: dict[str, float] = {}
    positions: dict[str, tuple[int, int]] = {}
    x = 0.0
    for col in sorted(columns):
        ids = columns[col]
        order = {nid: i for i, nid in enumerate(ids)}

        def key(nid: str) -> tuple[float, int]:
            ranks = [rank[s] for s in sources[nid] if s in rank]
            return (sum(ranks) / len(ranks) if ranks else float(order[nid]) + 1e6, order[nid])

        ids = sorted(ids, key=key)
        heights = [sizes.get(n, DEFAULT_SIZE)[1] for n in ids]
        total = sum(heights) + GAP_Y * (len(ids) - 1)
        y = -total / 2
        for i, (nid, h) in enumerate(zip(ids, heights)):
            positions[nid] = (int(round(x)), int(round(y)))
            rank[nid] = float(i)
            y += h + GAP_Y
        x += max(sizes.get(n, DEFAULT_SIZE)[0] for n in ids) + GAP_X
    return positions
