"""When a hook fires: every N steps, epochs or minutes, after skipping the first ones.

``ScheduleParams`` is a base class for hook nodes (params are inherited through
the MRO), ``Schedule`` the runtime object that answers "is it due now?".
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from runtime import Choice, Param

UNITS = ("steps", "epochs", "minutes")


@dataclass
class Schedule:
    """Due every ``every`` ``unit``s, once ``skip_first`` units have passed. ``every`` 0: never
    (the hook then only acts on commands and at the end)."""

    every: int
    unit: str = "steps"
    skip_first: int = 0
    _last_time: float | None = field(default=None, repr=False)
    _start_time: float | None = field(default=None, repr=False)

    def start(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._start_time = self._last_time = now

    def due_after_step(self, step: int, now: float | None = None) -> bool:
        """After optimizer update ``step`` (1-based): steps and minutes schedules."""
        if self.every <= 0:
            return False
        if self.unit == "steps":
            return step > self.skip_first and step % self.every == 0
        if self.unit == "minutes":
            now = time.monotonic() if now is None else now
            if self._start_time is None:
                self.start(now)
            if now - self._start_time < self.skip_first * 60 or now - self._last_time < self.every * 60:
                return False
            self._last_time = now
            return True
        return False

    def due_after_epoch(self, epoch: int) -> bool:
        """After epoch ``epoch`` (1-based) ended: epochs schedules."""
        return self.unit == "epochs" and self.every > 0 and epoch > self.skip_first and epoch % self.every == 0

    def describe(self) -> str:
        if self.every <= 0:
            return "never (commands only)"
        skip = f", skipping the first {self.skip_first}" if self.skip_first else ""
        return f"every {self.every} {self.unit}{skip}"


class ScheduleParams:
    """Shared params of scheduled hook nodes."""

    every = Param(int, 100, min=0, doc="how often: every this many units (0 = only on command)")
    unit = Param(Choice(*UNITS), "steps", doc="unit of `every` and `skip_first`")
    skip_first = Param(int, 0, min=0, doc="do nothing until this many units have passed")

    def schedule(self) -> Schedule:
        return Schedule(self.every, self.unit, self.skip_first)
