"""Graph topology: dependencies, cycles, the sink-driven plan."""

from __future__ import annotations

from typing import Iterable

from .graph import Graph


def dependencies(graph: Graph) -> dict[str, list[str]]:
    """node id -> ids of the existing nodes it reads from (file order, no repeats)."""
    deps: dict[str, list[str]] = {}
    for entry in graph.nodes.values():
        seen: list[str] = []
        for _, link in entry.links():
            if link.node in graph.nodes and link.node not in seen:
                seen.append(link.node)
        deps[entry.id] = seen
    return deps


def find_cycles(deps: dict[str, list[str]]) -> list[list[str]]:
    """Each cycle as the list of nodes on it (strongly connected components, Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    for root in deps:
        if root in index:
            continue
        # iterative DFS: (node, iterator over its deps)
        work = [(root, iter(deps[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(deps.get(w, []))))
                    advanced = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1 or v in deps.get(v, []):
                    order = {n: i for i, n in enumerate(deps)}
                    cycles.append(sorted(comp, key=order.__getitem__))
    return cycles


def plan(deps: dict[str, list[str]], sinks: Iterable[str]) -> list[str]:
    """The nodes the sinks need, dependencies first; ties keep file order.

    ``deps`` must be acyclic (the validator refuses cycles first).
    """
    needed: set[str] = set()
    todo = list(sinks)
    while todo:
        n = todo.pop()
        if n not in needed:
            needed.add(n)
            todo.extend(deps.get(n, []))
    order: list[str] = []
    done: set[str] = set()
    for n in deps:  # file order
        if n in needed:
            _visit(n, deps, done, order)
    return order


def _visit(n: str, deps: dict[str, list[str]], done: set[str], order: list[str]) -> None:
    work = [(n, iter(deps.get(n, [])))]
    if n in done:
        return
    done.add(n)
    while work:
        v, it = work[-1]
        for w in it:
            if w not in done:
                done.add(w)
                work.append((w, iter(deps.get(w, []))))
                break
        else:
            work.pop()
            order.append(v)
