"""The hook interface of ``train.loop``: what a ``Hook`` value may implement.

Hook nodes (samples, periodic saves, backups, TensorBoard, validation, EMA) output
a ``TrainHook``; the loop calls its methods with the ``TrainRun``. The loop calls
hooks only at an update boundary (no gradients pending), lowest ``priority``
first, so the EMA is up to date before a save or a sample reads it.

A scheduled hook sets ``schedule`` and implements ``fire``; the base class fires
it when the schedule is due, and when the command named ``command`` arrives
(``sample``, ``save``). Side effects run under a forked torch RNG, so attaching a
hook never changes the training trajectory. Hooks that use the model (samples,
saves, validation) do so inside ``run.inference_weights()``: with a schedule-free
optimizer that is the averaged weights, and the training weights come back exactly.

Under DDP the hooks run on rank 0 only; a backup needs every rank (their RNG states, FSDP's
shards), so a hook asks for one with ``run.request_backup(reason)`` and the loop has all ranks
write it after the step.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any as _Any

from .schedule import Schedule


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
    objective: _Any = None
    hooks: list = field(default_factory=list)
    #: the EMA hook, when one is connected (samplers and savers use its weights)
    ema: _Any = None
    #: how many backups to keep (the backup hook sets it)
    backup_keep: int = 3
    #: latest scalars: loss, smoothed_loss, lr, grad_norm, validation_loss
    metrics: dict = field(default_factory=dict)
    #: (step, tag, paths, prompt) of sample images made during the run
    samples: list = field(default_factory=list)
    #: (what, why) of every save, sample or backup that failed (reported, training went on)
    save_failures: list = field(default_factory=list)
    #: the DDP/FSDP wrappers the loop trains through (``distributed.parallel_parts``), None on one process
    parts: _Any = None
    #: reasons of the backups asked for since the ranks last agreed (under DDP only)
    backup_requests: list = field(default_factory=list)

    def __post_init__(self):
        from .schedule_free import schedule_warning

        why = schedule_warning(getattr(self.state, "optimizer", None), getattr(self.state, "lr_scheduler", None))
        if why and hasattr(self.ctx, "warn"):
            self.ctx.warn(why)

    def request_backup(self, reason: str) -> None:
        """A backup at this update boundary (hooks and the backup command call this). On one process it is
        written now, a failure reported and training going on. Under DDP (``parts`` set) it is asked for:
        the loop agrees on it with the other ranks after this step, and every rank takes part in it
        (``nodes.train.backup.write_backup``)."""
        if self.parts is not None:
            self.backup_requests.append(reason)
            return
        from .backup import report_save_errors, write_backup

        with report_save_errors(self.ctx, f"backup at step {self.state.step}", self.save_failures):
            write_backup(self, reason)

    def averaged_weights(self):
        """Context in which the model holds its EMA weights, when an EMA hook is connected."""
        return self.ema.applied(self.model) if self.ema is not None else contextlib.nullcontext()

    def inference_weights(self):
        """Context in which the model holds the weights to use rather than the ones being trained: a
        schedule-free optimizer's averaged weights (``nodes.train.schedule_free``); a no-op otherwise."""
        from .schedule_free import inference_weights

        return inference_weights(getattr(self.state, "optimizer", None))


class TrainHook:
    """Base class of hook values. Every method is optional."""

    priority = 10
    #: stable name for backups (the hook node's id)
    key: str = ""
    schedule: Schedule | None = None
    command: str | None = None

    def fire(self, run: TrainRun, reason: str) -> None:
        """The hook's side effect; ``reason`` is ``schedule``, ``command`` or ``end``."""

    def trigger(self, run: TrainRun, reason: str) -> None:
        import torch

        devices = [run.device.index or 0] if getattr(run.device, "type", "cpu") == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            self.fire(run, reason)

    def on_start(self, run: TrainRun) -> None:
        """Before the first step (on resume: before the backup's state is restored)."""
        if self.schedule is not None:
            self.schedule.start()

    def on_step_end(self, run: TrainRun, loss: float) -> None:
        """After each optimizer update."""
        if self.schedule is not None and self.schedule.due_after_step(run.state.step):
            self.trigger(run, "schedule")

    def on_epoch_end(self, run: TrainRun) -> None:
        """After the last batch of an epoch (``run.state.epoch`` epochs are complete)."""
        if self.schedule is not None and self.schedule.due_after_epoch(run.state.epoch):
            self.trigger(run, "schedule")

    def on_command(self, run: TrainRun, command: dict) -> bool:
        """A command from stdin; return True when handled."""
        if self.command is not None and command.get("command") == self.command:
            self.trigger(run, "command")
            return True
        return False

    def on_end(self, run: TrainRun, stopped: bool) -> None:
        """After the last step, or after a requested stop (``stopped``)."""

    def state_dict(self) -> dict | None:
        """State to keep in backups (tensors, numbers, lists, dicts), or None."""
        return None

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned."""


def call(hooks: list, method: str, *args) -> list:
    """Call ``method`` on every hook that has it; return the results."""
    return [getattr(h, method)(*args) for h in hooks if hasattr(h, method)]


def ordered(hooks: list) -> list:
    """Hooks in calling order (by ``priority``, then as connected)."""
    return sorted(hooks, key=lambda h: getattr(h, "priority", 10))


@contextlib.contextmanager
def part_modes(model):
    """Restore each part's train/eval mode after a side effect (sampling, validation) changed it."""
    modes = {name: part.training for name, part in model.parts().items()}
    try:
        yield
    finally:
        for name, part in model.parts().items():
            part.train(modes.get(name, False))
