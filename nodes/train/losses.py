"""What both objectives share between a prediction and the scalar loss: the loss kinds (MSE, MAE,
log-cosh, Huber and a weighted mix), masked training, per-item roles (prior preservation) with the
frozen base model's prediction as a target, and the per-sample weights.

``LossParams`` declares the node params once (train.diffusion_objective and
train.flow_matching_objective inherit them); ``LossTerms`` is the dataclass part of each objective.
No torch import at module level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any as _Any, Callable

from runtime import Choice, Param

from .sample_draws import DRAWS, SampleDraws, draw, item_seeds

LOSS_WEIGHT = "loss_weight"
MASK = "mask"
ROLE = "role"
LOSS_KINDS = ("mse", "l1", "huber", "log_cosh", "mix")
#: the strengths of ``loss: mix`` (OneTrainer's names) and their defaults: MSE alone
STRENGTHS = {"mse_strength": 1.0, "mae_strength": 0.0, "log_cosh_strength": 0.0, "huber_strength": 0.0}
ROLES = ("standard", "prior", "prior_prediction")
MASKED_TRAINING = ("auto", "on", "off")


def log_cosh(diff):
    """log(cosh(d)) without overflow: |d| + softplus(-2|d|) - log 2."""
    import torch.nn.functional as F

    a = diff.abs()
    return a + F.softplus(-2.0 * a) - math.log(2.0)


def elementwise_loss(kind: str, pred, target, huber_delta: float = 1.0, strengths: dict | None = None):
    """The loss per element of ``pred`` against ``target``: mse, l1 (MAE), huber (``huber_delta``),
    log_cosh, or mix: the sum of each of those weighted by ``strengths`` (``STRENGTHS``' keys)."""
    import torch.nn.functional as F

    if kind == "mse":
        return F.mse_loss(pred, target, reduction="none")
    if kind == "l1":
        return F.l1_loss(pred, target, reduction="none")
    if kind == "huber":
        return F.huber_loss(pred, target, reduction="none", delta=huber_delta)
    if kind == "log_cosh":
        return log_cosh(pred - target)
    if kind == "mix":
        s = {**STRENGTHS, **(strengths or {})}
        parts = {"mse_strength": "mse", "mae_strength": "l1", "log_cosh_strength": "log_cosh",
                 "huber_strength": "huber"}
        total = None
        for key, part in parts.items():
            if s[key]:
                term = s[key] * elementwise_loss(part, pred, target, huber_delta)
                total = term if total is None else total + term
        if total is None:
            raise ValueError("loss 'mix' needs at least one strength above 0")
        return total
    raise ValueError(f"unknown loss {kind!r} (one of {', '.join(LOSS_KINDS)})")


def latent_mask(mask, shape, node: str):
    """The batch's ``mask`` field (B, 1, H, W) in [0, 1] at any resolution (or a list of (1, H, W)),
    area-resized to the spatial size of ``shape`` (B, C, h, w): a latent cell is the share of its pixels
    that train. float32, on the CPU."""
    import torch
    import torch.nn.functional as F

    if len(shape) != 4:
        raise ValueError(f"{node}: masked training needs (batch, channels, height, width) latents, got {tuple(shape)}")
    if isinstance(mask, (list, tuple)):  # items of different sizes: each (1, H, W) or (H, W)
        items = [torch.as_tensor(m).float().cpu() for m in mask]
        mask = torch.cat([F.interpolate(m.reshape(1, 1, *m.shape[-2:]), size=tuple(shape[-2:]), mode="area")
                          for m in items])
    else:
        mask = torch.as_tensor(mask).float().cpu()
        if mask.ndim == 3:
            mask = mask[:, None]
        if mask.ndim != 4 or mask.shape[1] != 1:
            raise ValueError(f"{node}: batch field 'mask' must be (batch, 1, height, width), got {tuple(mask.shape)}")
        mask = F.interpolate(mask, size=tuple(shape[-2:]), mode="area")
    if mask.shape[0] != shape[0]:
        raise ValueError(f"{node}: batch field 'mask' has {mask.shape[0]} items for {shape[0]} latents")
    return mask.clamp(0.0, 1.0)


def roles(batch: dict, n: int, node: str) -> list[str]:
    """The batch's ``role`` per item (all ``standard`` without the field); a clear error for a bad one."""
    value = batch.get(ROLE)
    if value is None:
        return ["standard"] * n
    out = [value] * n if isinstance(value, str) else [str(v) for v in value]
    if len(out) != n:
        raise ValueError(f"{node}: batch field 'role' has {len(out)} entries for {n} items")
    for i, r in enumerate(out):
        if r not in ROLES:
            raise ValueError(f"{node}: batch field 'role' of item {i} is {r!r}; roles are {', '.join(ROLES)}")
    return out


@dataclass
class LossTerms:
    """The loss settings both objectives share; ``reduce`` turns (prediction, target) into per-sample
    losses, ``prior_targets`` swaps in the base model's prediction, ``sample_weights`` the batch's
    per-item weights."""

    loss_kind: str = "mse"
    huber_delta: float = 1.0
    mse_strength: float = 1.0
    mae_strength: float = 0.0
    log_cosh_strength: float = 0.0
    huber_strength: float = 0.0
    masked_training: str = "auto"
    unmasked_probability: float = 0.1
    unmasked_weight: float = 0.1
    normalize_masked_area: bool = False
    prior_loss_weight: float = 1.0
    draws: str = "per_batch"  #: per_batch: the loop's generator; per_sample: one per item (sample_draws.py)
    draw_seed: int = 0  #: per_sample: the seed mixed with the node id, then with each item's epoch and index

    node_name = "the objective"

    def generator_for(self, batch: dict, n: int, generator):
        """Where this batch's draws come from: ``generator`` (per_batch), or a ``SampleDraws`` with one
        generator per item seeded by (``draw_seed``, the batch's ``_epoch``, the item's ``_index``)."""
        if self.draws == "per_batch":
            return generator
        if self.draws != "per_sample":
            raise ValueError(f"{self.node_name}: unknown draws {self.draws!r} (one of {', '.join(DRAWS)})")
        return SampleDraws(item_seeds(batch, self.draw_seed, n, self.node_name))

    def strengths(self) -> dict:
        return {k: getattr(self, k) for k in STRENGTHS}

    def uses_mask(self, batch: dict) -> bool:
        """Masked training for this batch: on, or auto and the batch has a ``mask`` field."""
        if self.masked_training == "off":
            return False
        if MASK in batch and batch[MASK] is not None:
            return True
        if self.masked_training == "on":
            have = ", ".join(sorted(k for k in batch if not k.startswith("_"))) or "none"
            raise ValueError(f"{self.node_name}: masked_training is on but the batches have no field 'mask' "
                             f"(they have: {have}); wire data.to_tensor's mask into data.batches")
        return False

    def mask_weights(self, batch: dict, shape, generator):
        """Per-element loss weights (B, 1, h, w) from the batch's mask, or None without masked training:
        the mask floored at ``unmasked_weight``, all 1 for items drawn with ``unmasked_probability``."""
        import torch

        if not self.uses_mask(batch):
            return None
        w = latent_mask(batch[MASK], shape, self.node_name).clamp(min=self.unmasked_weight)
        if self.unmasked_probability > 0:
            whole = draw(generator, shape[0], lambda n, g: torch.rand(n, generator=g)) < self.unmasked_probability
            w[whole] = 1.0
        return w

    def reduce(self, pred, target, batch: dict, generator):
        """Per-sample losses (B,): the elementwise loss, weighted by the mask where masked training is on
        (and divided by the mask's mean weight with ``normalize_masked_area``), averaged per sample."""
        elem = elementwise_loss(self.loss_kind, pred, target, self.huber_delta, self.strengths())
        dims = tuple(range(1, elem.ndim))
        w = self.mask_weights(batch, tuple(elem.shape), generator)
        if w is None:
            return elem.mean(dim=dims)
        w = w.to(elem.device)
        per_sample = (elem * w).mean(dim=dims)
        if self.normalize_masked_area:
            per_sample = per_sample / w.mean(dim=dims).clamp_min(1e-8)
        return per_sample

    def prior_targets(self, model, batch: dict, target, predict: Callable[[], _Any]):
        """``target`` with the items whose role is ``prior_prediction`` replaced by ``predict()`` run with
        the model's adapters disabled and without gradients (the frozen base model's prediction for the
        same noisy input, timestep and conditioning). The whole batch runs, so conditioning stays as is."""
        import torch

        which = [r == "prior_prediction" for r in roles(batch, target.shape[0], self.node_name)]
        if not any(which):
            return target
        with model.adapters_disabled(self.node_name), torch.no_grad():
            base = predict().float().to(target.device)
        pick = torch.tensor(which, device=target.device).reshape((-1,) + (1,) * (target.ndim - 1))
        return torch.where(pick, base, target)

    def sample_weights(self, batch: dict, n: int, device):
        """Per-sample weights (B,): the batch's ``loss_weight`` field times ``prior_loss_weight`` for the
        items whose role is ``prior``; None when all are 1."""
        import torch

        w = None
        if LOSS_WEIGHT in batch:
            w = torch.as_tensor(batch[LOSS_WEIGHT], dtype=torch.float32, device=device).reshape(-1)
        if ROLE in batch:
            prior = torch.tensor([self.prior_loss_weight if r == "prior" else 1.0
                                  for r in roles(batch, n, self.node_name)], device=device)
            w = prior if w is None else w * prior
        return w


class LossParams:
    """The loss params of both objective nodes (mixed into their classes)."""

    loss = Param(Choice(*LOSS_KINDS), "mse",
                 doc="loss between prediction and target: mse, l1 (MAE), huber, log_cosh, or mix (the strengths)")
    huber_delta = Param(float, 1.0, min=0, doc="Huber delta (huber loss, and huber_strength of mix)")
    mse_strength = Param(float, 1.0, min=0, doc="loss mix: weight of MSE")
    mae_strength = Param(float, 0.0, min=0, doc="loss mix: weight of MAE (l1)")
    log_cosh_strength = Param(float, 0.0, min=0, doc="loss mix: weight of log-cosh")
    huber_strength = Param(float, 0.0, min=0, doc="loss mix: weight of Huber (huber_delta)")
    masked_training = Param(Choice(*MASKED_TRAINING), "auto",
                            doc="weight the loss by the batch's 'mask' field (white = train): auto = when the "
                                "batches have one, on = require it, off = ignore it")
    unmasked_probability = Param(float, 0.1, min=0, max=1,
                                 doc="masked training: chance per item that the whole image trains unmasked")
    unmasked_weight = Param(float, 0.1, min=0, max=1,
                            doc="masked training: loss weight outside the mask (0 = nothing learnt there)")
    normalize_masked_area = Param(bool, False,
                                  doc="masked training: divide each item's loss by its mean mask weight")
    prior_loss_weight = Param(float, 1.0, min=0, max=1000,
                              doc="loss weight of items whose 'role' is prior (regularisation images)")

    def loss_problems(self) -> list[tuple[str, str]]:
        """(param, message) for loss settings that contradict each other."""
        out = []
        if self.loss == "mix":
            if not any(getattr(self, k) for k in STRENGTHS):
                out.append(("mse_strength", "loss mix needs at least one of mse_strength, mae_strength, "
                                            "log_cosh_strength, huber_strength above 0"))
        else:
            for key, default in STRENGTHS.items():
                if getattr(self, key) != default:
                    out.append((key, f"{key} {getattr(self, key)} only applies to loss mix (loss is "
                                     f"{self.loss}): set loss to mix, or {key} back to {default}"))
        return out

    def problems(self) -> list[tuple[str, str]]:
        """(param, message) for settings that contradict each other; an objective adds its own."""
        return self.loss_problems()

    def check(self, c) -> None:
        """Before a run: every contradiction, each on its param."""
        for param, message in self.problems():
            c.error(message, param=param)

    def refuse_problems(self) -> None:
        """At run time (a graph built in code skips the check): the first contradiction as a ValueError."""
        for _param, message in self.problems():
            raise ValueError(message)

    def loss_settings(self) -> dict:
        """The ``LossTerms`` fields from these params."""
        out = {k: getattr(self, k) for k in ("huber_delta", "masked_training", "unmasked_probability",
                                             "unmasked_weight", "normalize_masked_area", "prior_loss_weight",
                                             *STRENGTHS)}
        return {"loss_kind": self.loss, **out}
