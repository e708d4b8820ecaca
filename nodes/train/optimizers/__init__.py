"""The optimizer catalogue of ``train.optimizer``: one table, name -> ``Entry`` (package, constructor,
the node settings it reads), gathered from one small module per library.

``build_optimizer(name, lr, settings, params, kernel)`` makes one over the param groups (groups may
carry their own ``lr``: per-part learning rates). Nothing here imports torch or an optimizer library
until an optimizer is built.
"""

from __future__ import annotations

import importlib.util

from . import (bitsandbytes_lib, builtin_lib, dadaptation_lib, lion_lib, prodigy_lib, pytorch_optimizer_lib,
               schedulefree_lib)
from .entry import KERNELS, Entry
from .settings import SETTINGS, settings_doc

__all__ = ["OPTIMIZERS", "NAMES", "KERNELS", "SETTINGS", "Entry", "build_optimizer", "missing_package",
           "readers", "setting_doc", "effective_lrs", "fused_kernel"]

# nodetrainer's first six first (their order in saved editor choices), then by library
_FIRST = ("adamw", "adam", "sgd", "adafactor", "adamw8bit", "prodigy")
_ALL: dict[str, Entry] = {}
for _lib in (builtin_lib, bitsandbytes_lib, prodigy_lib, lion_lib, schedulefree_lib, pytorch_optimizer_lib,
             dadaptation_lib):
    _ALL.update(_lib.OPTIMIZERS)
OPTIMIZERS: dict[str, Entry] = {**{n: _ALL[n] for n in _FIRST}, **_ALL}
NAMES: tuple[str, ...] = tuple(OPTIMIZERS)


def readers(setting: str) -> list[str]:
    """The optimizers that read ``setting``."""
    return [n for n, e in OPTIMIZERS.items() if setting in e.settings]


def setting_doc(setting: str) -> str:
    return settings_doc(setting, readers(setting), list(NAMES))


def missing_package(name: str) -> str | None:
    """One line when optimizer ``name`` needs a package that is not installed, else None."""
    entry = OPTIMIZERS.get(name)
    if entry is None or entry.package is None or importlib.util.find_spec(entry.package) is not None:
        return None
    return (f"optimizer {name!r} needs the {entry.package!r} package, which is not installed "
            f"(pip install {entry.pip}, or pip install 'nodetrainer[optim]' for all of them); "
            "or choose adamw, adam, sgd or adafactor")


def fused_kernel(params: list) -> dict:
    """``{"fused": True}`` when torch has a fused kernel for every weight (floating point, on a device it
    supports), else ``{}`` (torch's own choice). On a CPU torch's default is one small op per weight and
    state tensor: for a LoRA's hundreds of small tensors the fused AdamW step is several times faster."""
    from torch.optim.optimizer import _get_fused_kernels_supported_devices

    devices = set(_get_fused_kernels_supported_devices())
    tensors = _tensors(params)
    ok = tensors and all(t.is_floating_point() and t.device.type in devices for t in tensors)
    return {"fused": True} if ok else {}


#: the optimizers whose fused kernel torch's DTensor implements (FSDP's sharded weights)
DTENSOR_FUSED = ("adamw", "adam")


def _sharded(params) -> bool:
    """Some weight is a DTensor (sharded by FSDP: distributed: fsdp)."""
    import sys

    if "torch.distributed.tensor" not in sys.modules:
        return False
    from torch.distributed.tensor import DTensor

    return any(isinstance(t, DTensor) for t in _tensors(params))


def kernel_kwargs(name: str, entry: Entry, kernel: str, params: list) -> dict:
    """Constructor arguments for the ``kernel`` choice; a choice the optimizer lacks is an error."""
    if kernel not in KERNELS:
        raise ValueError(f"train.optimizer: unknown kernel {kernel!r}; choose one of {', '.join(KERNELS)}")
    if kernel == "auto":
        if "fused" not in entry.kernels or (name not in DTENSOR_FUSED and _sharded(params)):
            return {}  # torch's DTensor has no fused sgd/adagrad step: torch's own (foreach) choice
        return fused_kernel(params)
    if kernel not in entry.kernels:
        have = ", ".join(("auto", *entry.kernels))
        raise ValueError(f"train.optimizer: optimizer {name!r} has no {kernel!r} kernel (it has: {have})")
    return {"fused": {"fused": True}, "foreach": {"foreach": True}, "for-loop": {"foreach": False}}[kernel]


def build_optimizer(name: str, lr: float, settings: dict, params, kernel: str = "auto"):
    """The optimizer ``name`` over ``params`` (tensors or param groups) with ``lr`` and the node
    ``settings`` (name -> value; None or absent: the optimizer's default)."""
    entry = OPTIMIZERS.get(name)
    if entry is None:
        raise ValueError(f"train.optimizer: unknown optimizer {name!r}; choose one of {', '.join(NAMES)}")
    why = missing_package(name)
    if why:
        raise ImportError(why)
    params = list(params)
    groups = [dict(g) for g in params] if params and isinstance(params[0], dict) else [{"params": params}]
    if entry.groups is not None:
        groups = entry.groups(groups, lr, settings)
    kwargs = {"lr": lr, **entry.kwargs(settings), **kernel_kwargs(name, entry, kernel, groups)}
    if entry.finish is not None:
        kwargs = entry.finish(kwargs)
    optimizer = entry.constructor()(groups, **kwargs)
    if entry.schedule_free:
        optimizer.train()  # schedulefree's optimizers start in eval mode and refuse to step there
    return optimizer


_ADAPTIVE = {e.target.rpartition(":")[2] for e in OPTIMIZERS.values() if e.adaptive}


def effective_lrs(optimizer) -> list[float]:
    """Each param group's learning rate as it acts: ``d * lr`` (times ``layer_scale``) for the
    learning-rate free optimizers (D-Adaptation, Prodigy), the group's ``lr`` for the others."""
    adaptive = type(optimizer).__name__ in _ADAPTIVE
    out = []
    for group in optimizer.param_groups:
        lr = float(group.get("lr") or 0.0)
        if adaptive and "d" in group:
            lr *= float(group["d"]) * float(group.get("layer_scale", 1.0))
        out.append(lr)
    return out


def _tensors(params) -> list:
    return [t for p in params for t in (p["params"] if isinstance(p, dict) else [p])]
