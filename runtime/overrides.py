"""``--set`` overrides: ``name=value`` for a graph input, ``node.param=value`` for a param."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any as _Any, Iterable

from .errors import Problem, shown
from .yaml_dialect import parse_scalar


@dataclass(frozen=True)
class Override:
    """One ``--set``: its target and its value parsed like a YAML scalar."""

    text: str
    value: _Any
    node: str | None  # None: a graph input
    name: str

    @property
    def target(self) -> str:
        return f"{self.node}.{self.name}" if self.node else self.name


def parse_overrides(items: Iterable[str]) -> tuple[list[Override], list[Problem]]:
    out, problems = [], []
    for text in items:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(Problem(f"--set {shown(text)}: expected NAME=VALUE or NODE.PARAM=VALUE",
                                    field="--set", code="bad_override"))
            continue
        node, dot, name = key.rpartition(".")
        out.append(Override(text, parse_scalar(raw), node if dot else None, name))
    return out, problems
