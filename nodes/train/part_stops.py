"""Stop training a model part partway through a run (OneTrainer's ``stop_training_after``).

A ``train.loop`` ``stop_parts`` entry is ``"part=N epochs"`` or ``"part=N steps"`` (steps are optimizer
updates). From that update on, the part's parameter group has learning rate 0, so it no longer changes
(its gradients are still computed). The stop lives in the LR schedule's per-group factor, so a backup
and a resume keep it without state of its own.
"""

from __future__ import annotations

import re

_ENTRY = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(\d{1,9})\s*(epochs?|steps?)\s*", re.ASCII)


def parse(entries, node: str = "train.loop") -> dict[str, tuple[int, str]]:
    """``{part: (n, "epochs" | "steps")}`` of ``stop_parts`` entries; ValueError naming the entry."""
    stops: dict[str, tuple[int, str]] = {}
    for entry in entries or []:
        m = _ENTRY.fullmatch(str(entry))
        if not m:
            raise ValueError(f"{node}: stop_parts entry {str(entry)[:60]!r} is not 'part=N epochs' or "
                             "'part=N steps'")
        part, n, unit = m.group(1), int(m.group(2)), m.group(3)
        if part in stops:
            raise ValueError(f"{node}: stop_parts names {part!r} twice")
        stops[part] = (n, "epochs" if unit.startswith("epoch") else "steps")
    return stops


def stop_steps(stops: dict, steps_per_epoch: int, parts, node: str = "train.loop") -> dict[str, int]:
    """The update after which each named part stops; a part the model does not train is an error."""
    unknown = sorted(set(stops) - set(parts))
    if unknown:
        raise ValueError(f"{node}: stop_parts names {', '.join(unknown)}, which the model does not train "
                         f"(trained parts: {', '.join(sorted(parts)) or 'none'})")
    return {part: n * steps_per_epoch if unit == "epochs" else n for part, (n, unit) in stops.items()}


def group_limits(groups: list[dict], steps: dict[str, int]) -> list[int | None]:
    """Per optimizer group, the update from which its learning rate is 0 (None: never)."""
    return [steps.get(g.get("name")) for g in groups]
