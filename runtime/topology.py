"""Graph topology: dependencies, cycles, the sink-driven plan, and the types ports have in a graph."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable

from .graph import Graph, Link
from .port_types import PortType, is_compatible

if TYPE_CHECKING:
    from .spec import NodeSpec


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


# -- effective port types ----------------------------------------------------------

class GraphTypes:
    """The types the outputs of ``graph`` have as connected, and the connection rules that use them.

    An output's type is its declared type, except for a pass-through output (``Output(follows=IN)``):
    it has the type of whatever feeds input ``IN``, through any chain of pass-throughs, bounded by its
    declared type (an ill-typed, missing, cyclic or unknown feed leaves it *open*, see ``_resolve``). Types are
    computed on demand and memoised, a chain once, so asking for every edge is linear in the graph.
    The validator and the editor's drag check both use this class, so they cannot disagree.
    """

    def __init__(self, graph: Graph, spec_of: Callable[[str], NodeSpec | None],
                 link: tuple[str, str, Link] | None = None):
        """``link=(node, input, link)``: the types as they would be with ``link`` into that single input."""
        self.graph = graph
        self.spec_of = spec_of
        self._link = link
        self._memo: dict[tuple[str, str], tuple[PortType, tuple[str, str]]] = {}
        self._ports: dict[str, dict] = {}

    def outputs(self, node: str) -> dict:
        """The output ports ``node`` has in this graph, by name: its declared ones, with a ``mirrors``
        declaration replaced by a port per link of that input (``NodeSpec.connected``); {} for an unknown node."""
        found = self._ports.get(node)
        if found is None:
            spec = self.spec_of(node) if node in self.graph.nodes else None
            entry = self.graph.nodes.get(node)
            found = spec.connected(entry.inputs, entry.params).outputs if spec is not None else {}
            self._ports[node] = found
        return found

    def output_names(self, node: str) -> list[str]:
        """The names of ``node``'s output ports in this graph (see ``outputs``)."""
        return list(self.outputs(node))

    def _output(self, node: str, port: str):
        return self.outputs(node).get(port)

    def _via(self, node: str, out) -> Link | None:
        """The link a pass-through output hands on: its own link for a mirrored port, the feed of the
        input it follows otherwise."""
        return out.source if out.source is not None else self.feed(node, out.follows)

    def duplicate_fields(self, node: str, inputs: dict | None = None) -> list[str]:
        """Messages for names the ports of a ``mirrors`` declaration would share: two links into the input
        with one field name, or a field named like another output. ``inputs`` defaults to the node's links
        in the graph (the editor passes them as they would be after a drag)."""
        spec = self.spec_of(node) if node in self.graph.nodes else None
        decl = spec.mirror if spec is not None else None
        if decl is None:
            return []
        entry = self.graph.nodes[node]
        inputs = entry.inputs if inputs is None else inputs
        seen: dict[str, Link] = {}
        out = []
        for name, link in spec.mirrored(inputs, entry.params):
            if name in spec.outputs and spec.outputs[name] is not decl:
                out.append(f"field {name!r} (from {link}) has the name of output {name!r} of {spec.type_id}; "
                           f"give it another name with {decl.renames or 'a rename'}")
            elif name in seen:
                hint = f" (or give one another name: {decl.renames}: [{link}=NEW_NAME])" if decl.renames else ""
                out.append(f"two links into {decl.mirrors!r} are both named {name!r}: {seen[name]} and {link}; "
                           f"each field is handed on under its name, so connect only one{hint}")
            else:
                seen[name] = link
        return out

    def feed(self, node: str, port: str) -> Link | None:
        """The one link into input ``port`` of ``node`` (None when unconnected or several)."""
        if self._link is not None and self._link[:2] == (node, port):
            return self._link[2]
        entry = self.graph.nodes.get(node)
        value = entry.inputs.get(port) if entry is not None else None
        if isinstance(value, list):
            value = value[0] if len(value) == 1 else None
        return value

    def _resolve(self, node: str, port: str) -> tuple[PortType, tuple[str, str], bool] | None:
        """(type, the output that type comes from, open); None for an unknown node or port.

        *Open*: a pass-through not (yet) fed a type: unconnected, fed by an unknown node, a cycle
        or a type out of its bounds (each reported on its own). It stands for any type within its
        bound, so it is not refused for what it might become."""
        key = (node, port)
        if key in self._memo:
            return self._memo[key]
        if self._output(node, port) is None:
            return None
        chain: list[tuple[tuple[str, str], PortType]] = []
        seen: set[tuple[str, str]] = set()
        result = None
        while key not in seen:
            if key in self._memo:
                result = self._memo[key]
                break
            out = self._output(*key)
            if out is None:
                break
            seen.add(key)
            chain.append((key, out.type))
            if out.follows is None and out.source is None:
                result = (out.type, key, False)
                break
            link = self._via(key[0], out)
            if link is None:
                break
            key = (link.node, link.port)
        for key, declared in reversed(chain):  # each keeps what it was fed when that fits its bound
            if result is None or not is_compatible(result[0], declared):
                result = (declared, key, True)
            self._memo[key] = result
        return self._memo[(node, port)]

    def output_type(self, node: str, port: str) -> PortType | None:
        """The type output ``node.port`` has in this graph (None for an unknown node or port; an open
        pass-through's is its declared type)."""
        found = self._resolve(node, port)
        return found[0] if found else None

    def fits(self, node: str, port: str, want: PortType) -> bool:
        """Whether output ``node.port`` may feed an input of type ``want`` (an open pass-through may
        when some type within its bound would)."""
        found = self._resolve(node, port)
        if found is None:
            return True  # an unknown node or port is reported on its own
        have, _, open_ = found
        return is_compatible(have, want) or (open_ and is_compatible(want, have))

    def passes_on(self, node: str, port: str) -> str:
        """For a pass-through output, what its type follows (``passes on what feeds a.model,
        from b.model``); empty for any other output."""
        out = self._output(node, port)
        if out is None or (out.follows is None and out.source is None):
            return ""
        if out.source is not None:
            text = f"passes on {out.source}, one of {node}.{out.mirrors}"
        else:
            text = f"passes on what feeds {node}.{out.follows}"
        found, link = self._resolve(node, port), self._via(node, out)
        origin = found[1] if found else (node, port)
        if link is not None and origin not in ((node, port), (link.node, link.port)):
            text += f", from {origin[0]}.{origin[1]}"
        return text

    def type_refusal(self, link: Link, want: PortType) -> str | None:
        """Why ``link`` cannot feed an input of type ``want`` (both types named), or None if it can."""
        if self.fits(link.node, link.port, want):
            return None
        have, why = self.output_type(link.node, link.port), self.passes_on(link.node, link.port)
        return (f"{link} is {have.name} ({have.lifetime}{'; it ' + why if why else ''}), "
                f"but this input takes {want.name} ({want.lifetime})")

    def serve_refusals(self, node: str, inputs: dict[str, Link | list[Link]] | None = None) -> list[tuple[str, str]]:
        """(input, message) for each model fed to ``node`` that an output it takes does not serve.

        An output declared ``Output(..., serves=T)`` (an objective) is for models of type ``T``; the
        node it feeds then takes, on each input whose type is a supertype of ``T`` (its model inputs),
        only a ``T``. ``inputs`` defaults to the node's links in the graph (the editor passes the
        links as they would be after a drag)."""
        spec = self.spec_of(node) if node in self.graph.nodes else None
        if spec is None:
            return []
        inputs = self.graph.nodes[node].inputs if inputs is None else inputs
        links = {p: v if isinstance(v, list) else [v] for p, v in inputs.items() if p in spec.inputs}
        out: list[tuple[str, str]] = []
        for by_port, by_links in links.items():
            for by in by_links:
                for served in self.served(by):
                    out.extend(self._unserved(spec, links, by_port, by, served))
        return out

    def served(self, link: Link, depth: int = 0) -> list[PortType]:
        """The model types the value on ``link`` is for: its output's ``serves`` type, or, for
        ``serves="<input>"``, what the links into that input serve (recursively; none past a cycle)."""
        served = getattr(self._output(link.node, link.port), "serves", None)
        if isinstance(served, PortType):
            return [served]
        if not isinstance(served, str) or depth > len(self.graph.nodes) or link.node not in self.graph.nodes:
            return []
        feeds = self.graph.nodes[link.node].inputs.get(served)
        feeds = feeds if isinstance(feeds, list) else [feeds] if feeds is not None else []
        out: list[PortType] = []
        for feed in feeds:
            for t in self.served(feed, depth + 1):
                if t not in out:
                    out.append(t)
        return out

    def _unserved(self, spec: NodeSpec, links: dict[str, list[Link]], by_port: str, by: Link,
                  served: PortType) -> list[tuple[str, str]]:
        out = []
        for port, decl in spec.inputs.items():
            if port == by_port or decl.type.parent is None or not is_compatible(served, decl.type):
                continue
            for link in links.get(port, []):
                found = self._resolve(link.node, link.port)
                if found is None or found[2] or found[0].is_a(served):
                    continue
                have = found[0]
                why = self.passes_on(link.node, link.port)
                out.append((port, f"{by} (input {by_port!r}) serves {served.name} models, but {link} is "
                                  f"{have.name}{' (it ' + why + ')' if why else ''}: connect a {served.name} here, "
                                  f"or give {by_port!r} an output that serves {have.name}"))
        return out

    def downstream_refusals(self, node: str, port: str) -> list[str]:
        """Edges that the type fed to input ``node.port`` breaks further on: those from a pass-through
        output that follows it (and through chains of them), checked with this object's types."""
        consumers: dict[tuple[str, str], list[tuple[str, str, Link]]] = {}
        for entry in self.graph.nodes.values():
            for in_port, link in entry.links():
                consumers.setdefault((link.node, link.port), []).append((entry.id, in_port, link))
        out, todo, seen = [], [(node, port)], set()
        while todo:
            at = todo.pop()
            ports = self.outputs(at[0]) if at not in seen else {}
            seen.add(at)
            for name, o in ports.items():
                if at[1] not in (o.follows, o.source and o.mirrors):
                    continue
                for dst, in_port, link in consumers.get((at[0], name), []):
                    decl = getattr(self.spec_of(dst), "inputs", {}).get(in_port)
                    if decl is not None and not self.fits(link.node, link.port, decl.type):
                        have = self.output_type(link.node, link.port)
                        out.append(f"then {link} would be {have.name} (it {self.passes_on(link.node, link.port)}), "
                                   f"but {dst}.{in_port}, which it feeds, takes {decl.type.name}")
                    todo.append((dst, in_port))
        return out
