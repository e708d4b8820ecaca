"""One optimizer of the catalogue: where it comes from, which node settings it reads, how it is built.

An ``Entry`` maps node settings (``beta1``, ``eps``, ...) to the constructor's keyword arguments;
``"betas[1]"`` is item 1 of a tuple argument, filled from the constructor's default tuple where the
other items are unset. A setting left unset (None) takes ``defaults`` (where nodetrainer keeps an
earlier or OneTrainer's value), else the library's own default: it is then not passed at all.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any as _Any, Callable

#: how the optimizer step runs over the weights (``build(params, kernel=...)``)
KERNELS = ("auto", "fused", "foreach", "for-loop")


@dataclass(frozen=True)
class Entry:
    """``target`` is ``"module:Class"``; ``package``/``pip`` name what must be installed (None: it ships
    with torch or transformers)."""

    target: str
    settings: dict[str, str]
    package: str | None = None
    pip: str | None = None
    defaults: dict[str, _Any] = field(default_factory=dict)
    #: the kernel choices the class implements besides "auto": "fused", "foreach", "for-loop"
    kernels: tuple[str, ...] = ()
    #: learning-rate free (D-Adaptation, Prodigy): lr is a multiplier of the estimated step size d
    adaptive: bool = False
    #: schedule-free: the weights must be switched with optimizer.eval()/train() around inference
    schedule_free: bool = False
    #: groups -> groups, for optimizers that split the weights (Muon and its auxiliary AdamW)
    groups: Callable | None = None
    #: kwargs -> kwargs, a last adjustment (Adafactor drops lr under relative_step)
    finish: Callable | None = None
    summary: str = ""

    def constructor(self):
        module, _, attr = self.target.partition(":")
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj

    def library_default(self, setting: str):
        """The constructor's default for ``setting`` (None when it has none)."""
        kw, index = split_key(self.settings[setting])
        value = _signature_defaults(self.constructor()).get(kw)
        if index is not None:
            return value[index] if isinstance(value, (tuple, list)) and index < len(value) else None
        return value

    def resolved(self, setting: str, value):
        """What the optimizer will use for ``setting``: the value, else ours, else the library's."""
        if value is not None:
            return value
        if setting in self.defaults:
            return self.defaults[setting]
        return self.library_default(setting) if setting in self.settings else None

    def kwargs(self, values: dict) -> dict:
        """Constructor keyword arguments from node settings (unset ones: ours, else left out)."""
        given = {k: (v if v is not None else self.defaults.get(k)) for k, v in values.items() if k in self.settings}
        given.update({k: v for k, v in self.defaults.items() if given.get(k) is None})
        out: dict = {}
        signature = _signature_defaults(self.constructor())
        for setting, value in given.items():
            if value is None:
                continue
            kw, index = split_key(self.settings[setting])
            if index is None:
                out[kw] = value
                continue
            items = list(out.get(kw) or signature.get(kw) or ())
            items += [None] * (index + 1 - len(items))
            items[index] = value
            out[kw] = items
        return {k: tuple(v) if isinstance(v, list) else v for k, v in out.items()}


def split_key(key: str) -> tuple[str, int | None]:
    """``"betas[1]"`` -> ``("betas", 1)``; ``"eps"`` -> ``("eps", None)``."""
    if key.endswith("]") and "[" in key:
        name, _, index = key[:-1].partition("[")
        return name, int(index)
    return key, None


def _signature_defaults(cls) -> dict:
    try:
        params = inspect.signature(cls.__init__ if inspect.isclass(cls) else cls).parameters
    except (TypeError, ValueError):
        return {}
    return {n: p.default for n, p in params.items() if p.default is not inspect.Parameter.empty}


def one_rate(library: str, alternatives: str):
    """A ``groups`` hook for optimizers whose library allows a single learning rate for all groups:
    per-part rates are refused when the optimizer is built (the library would fail at its first step)."""

    def check(groups: list[dict], lr: float, settings: dict) -> list[dict]:
        rates = sorted({g["lr"] for g in groups if g.get("lr") not in (None, lr, 0.0)})
        if rates:
            raise ValueError(f"train.optimizer: {library} takes one learning rate for every part, but a part "
                             f"has its own ({rates[0]:g} against lr {lr:g}): give the parts no rates of their "
                             f"own, or use {alternatives}")
        return groups

    return check


def layer_scale(groups: list[dict], lr: float, settings: dict) -> list[dict]:
    """Per-part rates as D-Adaptation Adam's ``layer_scale`` (its groups must share one lr)."""
    out = []
    for group in groups:
        rate = group.get("lr")
        if rate is None or rate == lr or not lr:
            out.append(group)
        else:
            out.append({**group, "lr": lr, "layer_scale": group.get("layer_scale", 1.0) * rate / lr})
    return out
