"""The optimizer node: a spec the training loop turns into an optimizer over the trainable parameters.

The catalogue (which optimizers, from which package, reading which settings) is ``nodes.train.optimizers``;
docs/optimizers.md lists it for users.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from runtime import Choice, Output, Param, node
from runtime.port_types import OptimizerSpec

from .optimizers import (NAMES, OPTIMIZERS, SETTINGS, build_optimizer, effective_lrs, fused_kernel,
                         missing_package, setting_doc)

__all__ = ["OptimizerConfig", "Optimizer", "fused_kernel", "missing_package", "effective_lrs", "NAMES"]

#: settings that have their own OptimizerConfig field (the node's first ones); the others go in ``extra``
FIELDS = ("weight_decay", "beta1", "beta2", "eps", "momentum")


@dataclass
class OptimizerConfig:
    """Which optimizer and its settings; ``build(params, kernel="auto")`` makes it.

    None means "the optimizer's default" (``weight_decay`` defaults to 0.0 here, as it always did in
    this Python API; the node leaves it to the optimizer). ``extra`` holds the other settings of
    ``nodes.train.optimizers.SETTINGS`` by name (``{"beta3": 0.999, "nesterov": True}``)."""

    name: str
    lr: float
    weight_decay: float | None = 0.0
    betas: tuple | None = None
    eps: float | None = None
    momentum: float | None = None
    extra: dict = field(default_factory=dict)

    def settings(self) -> dict:
        """Every setting by its node name (None: unset)."""
        betas = tuple(self.betas or ()) + (None, None)
        unknown = sorted(set(self.extra) - set(SETTINGS))
        if unknown:
            raise ValueError(f"train.optimizer: unknown setting(s) {', '.join(unknown)}")
        return {"weight_decay": self.weight_decay, "beta1": betas[0], "beta2": betas[1], "eps": self.eps,
                "momentum": self.momentum, **self.extra}

    def build(self, params, kernel: str = "auto"):
        """The optimizer over ``params`` (tensors, or param groups that may carry their own ``lr``).
        ``kernel``: auto (torch's fused kernel where every weight allows it), fused, foreach or for-loop;
        an explicit choice the optimizer lacks is an error naming it."""
        return build_optimizer(self.name, self.lr, self.settings(), params, kernel)

    @property
    def schedule_free(self) -> bool:
        """True when the optimizer switches weights with eval()/train() (nodes.train.schedule_free)."""
        entry = OPTIMIZERS.get(self.name)
        return bool(entry and entry.schedule_free and self.extra.get("use_schedulefree") is not False)


def _params() -> dict:
    """name, lr, then every optimizer setting, optional (unset: the optimizer's default)."""
    params = {
        "name": Param(Choice(*NAMES), "adamw", doc="which optimizer (docs/optimizers.md: the package each needs, "
                                                   "its settings); prodigy*, dadapt_*: use lr 1.0"),
        "lr": Param(float, 1e-4, min=0, doc="learning rate (peak, before the schedule; learning-rate free "
                                             "optimizers: a multiplier of their estimate)"),
    }
    for setting, (kind, lo, hi, _what) in SETTINGS.items():
        params[setting] = Param(kind, None, min=lo, max=hi, optional=True, doc=setting_doc(setting))
    return params


OptimizerParams = type("OptimizerParams", (), _params())


@node("train.optimizer", title="Optimizer", category="Training")
class Optimizer(OptimizerParams):
    """Choose the optimizer and its settings. The loop builds it over the model's trainable weights (each
    part at its own learning rate where the setup gives one). A setting left unset takes the optimizer's
    default; a setting the chosen optimizer does not read is ignored, with a warning."""

    optimizer = Output(OptimizerSpec, doc="optimizer settings for train.loop")

    def values(self) -> dict:
        return {s: getattr(self, s, None) for s in SETTINGS}

    def check(self, c) -> None:
        """A missing package is an error; settings the optimizer ignores, and an lr far from 1 for a
        learning-rate free optimizer, are warnings."""
        why = missing_package(self.name)
        if why:
            c.error(why, param="name")
        entry = OPTIMIZERS[self.name]
        for setting, value in self.values().items():
            if value is not None and setting not in entry.settings:
                c.warn(f"{setting} is not read by {self.name}, it is ignored", param=setting)
        if entry.adaptive and not 0.1 <= self.lr <= 10:
            c.warn(f"{self.name} estimates its own step size and lr multiplies it: use lr near 1.0 "
                   f"(it is {self.lr:g})", param="lr")

    def run(self, ctx):
        why = missing_package(self.name)
        if why:
            raise RuntimeError(why)
        entry = OPTIMIZERS[self.name]
        values = {s: v for s, v in self.values().items() if s in entry.settings}
        resolved = {s: entry.resolved(s, values.get(s)) for s in FIELDS}
        extra = {s: v for s, v in values.items() if s not in FIELDS and v is not None}
        return {"optimizer": OptimizerConfig(self.name, self.lr, resolved["weight_decay"],
                                             (resolved["beta1"], resolved["beta2"]), resolved["eps"],
                                             resolved["momentum"], extra)}
