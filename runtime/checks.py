"""Node-level checks: what a node can verify about its params and neighbours before a run.

A node class may define ``check(self, c)``; the validator calls it with the node's
resolved params set as attributes (as at run time, but without running anything)
and a ``CheckContext``. What it reports is part of the validation, located by
node and field like every other problem::

    def check(self, c):
        if self.path.endswith(".safetensors") and not self.config:
            c.error("a single-file checkpoint needs 'config' (a local diffusers folder)", param="config")

Checks must be quick and must not load models or import torch: they run in the
editor on every change. An exception inside a check is reported as a warning.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any as _Any

from .errors import ERROR, WARNING, Problem

if TYPE_CHECKING:
    from .graph import Link
    from .spec import NodeSpec


@dataclass
class NodeView:
    """A resolved node as checks see it: spec, params, incoming links; ``port`` is the output
    that links it to the node asking (for ``CheckContext.linked``)."""

    id: str
    spec: NodeSpec
    params: dict[str, _Any]
    inputs: dict[str, Link | list[Link]]
    port: str = ""
    _instance: _Any = field(default=None, repr=False)

    def links(self, port: str) -> list[Link]:
        value = self.inputs.get(port)
        return [] if value is None else value if isinstance(value, list) else [value]

    def instance(self) -> _Any:
        """The node class with its params set as attributes (its ``run`` is never called here)."""
        if self._instance is None:
            obj = self.spec.cls()
            for name, value in self.params.items():
                setattr(obj, name, value)
            self._instance = obj
        return self._instance


class CheckContext:
    """Passed to ``check``: report problems on this node, and look at the nodes upstream of it."""

    def __init__(self, node_id: str, views: dict[str, NodeView], for_run: bool):
        self.node_id = node_id
        self.for_run = for_run
        self._views = views
        self.problems: list[Problem] = []

    def error(self, message: str, param: str | None = None, input: str | None = None) -> None:
        self._add(message, param, input, ERROR)

    def warn(self, message: str, param: str | None = None, input: str | None = None) -> None:
        self._add(message, param, input, WARNING)

    def _add(self, message: str, param: str | None, input: str | None, severity: str) -> None:
        where = f"param {param!r}" if param else f"input {input!r}" if input else None
        self.problems.append(Problem(message, self.node_id, where, code="check", severity=severity))

    def linked(self, port: str) -> list[NodeView]:
        """The nodes connected to input ``port`` of this node, in link order."""
        out = []
        for link in self._views[self.node_id].links(port):
            view = self._views.get(link.node)
            if view is not None:
                out.append(_at_port(view, link.port))
        return out

    def ancestors(self, port: str) -> list[NodeView]:
        """Every node upstream of input ``port``, nearest first, each once."""
        seen: set[str] = set()
        order: list[NodeView] = []
        queue = deque(self.linked(port))
        while queue:
            view = queue.popleft()
            if view.id in seen:
                continue
            seen.add(view.id)
            order.append(view)
            for name in view.inputs:
                queue.extend(_at_port(self._views[lk.node], lk.port) for lk in view.links(name)
                             if lk.node in self._views)
        return order


def _at_port(view: NodeView, port: str) -> NodeView:
    """The same node seen through one of its outputs (the instance is shared)."""
    if view.port == port:
        return view
    other = NodeView(view.id, view.spec, view.params, view.inputs, port)
    other._instance = view.instance()
    return other


def run_checks(views: dict[str, NodeView], ready: list[str], for_run: bool) -> list[Problem]:
    """Call ``check`` on every node in ``ready`` (params and links fully resolved) that defines one."""
    problems: list[Problem] = []
    for node_id in ready:
        view = views[node_id]
        check = getattr(view.spec.cls, "check", None)
        if not callable(check):
            continue
        c = CheckContext(node_id, views, for_run)
        try:
            view.instance().check(c)
        except Exception as e:  # a faulty check must not hide the rest of the validation
            c.warn(f"the node's own check failed ({type(e).__name__}: {e}); the run may still work")
        problems.extend(c.problems)
    return problems
