"""The hook interface of ``train.loop``: what a ``Hook`` value may implement.

Hook nodes (samples, periodic saves, backups, TensorBoard, validation, EMA) output
an object with any of these methods; the loop calls them with the ``TrainRun``.
Side effects run only at an update boundary (no gradients pending).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any as _Any


@dataclass
class TrainRun:
    """What hooks see: the node context, the model being trained, its state and the run's shape."""

    ctx: _Any
    model: _Any
    state: _Any
    batches: _Any
    total_steps: int
    steps_per_epoch: int
    device: _Any


class TrainHook:
    """Base class of hook values; every method is optional and does nothing here."""

    def on_start(self, run: TrainRun) -> None:
        """Before the first step (after a resume, the state is already restored)."""

    def on_step_end(self, run: TrainRun, loss: float) -> None:
        """After each optimizer update."""

    def on_epoch_end(self, run: TrainRun) -> None:
        """After the last batch of an epoch."""

    def on_command(self, run: TrainRun, command: dict) -> bool:
        """A command from stdin (sample / save / backup); return True when handled."""
        return False

    def on_end(self, run: TrainRun, stopped: bool) -> None:
        """After the last step, or after a requested stop (``stopped``)."""


def call(hooks: list, method: str, *args) -> list:
    """Call ``method`` on every hook that has it; return the results."""
    return [getattr(h, method)(*args) for h in hooks if hasattr(h, method)]
