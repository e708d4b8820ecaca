"""The LR schedule node: a factor of the peak learning rate per optimizer update, built once the loop
knows the step count (a torch ``LambdaLR``, stepped once per update, saved in backups).

After a linear warmup (0 -> 1 over ``warmup`` steps), the shape runs over the remaining steps with
progress p from 0 to 1, and ``min_factor`` lifts it: factor = min_factor + (1 - min_factor) * shape.

- constant: 1; linear: 1 - p; cosine: (1 + cos(pi p)) / 2; polynomial: (1 - p) ** power
  (diffusers' shapes, which this node used before; polynomial's end is min_factor, not 1e-7)
- cosine_with_hard_restarts: ``cycles`` cosine decays, each jumping back to the peak
  ((1 + cos(pi ((cycles p) mod 1))) / 2, diffusers' cosine_with_hard_restarts); ``cosine_with_restarts``
  is its old name here (diffusers'), kept for saved graphs
- cosine_with_soft_restarts: (1 + cos((2 cycles + 1) pi p)) / 2, decaying and rising back smoothly
  ``cycles`` times before it ends at 0 (OneTrainer's COSINE_WITH_RESTARTS)
- rex: (1 - p) / (0.1 + 0.9 (1 - p)) (REX, arXiv 2107.04197, as OneTrainer)
- adafactor: transformers' AdafactorSchedule, only with the adafactor optimizer and relative_step: the
  optimizer computes its own step size and the schedule reports it (warmup and min_factor do not apply)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from runtime import Choice, Output, Param, node
from runtime.port_types import LRSchedule

SHAPES = ("constant", "linear", "cosine", "cosine_with_hard_restarts", "cosine_with_soft_restarts",
          "polynomial", "rex")
#: old names, still accepted: constant_with_warmup is constant (warmup is its own param),
#: cosine_with_restarts is diffusers' hard-restart cosine
ALIASES = {"constant_with_warmup": "constant", "cosine_with_restarts": "cosine_with_hard_restarts"}
SCHEDULES = (*SHAPES, "adafactor", *ALIASES)
REX_D = 0.9


def shape(name: str, p: float, cycles: float = 1, power: float = 1.0) -> float:
    """The schedule's factor at progress ``p`` (0..1, clamped) after warmup, before min_factor."""
    p = min(max(p, 0.0), 1.0)
    if name == "constant":
        return 1.0
    if name == "linear":
        return 1.0 - p
    if name == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * p))
    if name == "cosine_with_hard_restarts":
        return 0.0 if p >= 1.0 else 0.5 * (1.0 + math.cos(math.pi * ((cycles * p) % 1.0)))
    if name == "cosine_with_soft_restarts":
        return max(0.0, 0.5 * (1.0 + math.cos((2.0 * cycles + 1.0) * math.pi * p)))
    if name == "polynomial":
        return (1.0 - p) ** power
    if name == "rex":
        return (1.0 - p) / ((1.0 - REX_D) + REX_D * (1.0 - p))
    raise ValueError(f"train.lr_schedule: unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")


@dataclass
class LRScheduleConfig:
    """A schedule; ``build(optimizer, total_steps)`` makes a torch LR scheduler stepped once per update."""

    name: str
    warmup: float = 0.0
    cycles: int = 1
    power: float = 1.0
    min_factor: float = 0.0

    @property
    def shape_name(self) -> str:
        return ALIASES.get(self.name, self.name)

    def warmup_steps(self, total_steps: int) -> int:
        """``warmup`` >= 1 is a step count; below 1 it is a fraction of the total steps."""
        return int(self.warmup) if self.warmup >= 1 else int(round(self.warmup * total_steps))

    def factor(self, step: int, total_steps: int) -> float:
        """The factor of the peak LR after ``step`` updates of ``total_steps``."""
        warmup = self.warmup_steps(total_steps)
        if step < warmup:
            return step / max(1, warmup)
        p = (step - warmup) / max(1, total_steps - warmup)
        value = shape(self.shape_name, p, self.cycles, self.power)
        return self.min_factor + (1.0 - self.min_factor) * value

    def _stopped_factor(self, total: int, stop):
        return lambda step: self.factor(step, total) if stop is None or step < stop else 0.0

    def build(self, optimizer, total_steps: int, stops: list | None = None):
        """The torch scheduler; ``stops`` (per optimizer group, an update count or None) sets a group's
        factor to 0 from that update on (``nodes.train.part_stops``)."""
        if self.shape_name == "adafactor":
            if stops and any(s is not None for s in stops):
                raise ValueError("train.loop: stop_parts needs a learning-rate schedule; the adafactor schedule "
                                 "is Adafactor's own step size")
            return adafactor_schedule(optimizer)
        shape(self.shape_name, 0.0)  # an unknown name fails here, not at the first step
        total = max(1, total_steps)
        from torch.optim.lr_scheduler import LambdaLR

        if stops and any(s is not None for s in stops):
            lambdas = [self._stopped_factor(total, s) for s in stops]
            sched = LambdaLR(optimizer, lambdas)
        else:
            sched = LambdaLR(optimizer, lambda step: self.factor(step, total))
        # which schedule it is, for the schedule-free warning; plain values, so its state_dict stays
        # loadable with weights_only
        sched.schedule_name, sched.warmup_steps = self.shape_name, self.warmup_steps(total)
        return sched


