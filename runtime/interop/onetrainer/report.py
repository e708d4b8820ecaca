"""What an import did with each OneTrainer key: mapped to a node param, not needed, or unsupported.

Every key of a config that differs from OneTrainer's default gets exactly one row (``Report.account``
adds an unsupported row for any key the importer did not handle), so nothing is dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAPPED, NOT_NEEDED, UNSUPPORTED, NOTE = "mapped", "not needed", "unsupported", "note"
MAX_VALUE_CHARS = 60


@dataclass(frozen=True)
class Row:
    """One OneTrainer key (dotted, e.g. ``concepts[0].image.enable_random_flip``) and what became of it:
    ``target`` is ``node.param`` for a mapped key, the reason otherwise."""

    kind: str
    key: str
    target: str


@dataclass
class Report:
    """The rows of one import, in the order the importer met the keys."""

    rows: list[Row] = field(default_factory=list)

    def mapped(self, key: str, target: str) -> None:
        self._add(MAPPED, key, target)

    def not_needed(self, key: str, reason: str) -> None:
        self._add(NOT_NEEDED, key, reason)

    def unsupported(self, key: str, reason: str) -> None:
        self._add(UNSUPPORTED, key, reason)

    def note(self, key: str, text: str) -> None:
        self.rows.append(Row(NOTE, key, text))

    def _add(self, kind: str, key: str, target: str) -> None:
        if not any(r.key == key and r.kind == kind and r.target == target for r in self.rows):
            self.rows.append(Row(kind, key, target))

    def handled(self, key: str) -> bool:
        return any(r.key == key and r.kind != NOTE for r in self.rows)

    def account(self, changed) -> None:
        """Every key in ``changed`` that no row handles becomes unsupported (nothing is silent)."""
        for key in sorted(changed):
            if not self.handled(key):
                self.unsupported(key, "nodetrainer has no equivalent of this setting")

    def of_kind(self, kind: str) -> list[Row]:
        return [r for r in self.rows if r.kind == kind]

    def table(self) -> str:
        """The ``--report`` text: a table per kind (mapped: key -> node.param; the others: key: reason)."""
        out = []
        for kind, title in ((MAPPED, "Mapped (OneTrainer key -> node.param)"),
                            (UNSUPPORTED, "Unsupported (not in the graph)"),
                            (NOT_NEEDED, "Not needed"), (NOTE, "Notes")):
            rows = self.of_kind(kind)
            if not rows:
                continue
            out.append(f"{title}: {len(rows)}")
            width = min(48, max(len(r.key) for r in rows))
            arrow = " -> " if kind == MAPPED else "  "
            out += [f"  {r.key:<{width}}{arrow}{r.target}" for r in rows]
        return "\n".join(out) if out else "Nothing to report: every setting is OneTrainer's default."
