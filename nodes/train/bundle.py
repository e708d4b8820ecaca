"""The generic model value: what the training loop and objectives need from any family.

A family (SD 1.x/2.x, later SDXL, SD3, Flux) subclasses ``ModelBundle`` with its
own parts and implements ``predict``; the generic nodes never look further.
No torch import at module level: listing nodes must not need it.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any as _Any, Iterator


class ModelBundle:
    """Base of model values. Subclasses are dataclasses holding torch modules as fields.

    Contract used by the generic nodes:

    - ``family`` / ``version``: e.g. ``"sd"`` / ``"sd1"``; savers and samplers check it.
    - ``part_names``: names of the fields holding ``torch.nn.Module`` parts.
    - a family trained on DDPM noise derives from ``nodes.train.ddpm.DDPMBundle``, which adds
      ``noise_scheduler`` and ``prediction_type`` (what the DDPM objective reads).
    - ``latents(batch)`` -> the clean latents of a batch, and
      ``predict(noisy, timesteps, batch)`` -> the denoiser's output.
    """

    family: str = ""
    version: str = ""
    part_names: tuple[str, ...] = ()
    #: set by train.loop: {"step": optimizer updates done, "epoch": ...}
    progress: dict = {}

    # -- parts ----------------------------------------------------------------
    def parts(self) -> dict[str, _Any]:
        """The torch modules of this model by name (missing optional parts left out)."""
        return {n: getattr(self, n) for n in self.part_names if getattr(self, n, None) is not None}

    def trained_parts(self) -> dict[str, _Any]:
        """Parts that have at least one trainable parameter."""
        return {n: m for n, m in self.parts().items() if any(p.requires_grad for p in m.parameters())}

    def trainable_parameters(self) -> list:
        seen, out = set(), []
        for part in self.trained_parts().values():
            for p in part.parameters():
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
        return out

    def param_groups(self) -> list[dict]:
        """Optimizer parameter groups: one group of every trainable weight, or, when a setup gave parts
        their own learning rate (a ``learning_rates`` field: part -> rate, 0 = the optimizer's), one
        group per trained part with an ``lr`` key where it has one."""
        rates = getattr(self, "learning_rates", None) or {}
        if not any(rates.values()):
            return [{"params": self.trainable_parameters()}]
        return self.param_groups_by_part(rates)

    def param_groups_by_part(self, learning_rates: dict) -> list[dict]:
        """One group per trained part (``name`` key = the part), with ``lr`` where ``learning_rates``
        gives the part a non-zero one (the others use the optimizer's learning rate)."""
        groups, seen = [], set()
        for name, part in self.trained_parts().items():
            params = [p for p in part.parameters() if p.requires_grad and id(p) not in seen]
            seen.update(id(p) for p in params)
            if not params:
                continue
            group = {"params": params, "name": name}
            if learning_rates.get(name):
                group["lr"] = float(learning_rates[name])
            groups.append(group)
        return groups

    def named_trainable_parameters(self) -> Iterator[tuple[str, _Any]]:
        for name, part in self.trained_parts().items():
            for pname, p in part.named_parameters():
                if p.requires_grad:
                    yield f"{name}.{pname}", p

    # -- training setup ---------------------------------------------------------
    @property
    def device(self):
        for part in self.parts().values():
            for p in part.parameters():
                return p.device
        import torch

        return torch.device("cpu")

    def prepare_for_training(self, device, gradient_checkpointing: bool = False) -> None:
        """Move the parts the loop runs to ``device``; trained parts in train mode, others in eval."""
        trained = self.trained_parts()
        for name, part in self.parts().items():
            if name in self.training_parts():
                part.to(device)
            part.train(name in trained)
        if gradient_checkpointing:
            for name, part in trained.items():
                enable = getattr(part, "enable_gradient_checkpointing", None) or getattr(
                    part, "gradient_checkpointing_enable", None)
                if enable is None:
                    raise ValueError(f"part {name!r} does not support gradient checkpointing")
                enable()

    def prepare_for_inference(self) -> None:
        for part in self.parts().values():
            part.eval()

    def training_parts(self) -> tuple[str, ...]:
        """Parts the training forward runs (moved to the training device). Default: all."""
        return self.part_names

    # -- objective interface -----------------------------------------------------
    def latents(self, batch: dict) -> _Any:
        raise NotImplementedError(f"{type(self).__name__} does not provide latents()")

    def predict(self, noisy, timesteps, batch: dict) -> _Any:
        raise NotImplementedError(f"{type(self).__name__} does not provide predict()")

    # -- adapters ------------------------------------------------------------------
    def adapter_layers(self) -> list:
        """The peft tuner layers (LoRA, DoRA, LoHa, LoKr, OFT, ...: any ``BaseTunerLayer``) in the parts."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        seen, out = set(), []
        for part in self.parts().values():
            for module in part.modules():
                if isinstance(module, BaseTunerLayer) and id(module) not in seen:
                    seen.add(id(module))
                    out.append(module)
        return out

    @contextmanager
    def adapters_disabled(self, node: str = "the objective"):
        """Run the model as its base, with every adapter of every part off (peft's own switch, what
        diffusers' and transformers' ``disable_adapters()`` flip); on exit each layer is as it was, with
        its parameters' ``requires_grad`` restored (peft's switch also changes those)."""
        layers = self.adapter_layers()
        if not layers:
            family = self.family or type(self).__name__
            raise ValueError(f"{node}: the base model's prediction (role 'prior_prediction') needs a model with "
                             f"adapters, e.g. from a LoRA setup; this {family!r} model has none")
        was_off = [layer.disable_adapters for layer in layers]
        grads = [(p, p.requires_grad) for layer in layers for p in layer.parameters()]
        for layer in layers:
            layer.enable_adapters(False)
        try:
            yield self
        finally:
            for layer, off in zip(layers, was_off):
                layer.enable_adapters(not off)
            for p, flag in grads:
                p.requires_grad_(flag)

    def describe(self) -> dict:
        """Short facts for logs and file metadata."""
        return {"family": self.family, "version": self.version}


def require_field(batch: dict, key: str, how: str, node: str = "the objective") -> _Any:
    """``batch[key]`` or a clear error listing the fields the batches do have and how to wire ``key``."""
    if key not in batch:
        have = ", ".join(sorted(k for k in batch if not k.startswith("_"))) or "none"
        raise ValueError(f"{node}: the batches have no field {key!r} (they have: {have}); {how}")
    return batch[key]


def require_model(model: _Any, cls: type, node: str, what: str) -> _Any:
    """``model`` if it is a ``cls``, else a TypeError: ``{node} needs {what}, got a '<family>' model``."""
    if not isinstance(model, cls):
        family = getattr(model, "family", "") or type(model).__name__
        raise TypeError(f"{node} needs {what}, got a {family!r} model")
    return model
