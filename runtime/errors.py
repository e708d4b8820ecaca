"""Problems found in graphs and specs, and the project's own exceptions."""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass
from typing import Iterable

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    """One finding, located by node id and field (param, port or graph input)."""

    message: str
    node: str | None = None
    field: str | None = None
    code: str = "invalid"
    severity: str = ERROR

    @property
    def where(self) -> str:
        if self.node and self.field:
            return f"node {self.node!r}, {self.field}"
        if self.node:
            return f"node {self.node!r}"
        if self.field:
            return self.field
        return "graph"

    def __str__(self) -> str:
        tag = "" if self.severity == ERROR else f"{self.severity}: "
        return f"{tag}{self.where}: {self.message}"

    def to_dict(self) -> dict:
        return asdict(self)


def errors_of(problems: Iterable[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == ERROR]


class NodetrainerError(Exception):
    """Base of the project's exceptions."""


class SpecError(NodetrainerError):
    """A node class whose spec is inconsistent; the registry refuses it."""


class GraphError(NodetrainerError):
    """A graph that cannot be loaded or run; carries every problem found."""

    def __init__(self, problems: list[Problem], summary: str = ""):
        self.problems = list(problems)
        self.summary = summary
        super().__init__(self._text())

    def _text(self) -> str:
        lines = [self.summary] if self.summary else []
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines) if lines else "invalid graph"


class GraphFileError(GraphError):
    """The file is not a readable graph (syntax, structure, format version)."""


class ValidationError(GraphError):
    """The graph loaded but is not valid for a run."""


class NodeFailure(NodetrainerError):
    """A node raised while running."""

    def __init__(self, node_id: str, type_id: str, cause: BaseException, traceback: str = ""):
        self.node_id = node_id
        self.type_id = type_id
        self.cause = cause
        self.traceback = traceback
        super().__init__(f"node {node_id!r} ({type_id}) failed: {type(cause).__name__}: {cause}")


class Cancelled(NodetrainerError):
    """Raised by ``ctx.check_cancelled()`` after a stop was requested."""


def closest(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Close matches for 'did you mean' hints."""
    return difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    near = closest(name, candidates)
    return f" (did you mean {', '.join(repr(c) for c in near)}?)" if near else ""
