"""The optimizer node: a spec the training loop turns into an optimizer over the trainable parameters."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

from runtime import Choice, Output, Param, node
from runtime.port_types import OptimizerSpec

#: optimizer name -> (package needed, pip name); None = ships with torch / transformers
OPTIONAL_PACKAGES = {"adamw8bit": ("bitsandbytes", "bitsandbytes"), "prodigy": ("prodigyopt", "prodigyopt")}


@dataclass
class OptimizerConfig:
    """Which optimizer and its settings; ``build(params)`` makes it."""

    name: str
    lr: float
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    momentum: float = 0.0
    extra: dict = field(default_factory=dict)

    def build(self, params):
        import torch

        name, lr, wd = self.name, self.lr, self.weight_decay
        params = list(params)
        if name == "adamw":
            return torch.optim.AdamW(params, lr=lr, betas=self.betas, eps=self.eps, weight_decay=wd,
                                     **fused_kernel(params))
        if name == "adam":
            return torch.optim.Adam(params, lr=lr, betas=self.betas, eps=self.eps, weight_decay=wd,
                                    **fused_kernel(params))
        if name == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=self.momentum, weight_decay=wd, **fused_kernel(params))
        if name == "adafactor":
            from transformers.optimization import Adafactor

            # a fixed learning rate, so the LR schedule node stays in charge
            return Adafactor(params, lr=lr, weight_decay=wd, scale_parameter=False, relative_step=False,
                             warmup_init=False)
        if name == "adamw8bit":
            import bitsandbytes as bnb

            return bnb.optim.AdamW8bit(params, lr=lr, betas=self.betas, eps=self.eps, weight_decay=wd)
        if name == "prodigy":
            from prodigyopt import Prodigy

            return Prodigy(params, lr=lr, betas=self.betas, weight_decay=wd, **self.extra)
        raise ValueError(f"unknown optimizer {name!r}")


def fused_kernel(params: list) -> dict:
    """``{"fused": True}`` when torch has a fused kernel for every weight (floating point, on a device it
    supports), else ``{}`` (torch's own choice). On a CPU torch's default is one small op per weight and
    state tensor: for a LoRA's hundreds of small tensors the fused AdamW step is several times faster."""
    from torch.optim.optimizer import _get_fused_kernels_supported_devices

    devices = set(_get_fused_kernels_supported_devices())
    tensors = [t for p in params for t in (p["params"] if isinstance(p, dict) else [p])]
    ok = tensors and all(t.is_floating_point() and t.device.type in devices for t in tensors)
    return {"fused": True} if ok else {}


def missing_package(name: str) -> str | None:
    """A message when ``name`` needs a package that is not installed, else None."""
    need = OPTIONAL_PACKAGES.get(name)
    if need and importlib.util.find_spec(need[0]) is None:
        return (f"optimizer {name!r} needs the {need[0]!r} package, which is not installed "
                f"(pip install {need[1]}); or choose adamw, adam, sgd or adafactor")
    return None


@node("train.optimizer", title="Optimizer", category="Training")
class Optimizer:
    """Choose the optimizer and its settings. The loop builds it over the model's trainable weights."""

    optimizer = Output(OptimizerSpec, doc="optimizer settings for train.loop")
    name = Param(Choice("adamw", "adam", "sgd", "adafactor", "adamw8bit", "prodigy"), "adamw",
                 doc="adamw8bit needs bitsandbytes, prodigy needs prodigyopt (use lr 1.0)")
    lr = Param(float, 1e-4, min=0, doc="learning rate (peak, before the schedule)")
    weight_decay = Param(float, 0.01, min=0, doc="decoupled weight decay (L2 for adam and sgd)")
    beta1 = Param(float, 0.9, min=0, max=1, doc="Adam beta1")
    beta2 = Param(float, 0.999, min=0, max=1, doc="Adam beta2")
    eps = Param(float, 1e-8, min=0, doc="Adam epsilon")
    momentum = Param(float, 0.0, min=0, max=1, doc="SGD momentum")

    def run(self, ctx):
        why = missing_package(self.name)
        if why:
            raise RuntimeError(why)
        return {"optimizer": OptimizerConfig(self.name, self.lr, self.weight_decay, (self.beta1, self.beta2),
                                             self.eps, self.momentum)}
