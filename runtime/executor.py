"""The executor: run each planned node once, in order, passing outputs along.

A failure stops the run with an error naming the node, its type and the cause.
A requested stop (signal or ``stop`` command) ends the run after the running
node returns. Outputs are dropped as soon as their last consumer has run, so
a model is not kept alive longer than the graph needs it.

A node that changes an input in place (a model setup) asks ``ctx.users_of(obj)``
which other nodes may still use that object; ``_Sharing`` answers from the plan.
"""

from __future__ import annotations

import dataclasses
import time
import traceback
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any as _Any

from .context import RunContext
from .control import CancelToken, CommandInbox
from .errors import Cancelled, NodeFailure
from .events import EventBus
from .graph import Link
from .topology import plan
from .validate import Validation

OK, FAILED, CANCELLED, ABORTED = "ok", "failed", "cancelled", "aborted"


@dataclass
class RunResult:
    status: str
    seconds: float
    workspace: Path
    error: NodeFailure | None = None
    #: outputs of the nodes listed in ``keep`` (for tests and in-process callers)
    outputs: dict[str, dict[str, _Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == OK


def execute(
    validation: Validation,
    *,
    workspace: Path,
    bus: EventBus | None = None,
    cancel: CancelToken | None = None,
    inbox: CommandInbox | None = None,
    graph_name: str = "",
    keep: tuple[str, ...] = (),
    targets: tuple[str, ...] = (),
    resume: Path | None = None,
) -> RunResult:
    """Run a validated graph (``validation.ok`` must be true).

    ``targets`` runs only what those nodes need instead of what the sinks need
    (the data preview uses it); ``keep`` returns those nodes' outputs; ``resume``
    is a backup folder handed to the nodes (the training loop continues from it).
    """
    if not validation.ok:
        raise ValueError("execute() needs a valid graph; validate it first")
    bus = bus or EventBus()
    cancel = cancel or CancelToken()
    inbox = inbox or CommandInbox(cancel)
    if targets:
        deps = {n: list(dict.fromkeys(lk.node for _, lk in _links(rn.inputs))) for n, rn in validation.nodes.items()}
        order = plan(deps, targets)
    else:
        order = validation.order
    remaining = _consumer_counts(validation, order, protect=set(keep))
    values: dict[str, dict[str, _Any]] = {}
    sharing = _Sharing(validation, order, set(keep), values)
    kept: dict[str, dict[str, _Any]] = {}
    t_run = time.monotonic()
    extra = {"resume": str(resume)} if resume else {}
    bus.emit("run_started", graph=graph_name, workspace=str(workspace), nodes=order, **extra)

    def finish(status: str, error: NodeFailure | None = None) -> RunResult:
        seconds = time.monotonic() - t_run
        extra = {"reason": cancel.reason} if status == CANCELLED else {}
        bus.emit("run_finished", status=status, seconds=round(seconds, 3), workspace=str(workspace), **extra)
        return RunResult(status, seconds, workspace, error, kept)

    for index, node_id in enumerate(order):
        if cancel.requested:
            return finish(CANCELLED)
        rn = validation.nodes[node_id]
        spec = rn.spec
        kwargs = {port: _gather(values, rn.inputs.get(port)) if port in rn.inputs else
                  ([] if decl.multi else None) for port, decl in spec.inputs.items()}
        sharing.handed(node_id, kwargs)
        ctx = RunContext(node_id, spec.type_id, bus, cancel, inbox, workspace, graph_name, resume,
                         users=lambda obj, asker=node_id: sharing.users(asker, obj))
        bus.emit("node_started", node=node_id, type=spec.type_id, index=index, total=len(order))
        t0 = time.monotonic()
        try:
            instance = spec.cls()
            for name, value in rn.params.items():
                setattr(instance, name, value)
            result = instance.run(ctx, **kwargs)
            values[node_id] = _check_outputs(node_id, spec, result)
        except Cancelled:
            bus.emit("node_finished", node=node_id, type=spec.type_id, seconds=round(time.monotonic() - t0, 3),
                     status=CANCELLED)
            return finish(CANCELLED)
        except KeyboardInterrupt:
            failure = NodeFailure(node_id, spec.type_id, KeyboardInterrupt("aborted by a second interrupt"))
            bus.emit("error", node=node_id, type=spec.type_id, message=str(failure), traceback="")
            return finish(ABORTED, failure)
        except Exception as e:
            tb = traceback.format_exc()
            failure = NodeFailure(node_id, spec.type_id, e, tb)
            bus.emit("error", node=node_id, type=spec.type_id, message=str(failure), traceback=tb)
            return finish(FAILED, failure)
        bus.emit("node_finished", node=node_id, type=spec.type_id, seconds=round(time.monotonic() - t0, 3),
                 status=OK)
        sharing.done.add(node_id)
        if node_id in keep:
            kept[node_id] = dict(values[node_id])
        for src in {lk.node for _, lk in _links(rn.inputs)}:
            remaining[src] -= 1
            if remaining[src] == 0:
                values.pop(src, None)
        if remaining.get(node_id, 0) == 0:
            values.pop(node_id, None)
    return finish(CANCELLED if cancel.requested else OK)


def _links(inputs: dict[str, Link | list[Link]]) -> list[tuple[str, Link]]:
    return [(p, lk) for p, v in inputs.items() for lk in (v if isinstance(v, list) else [v])]


def _consumer_counts(validation: Validation, order: list[str], protect: set[str]) -> dict[str, int]:
    """How many planned nodes read from each node (a node reading twice counts once).
    Protected nodes get one extra count so their outputs are never dropped."""
    counts = {n: (1 if n in protect else 0) for n in order}
    for n in order:
        for src in {lk.node for _, lk in _links(validation.nodes[n].inputs)}:
            counts[src] += 1
    return counts


class _Sharing:
    """Which other planned nodes may still use an object: those that will be handed it (it is, or is a
    field of, a value on one of their input links), and those that were handed it and whose results can
    still reach a node that has not run (or a kept output) without passing through the node asking.

    A data stage is handed a VAE or text encoder when the executor reaches it, but uses it while the
    training loop runs: the stage's outputs lead to the loop, so it counts until the loop is done. A
    sampler that has run, with nothing downstream, no longer counts.
    """

    def __init__(self, validation: Validation, order: list[str], keep: set[str], values: dict):
        self.order, self.keep, self.values = order, keep, values
        self.links = {n: [lk for _, lk in _links(validation.nodes[n].inputs)] for n in order}
        self.readers: dict[str, set[str]] = {n: set() for n in order}
        for n in order:
            for lk in self.links[n]:
                if lk.node in self.readers:
                    self.readers[lk.node].add(n)
        self.done: set[str] = set()
        self._handed: dict[str, list[tuple[int, weakref.ref]]] = {}

    def handed(self, node_id: str, kwargs: dict[str, _Any]) -> None:
        """Remember what ``node_id`` was given (weakly: this never keeps anything alive)."""
        refs = []
        for value in kwargs.values():
            for v in value if isinstance(value, list) else [value]:
                for m in _members(v):
                    try:
                        refs.append((id(m), weakref.ref(m)))
                    except TypeError:  # str, int, dict, ...: nothing a node changes in place
                        pass
        self._handed[node_id] = refs

    def users(self, asker: str, obj: _Any) -> list[str]:
        out = []
        for n in self.order:
            if n == asker:
                continue
            if n not in self.done:
                if any(lk.node in self.values and _holds(self.values[lk.node].get(lk.port), obj)
                       for lk in self.links[n]):
                    out.append(n)
            elif self._was_handed(n, obj) and self._still_used(n, asker):
                out.append(n)
            elif n in self.keep and any(_holds(v, obj) for v in self.values.get(n, {}).values()):
                out.append(n)
        return out

    def _was_handed(self, node_id: str, obj: _Any) -> bool:
        return any(i == id(obj) and ref() is obj for i, ref in self._handed.get(node_id, ()))

    def _still_used(self, node_id: str, asker: str) -> bool:
        """Whether ``node_id``'s results reach a pending node or a kept one other than through ``asker``."""
        seen, todo = set(), [node_id]
        while todo:
            n = todo.pop()
            if n in self.keep or (n != node_id and n not in self.done):
                return True
            for r in self.readers[n]:
                if r != asker and r not in seen:
                    seen.add(r)
                    todo.append(r)
        return False


def _members(value: _Any) -> list[_Any]:
    """``value`` and, one level down, its fields (a dataclass's fields, a dict's values, a list's items)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [value] + [getattr(value, f.name, None) for f in dataclasses.fields(value)]
    if isinstance(value, dict):
        return [value, *value.values()]
    if isinstance(value, (list, tuple)):
        return [value, *value]
    return [value]


def _holds(value: _Any, obj: _Any) -> bool:
    return any(m is obj for m in _members(value))


def _gather(values: dict[str, dict[str, _Any]], links: Link | list[Link] | None):
    if isinstance(links, list):
        return [values[lk.node][lk.port] for lk in links]
    return values[links.node][links.port]


def _check_outputs(node_id: str, spec, result: _Any) -> dict[str, _Any]:
    if not spec.outputs and result is None:
        return {}
    if not isinstance(result, dict):
        raise TypeError(f"run() returned {type(result).__name__}; it must return a dict of outputs "
                        f"({', '.join(spec.outputs) or 'none'})")
    missing = [o for o in spec.outputs if o not in result]
    extra = [k for k in result if k not in spec.outputs]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing output(s) {', '.join(missing)}")
        if extra:
            parts.append(f"undeclared output(s) {', '.join(map(str, extra))}")
        raise TypeError(f"run() returned {'; '.join(parts)}")
    return result
