"""The denoising-diffusion objective (DDPM-style epsilon / v-prediction) as a node.

Family-agnostic: it asks the model for ``latents(batch)``, its ``noise_scheduler``
and ``predict(noisy, timesteps, batch)``. Flow-matching models train with
train.flow_matching_objective (nodes/train/flow_objective.py) instead. Its output declares the models it serves
(``Output(Objective, serves=...)``), so train.loop refuses, at validation and in
the editor, a model of a kind this objective does not train.
"""

from __future__ import annotations

from dataclasses import dataclass

from runtime import Choice, Output, Param, node
from runtime.port_types import DDPMModel, Objective

LOSS_WEIGHT = "loss_weight"


def elementwise_loss(kind: str, pred, target, huber_delta: float = 1.0):
    import torch.nn.functional as F

    if kind == "mse":
        return F.mse_loss(pred, target, reduction="none")
    if kind == "l1":
        return F.l1_loss(pred, target, reduction="none")
    if kind == "huber":
        return F.huber_loss(pred, target, reduction="none", delta=huber_delta)
    raise ValueError(f"unknown loss {kind!r}")


def snr(scheduler, timesteps):
    """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) at ``timesteps``."""
    ac = scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    return ac / (1.0 - ac)


def min_snr_weights(scheduler, timesteps, gamma: float, prediction_type: str):
    """Min-SNR-gamma loss weights (Hang et al. 2023): min(SNR, gamma) / SNR, or / (SNR + 1) for v."""
    import torch

    s = snr(scheduler, timesteps)
    clipped = torch.clamp(s, max=gamma)
    return clipped / (s + 1.0) if prediction_type == "v_prediction" else clipped / s


@dataclass
class DiffusionObjective:
    """Noise, timesteps and loss for one batch; ``loss(model, batch, generator)`` -> (loss, metrics)."""

    prediction: str = "model"
    min_timestep: int = 0
    max_timestep: int = 1000
    offset_noise: float = 0.0
    min_snr_gamma: float = 0.0
    loss_kind: str = "mse"
    huber_delta: float = 1.0

    def prediction_type(self, model) -> str:
        return model.prediction_type if self.prediction == "model" else self.prediction

    def sample_noise(self, x0, generator):
        import torch

        noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(x0.device)
        if self.offset_noise > 0:
            offset = torch.randn((x0.shape[0], x0.shape[1]) + (1,) * (x0.ndim - 2), generator=generator)
            noise = noise + self.offset_noise * offset.to(x0.device)
        return noise

    def sample_timesteps(self, n: int, scheduler, generator, device):
        import torch

        total = int(scheduler.config.num_train_timesteps)
        lo, hi = max(0, self.min_timestep), min(total, self.max_timestep)
        if lo >= hi:
            raise ValueError(f"timestep range [{lo}, {hi}) is empty (the schedule has {total} timesteps)")
        return torch.randint(lo, hi, (n,), generator=generator).to(device)

    def loss(self, model, batch: dict, generator):
        import torch

        from .ddpm import check_ddpm

        check_ddpm(model, "train.diffusion_objective")
        x0 = model.latents(batch).float()
        scheduler = model.noise_scheduler
        noise = self.sample_noise(x0, generator)
        t = self.sample_timesteps(x0.shape[0], scheduler, generator, x0.device)
        noisy = scheduler.add_noise(x0, noise, t)
        pred_type = self.prediction_type(model)
        if pred_type == "epsilon":
            target = noise
        elif pred_type == "v_prediction":
            target = scheduler.get_velocity(x0, noise, t)
        else:
            raise ValueError(f"prediction type {pred_type!r} is not supported by this objective")
        pred = model.predict(noisy, t, batch).float()
        per_sample = elementwise_loss(self.loss_kind, pred, target, self.huber_delta)
        per_sample = per_sample.mean(dim=tuple(range(1, per_sample.ndim)))
        if self.min_snr_gamma > 0:
            per_sample = per_sample * min_snr_weights(scheduler, t, self.min_snr_gamma, pred_type)
        if LOSS_WEIGHT in batch:
            w = torch.as_tensor(batch[LOSS_WEIGHT], dtype=torch.float32, device=per_sample.device).reshape(-1)
            per_sample = per_sample * w
        return per_sample.mean(), {"timestep_mean": float(t.float().mean())}


@node("train.diffusion_objective", title="Diffusion objective", category="Training")
class DiffusionObjectiveNode:
    """Denoising objective for epsilon- or v-prediction models: noise, timestep range, offset noise,
    min-SNR weighting and the loss function (MSE, L1, Huber). Per-sample ``loss_weight`` fields are applied."""

    objective = Output(Objective, serves=DDPMModel, doc="the objective for train.loop")
    prediction = Param(Choice("model", "epsilon", "v_prediction"), "model",
                       doc="target: what the model was trained to predict (model), or force one")
    min_timestep = Param(int, 0, min=0, max=1000, doc="lowest training timestep (inclusive)")
    max_timestep = Param(int, 1000, min=1, max=1000, doc="highest training timestep (exclusive)")
    offset_noise = Param(float, 0.0, min=0, max=1, doc="offset-noise strength (0.05-0.1 helps very dark/bright images)")
    min_snr_gamma = Param(float, 0.0, min=0, doc="min-SNR-gamma loss weighting; 0 = off, 5 is usual")
    loss = Param(Choice("mse", "l1", "huber"), "mse", doc="loss between prediction and target")
    huber_delta = Param(float, 1.0, min=0, doc="Huber delta (huber loss)")

    def run(self, ctx):
        if self.min_timestep >= self.max_timestep:
            raise ValueError(f"min_timestep {self.min_timestep} must be below max_timestep {self.max_timestep}")
        return {"objective": DiffusionObjective(self.prediction, self.min_timestep, self.max_timestep,
                                                self.offset_noise, self.min_snr_gamma, self.loss, self.huber_delta)}