def adafactor_schedule(optimizer):
    """transformers' AdafactorSchedule: reports the step size Adafactor computes itself."""
    from transformers.optimization import Adafactor, AdafactorSchedule

    if not isinstance(optimizer, Adafactor):
        raise ValueError(f"train.lr_schedule: the adafactor schedule works only with the adafactor optimizer "
                         f"(this run's is {type(optimizer).__name__}); choose another schedule, or "
                         "train.optimizer name: adafactor")
    if not all(g.get("relative_step") for g in optimizer.param_groups):
        raise ValueError("train.lr_schedule: the adafactor schedule is Adafactor's own relative step size: set "
                         "train.optimizer relative_step: true (or choose another schedule)")
    sched = AdafactorSchedule(optimizer)
    sched.schedule_name, sched.warmup_steps = "adafactor", 0
    return sched


def pairing_problems(optimizer: dict, schedule: dict) -> list[tuple[str, str]]:
    """What is wrong with a train.optimizer's params next to a train.lr_schedule's (both as in the graph,
    unset params absent or None), as ``(severity, message)``: the adafactor schedule without adafactor's
    relative step is an error, a schedule-free optimizer under a non-constant schedule a warning. For
    ``train.loop``'s check, which sees both; no torch import."""
    from .optimizers import OPTIMIZERS

    name, sched = optimizer.get("name") or "adamw", schedule.get("name") or "constant"
    out = []
    if sched == "adafactor" and (name != "adafactor" or not optimizer.get("relative_step")):
        out.append(("error", f"the adafactor schedule needs the adafactor optimizer with relative_step: true "
                             f"(train.optimizer is {name}"
                             f"{'' if name != 'adafactor' else ' without relative_step'}); choose another schedule"))
    entry = OPTIMIZERS.get(name)
    sf = entry is not None and entry.schedule_free and optimizer.get("use_schedulefree") is not False
    if sf and (ALIASES.get(sched, sched) != "constant" or schedule.get("warmup")):
        out.append(("warning", f"{name} is schedule-free: it expects a constant LR schedule without warmup "
                               "(for warmup use train.optimizer's warmup_steps)"))
    return out


@node("train.lr_schedule", title="LR schedule", category="Training")
class LRScheduleNode:
    """How the learning rate changes over training: constant, linear, cosine, cosine with hard or soft
    restarts, polynomial, REX (each after an optional linear warmup, never below min_factor x the
    peak), or Adafactor's own relative step size. docs/optimizers.md has the formulas."""

    schedule = Output(LRSchedule, doc="the schedule for train.loop")
    name = Param(Choice(*SCHEDULES), "constant",
                 doc="the curve after warmup (cosine_with_restarts = cosine_with_hard_restarts; "
                     "constant_with_warmup = constant; adafactor: only with the adafactor optimizer)")
    warmup = Param(float, 0.0, min=0, doc="linear warmup: steps (>= 1) or a fraction of all steps (< 1)")
    cycles = Param(int, 1, min=1, doc="restarts of cosine_with_hard_restarts / cosine_with_soft_restarts")
    power = Param(float, 1.0, min=0, doc="decay power (polynomial)")
    min_factor = Param(float, 0.0, min=0, max=1, doc="the LR never goes below min_factor x the peak: "
                                                      "factor = min_factor + (1 - min_factor) x shape")

    def check(self, c) -> None:
        if self.name == "adafactor" and (self.warmup or self.min_factor):
            c.warn("the adafactor schedule applies neither warmup nor min_factor (Adafactor sets its own step "
                   "size)", param="warmup" if self.warmup else "min_factor")

    def run(self, ctx):
        return {"schedule": LRScheduleConfig(self.name, self.warmup, self.cycles, self.power, self.min_factor)}
