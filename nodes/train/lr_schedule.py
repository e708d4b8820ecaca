"""The LR schedule node, built on diffusers' ``get_scheduler`` once the loop knows the step count."""

from __future__ import annotations

from dataclasses import dataclass

from runtime import Choice, Output, Param, node
from runtime.port_types import LRSchedule

SCHEDULES = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")


@dataclass
class LRScheduleConfig:
    """A schedule; ``build(optimizer, total_steps)`` makes a torch LR scheduler stepped once per update."""

    name: str
    warmup: float = 0.0
    cycles: int = 1
    power: float = 1.0

    def warmup_steps(self, total_steps: int) -> int:
        """``warmup`` >= 1 is a step count; below 1 it is a fraction of the total steps."""
        return int(self.warmup) if self.warmup >= 1 else int(round(self.warmup * total_steps))

    def build(self, optimizer, total_steps: int):
        from diffusers.optimization import get_scheduler

        warmup = self.warmup_steps(total_steps)
        name = self.name
        if name == "constant" and warmup:
            name = "constant_with_warmup"
        kwargs = {}
        if name == "cosine_with_restarts":
            kwargs["num_cycles"] = self.cycles
        elif name == "polynomial":
            kwargs["power"] = self.power
        return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=max(1, total_steps),
                             **kwargs)


@node("train.lr_schedule", title="LR schedule", category="Training")
class LRScheduleNode:
    """How the learning rate changes over training: constant, linear, cosine, cosine with restarts or
    polynomial decay, each with an optional linear warmup."""

    schedule = Output(LRSchedule, doc="the schedule for train.loop")
    name = Param(Choice(*SCHEDULES), "constant", doc="the curve after warmup")
    warmup = Param(float, 0.0, min=0, doc="warmup: steps (>= 1) or a fraction of all steps (< 1)")
    cycles = Param(int, 1, min=1, doc="hard restarts (cosine_with_restarts)")
    power = Param(float, 1.0, min=0, doc="decay power (polynomial)")

    def run(self, ctx):
        return {"schedule": LRScheduleConfig(self.name, self.warmup, self.cycles, self.power)}
