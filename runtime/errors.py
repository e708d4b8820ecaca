"""Problems found in graphs and specs, and the project's own exceptions."""

from __future__ import annotations

import difflib
import functools
import itertools
import reprlib
from dataclasses import asdict, dataclass
from typing import Any as _Any, Iterable

ERROR = "error"
WARNING = "warning"

#: bounds on what an error may echo, so a hostile file cannot make us print without limit
MAX_VALUE_CHARS = 200
MAX_MESSAGE_CHARS = 600
MAX_WHERE_CHARS = 120
MAX_PROBLEMS_SHOWN = 50
#: a node's own error text may be long (a chain of causes); the event's traceback has the rest
MAX_CAUSE_CHARS = 4000
ELLIPSIS = " … "


def clip(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` cut to at most ``limit`` characters, keeping its start and end around an ellipsis."""
    if len(text) <= limit:
        return text
    keep = max(limit - len(ELLIPSIS), 2)
    head = keep * 2 // 3
    return text[:head] + ELLIPSIS + text[len(text) - (keep - head):]


def first_line(error: BaseException, limit: int = 300) -> str:
    """An exception's message as one bounded line: its first line, or its type when it has none
    (libraries' messages run on over many lines)."""
    try:
        text = str(error).strip()
    except Exception:
        text = ""
    return clip(text.splitlines()[0] if text else type(error).__name__, limit)


class _BoundedRepr(reprlib.Repr):
    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxlist, self.maxdict, self.maxtuple, self.maxset = 3, 8, 8, 8, 8
        self.maxstring, self.maxother = MAX_VALUE_CHARS, MAX_VALUE_CHARS

    def repr_int(self, x, level):
        # repr() of an int beyond the interpreter's digit limit raises; count digits from the bit length
        if x.bit_length() > 600:
            return f"<a whole number of about {int(x.bit_length() * 0.30103)} digits>"
        return clip(repr(x), MAX_VALUE_CHARS)

    def repr_str(self, x, level):
        if len(x) <= MAX_VALUE_CHARS:
            return repr(x)
        return repr(x[:MAX_VALUE_CHARS]) + f"… ({len(x)} characters)"


_REPR = _BoundedRepr()


def shown(value: _Any) -> str:
    """A bounded ``repr`` of a value for error messages: long text, deep or long lists are cut."""
    try:
        return clip(_REPR.repr(value), MAX_VALUE_CHARS + 40)
    except Exception:  # a value whose repr fails must not turn a problem report into a crash
        return f"<{type(value).__name__}>"


@dataclass(frozen=True)
class Problem:
    """One finding, located by node id and field (param, port or graph input)."""

    message: str
    node: str | None = None
    field: str | None = None
    code: str = "invalid"
    severity: str = ERROR

    def __post_init__(self) -> None:
        # every message is bounded here, whoever built it and whatever value it echoes
        object.__setattr__(self, "message", clip(str(self.message)))
        for name in ("node", "field"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, clip(str(value), MAX_WHERE_CHARS))

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
        lines = [clip(self.summary)] if self.summary else []
        lines += [f"  - {p}" for p in self.problems[:MAX_PROBLEMS_SHOWN]]
        if len(self.problems) > MAX_PROBLEMS_SHOWN:
            lines.append(f"  … and {len(self.problems) - MAX_PROBLEMS_SHOWN} more problem(s)")
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
        super().__init__(clip(f"node {node_id!r} ({type_id}) failed: {type(cause).__name__}: {_str(cause)}",
                              MAX_CAUSE_CHARS))


def _str(e: BaseException) -> str:
    try:
        return str(e)
    except Exception:
        return f"<{type(e).__name__} whose message cannot be shown>"


class Cancelled(NodetrainerError):
    """Raised by ``ctx.check_cancelled()`` after a stop was requested."""


#: 'did you mean' looks no further: difflib's cost grows with the name and the candidates
MAX_HINT_NAME = 100
MAX_HINT_CANDIDATES = 300


def closest(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Close matches for 'did you mean' hints (none for absurdly long names or huge candidate sets)."""
    if not isinstance(name, str) or len(name) > MAX_HINT_NAME:
        return []
    pool = tuple(itertools.islice(candidates, MAX_HINT_CANDIDATES + 1))
    if len(pool) > MAX_HINT_CANDIDATES:
        return []
    try:
        return list(_closest(name, pool, n))
    except TypeError:  # an unhashable candidate: no cache
        return list(_closest.__wrapped__(name, pool, n))


@functools.lru_cache(maxsize=1024)
def _closest(name: str, pool: tuple, n: int) -> tuple[str, ...]:
    # a hostile graph repeats one wrong name thousands of times; difflib is slow
    return tuple(difflib.get_close_matches(name, [c for c in pool if isinstance(c, str)], n=n, cutoff=0.5))


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    near = closest(name, candidates)
    return f" (did you mean {', '.join(shown(c) for c in near)}?)" if near else ""
