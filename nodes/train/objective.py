"""The denoising-diffusion objective (DDPM-style epsilon / v-prediction) as a node.

Family-agnostic: it asks the model for ``latents(batch)``, its ``noise_scheduler``
and ``predict(noisy, timesteps, batch)``. Flow-matching models train with
train.flow_matching_objective (nodes/train/flow_objective.py) instead. Its output declares the models it serves
(``Output(Objective, serves=...)``), so train.loop refuses, at validation and in
the editor, a model of a kind this objective does not train.

One batch: noise (plus offset noise, plain or generalized), timesteps (distribution, shift, range),
``noisy = add_noise(x0, noise + perturbation, t)``, target ``noise`` or the velocity, the loss
(nodes/train/losses.py: kind, mask, roles), then the timestep weighting and the per-item weights.
Every draw comes from the loop's generator, or with ``draws: per_sample`` from each item's own
(nodes/train/sample_draws.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from runtime import Choice, Output, Param, node
from runtime.port_types import DDPMModel, Objective

from . import noise as noise_mod
from .losses import LossParams, LossTerms
from .sample_draws import DrawParams, draw
from .timesteps import DISTRIBUTIONS, Shape, sample_fractions, shift_fractions, to_timesteps

NODE = "train.diffusion_objective"
WEIGHTINGS = ("none", "min_snr_gamma", "debiased_estimation", "p2")
#: debiased estimation clips the SNR here (kohya's and OneTrainer's limit: SNR is infinite at t = 0)
DEBIASED_MAX_SNR = 1000.0


def snr(scheduler, timesteps):
    """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) at ``timesteps`` (diffusers' ``compute_snr``)."""
    from diffusers.training_utils import compute_snr

    return compute_snr(scheduler, timesteps)


def min_snr_weights(scheduler, timesteps, gamma: float, prediction_type: str):
    """Min-SNR-gamma loss weights (Hang et al. 2023): min(SNR, gamma) / SNR, or / (SNR + 1) for v."""
    import torch

    s = snr(scheduler, timesteps)
    clipped = torch.clamp(s, max=gamma)
    return clipped / (s + 1.0) if prediction_type == "v_prediction" else clipped / s


def debiased_weights(scheduler, timesteps, prediction_type: str):
    """Debiased estimation (Yu et al. 2023, kohya's and OneTrainer's form): 1 / sqrt(SNR) with SNR
    clipped at ``DEBIASED_MAX_SNR``; v-prediction: 1 / sqrt(SNR + 1) (OneTrainer's)."""
    import torch

    s = snr(scheduler, timesteps).clamp(max=DEBIASED_MAX_SNR)
    return torch.rsqrt(s + 1.0 if prediction_type == "v_prediction" else s)


def p2_weights(scheduler, timesteps, gamma: float, k: float, prediction_type: str):
    """P2 weighting (Choi et al. 2022): 1 / (k + SNR)^gamma; v-prediction uses SNR + 1 (OneTrainer's)."""
    s = snr(scheduler, timesteps)
    if prediction_type == "v_prediction":
        s = s + 1.0
    return (k + s) ** -gamma


@dataclass
class DiffusionObjective(LossTerms):
    """Noise, timesteps and loss for one batch; ``loss(model, batch, generator)`` -> (loss, metrics)."""

    prediction: str = "model"
    min_timestep: int = 0
    max_timestep: int = 1000
    offset_noise: float = 0.0
    min_snr_gamma: float = 0.0
    generalized_offset_noise: bool = False
    input_perturbation: float = 0.0
    zero_terminal_snr: bool = False
    timestep_distribution: str = "uniform"
    shape: Shape = field(default_factory=Shape)
    timestep_shift: float = 1.0
    loss_weighting: str = "none"
    p2_gamma: float = 1.0
    p2_k: float = 1.0
    _ztsnr: noise_mod.ZeroTerminalSchedule = field(default_factory=noise_mod.ZeroTerminalSchedule, repr=False,
                                                   compare=False)
    _psi: noise_mod.PsiCache = field(default_factory=noise_mod.PsiCache, repr=False, compare=False)

    node_name = NODE

    def prediction_type(self, model) -> str:
        """The target: the one asked for, else v-prediction with zero-terminal SNR, else the model's."""
        if self.prediction != "model":
            return self.prediction
        return "v_prediction" if self.zero_terminal_snr else model.prediction_type

    def schedule(self, model, prediction_type: str):
        """The model's DDPM schedule, or its zero-terminal-SNR copy (built once per schedule)."""
        if not self.zero_terminal_snr:
            return model.noise_scheduler
        return self._ztsnr(model.noise_scheduler, prediction_type)

    def sample_noise(self, x0, generator):
        """Gaussian noise like ``x0`` plus ``offset_noise`` times a per-channel constant (on x0's device)."""
        noise = noise_mod.gaussian(x0, generator)
        if self.offset_noise > 0:
            noise = noise + self.offset_noise * noise_mod.channel_offset(x0, generator)
        return noise.to(x0.device)

    def sample_timesteps(self, n: int, scheduler, generator, device):
        """``n`` timesteps in [min_timestep, max_timestep) from the distribution, shifted."""
        import torch

        total = int(scheduler.config.num_train_timesteps)
        lo, hi = max(0, self.min_timestep), min(total, self.max_timestep)
        if lo >= hi:
            raise ValueError(f"timestep range [{lo}, {hi}) is empty (the schedule has {total} timesteps)")
        if self.timestep_distribution == "uniform" and self.timestep_shift == 1.0:
            return draw(generator, n, lambda k, g: torch.randint(lo, hi, (k,), generator=g)).to(device)
        u = sample_fractions(self.timestep_distribution, n, generator, self.shape)
        if self.timestep_shift != 1.0:
            u = shift_fractions(u, self.timestep_shift)
        return to_timesteps(u, lo, hi).to(device)

    def noise_and_timesteps(self, x0, scheduler, generator):
        """(noise, timesteps); generalized offset noise scales the offset by psi_t of each timestep."""
        if not (self.generalized_offset_noise and self.offset_noise > 0):
            noise = self.sample_noise(x0, generator)
            return noise, self.sample_timesteps(x0.shape[0], scheduler, generator, x0.device)
        base, offset = noise_mod.gaussian(x0, generator), noise_mod.channel_offset(x0, generator)
        t = self.sample_timesteps(x0.shape[0], scheduler, generator, x0.device)
        psi = self._psi(scheduler)[t.cpu()].reshape((-1,) + (1,) * (x0.ndim - 1))
        return (base + self.offset_noise * psi * offset).to(x0.device), t

    def timestep_weights(self, scheduler, t, prediction_type: str):
        """Per-sample weights by timestep (None: none): min-SNR-gamma, debiased estimation or P2."""
        weighting = self.loss_weighting
        if weighting == "none" and self.min_snr_gamma > 0:
            weighting = "min_snr_gamma"
        if weighting == "min_snr_gamma":
            return min_snr_weights(scheduler, t, self.min_snr_gamma, prediction_type)
        if weighting == "debiased_estimation":
            return debiased_weights(scheduler, t, prediction_type)
        if weighting == "p2":
            return p2_weights(scheduler, t, self.p2_gamma, self.p2_k, prediction_type)
        return None

    def loss(self, model, batch: dict, generator):
        from .ddpm import check_ddpm

        check_ddpm(model, NODE)
        x0 = model.latents(batch).float()
        pred_type = self.prediction_type(model)
        if pred_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction type {pred_type!r} is not supported by this objective")
        scheduler = self.schedule(model, pred_type)
        generator = self.generator_for(batch, x0.shape[0], generator)
        noise, t = self.noise_and_timesteps(x0, scheduler, generator)
        noised = noise
        if self.input_perturbation > 0:  # the input only; the target stays the unperturbed noise
            noised = noise + self.input_perturbation * noise_mod.gaussian(x0, generator).to(x0.device)
        noisy = scheduler.add_noise(x0, noised, t)
        target = noise if pred_type == "epsilon" else scheduler.get_velocity(x0, noise, t)
        pred = model.predict(noisy, t, batch).float()
        target = self.prior_targets(model, batch, target, lambda: model.predict(noisy, t, batch))
        per_sample = self.reduce(pred, target, batch, generator)
        weights = self.timestep_weights(scheduler, t, pred_type)
        if weights is not None:
            per_sample = per_sample * weights.to(per_sample.device)
        item = self.sample_weights(batch, per_sample.shape[0], per_sample.device)
        if item is not None:
            per_sample = per_sample * item
        return per_sample.mean(), {"timestep_mean": float(t.float().mean())}


@node("train.diffusion_objective", title="Diffusion objective", category="Training")
class DiffusionObjectiveNode(DrawParams, LossParams):
    """Denoising objective for epsilon- or v-prediction models: noise (offset noise, generalized offset
    noise, input perturbation), zero-terminal-SNR rescaling, the timestep distribution, shift and range,
    the loss (MSE, L1, Huber, log-cosh or a mix), timestep weighting (min-SNR-gamma, debiased estimation,
    P2), masked training and prior preservation (batch fields 'mask' and 'role'). Per-sample
    ``loss_weight`` fields are applied. ``draws: per_sample`` draws each item's noise and timestep from
    its own (seed, epoch, index), so results do not depend on the number of GPUs. See docs/objectives.md."""

    objective = Output(Objective, serves=DDPMModel, doc="the objective for train.loop")
    prediction = Param(Choice("model", "epsilon", "v_prediction"), "model",
                       doc="target: what the model was trained to predict (model; v_prediction with "
                           "zero_terminal_snr), or force one")
    min_timestep = Param(int, 0, min=0, max=1000, doc="lowest training timestep (inclusive)")
    max_timestep = Param(int, 1000, min=1, max=1000, doc="highest training timestep (exclusive)")
    timestep_distribution = Param(Choice(*DISTRIBUTIONS), "uniform",
                                  doc="how the noise level is drawn (then shifted, then mapped into the "
                                      "timestep range); the shape params name the distributions they shape")
    logit_mean = Param(float, 0.0, min=-5, max=5,
                       doc="logit_normal: mean of the normal; positive = more noise (OneTrainer: noising_bias)")
    logit_std = Param(float, 1.0, min=0.01, max=10,
                      doc="logit_normal: std of the normal (OneTrainer: noising_weight + 1)")
    heavy_tail_scale = Param(float, 1.29, min=-1, max=1.75,
                             doc="heavy_tail: scale s of 1 - u - s(cos^2(pi u/2) - 1 + u); 0 = uniform "
                                 "(OneTrainer: noising_weight)")
    sigmoid_steepness = Param(float, 5.0, min=-100, max=100,
                              doc="sigmoid: steepness of the density sigmoid(k (x - center)); 0 = uniform, "
                                  "> 0 more noise (OneTrainer: noising_weight)")
    distribution_center = Param(float, 0.5, min=0, max=1,
                                doc="sigmoid, inverted_parabola: centre in [0, 1] (OneTrainer: noising_bias + 0.5)")
    parabola_curvature = Param(float, 8.0, min=0, max=1000,
                               doc="inverted_parabola: curvature w of max(2 - w (x - center)^2, 0); 0 = "
                                   "uniform (OneTrainer: noising_weight)")
    beta_alpha = Param(float, 1.0, min=1e-4, max=1000, doc="beta: alpha (OneTrainer: noising_weight)")
    beta_beta = Param(float, 1.0, min=1e-4, max=1000, doc="beta: beta (OneTrainer: noising_bias)")
    timestep_shift = Param(float, 1.0, min=0.01, max=100,
                           doc="shift s of the drawn noise level u: s u / ((s - 1) u + 1); 1 = none, > 1 = more "
                               "noise")
    offset_noise = Param(float, 0.0, min=0, max=1, doc="offset-noise strength (0.05-0.1 helps very dark/bright images)")
    generalized_offset_noise = Param(bool, False,
                                     doc="scale the offset noise by psi_t per timestep (generalized offset noise, "
                                         "full strength at the last timestep); needs offset_noise")
    input_perturbation = Param(float, 0.0, min=0, max=1,
                               doc="input perturbation: extra noise of this strength in the noisy input only "
                                   "(0.1 is usual)")
    zero_terminal_snr = Param(bool, False,
                              doc="rescale the model's schedule to zero SNR at the last timestep; trains "
                                  "v-prediction unless prediction is set")
    min_snr_gamma = Param(float, 0.0, min=0, doc="min-SNR-gamma loss weighting; 0 = off, 5 is usual")
    loss_weighting = Param(Choice(*WEIGHTINGS), "none",
                           doc="timestep loss weighting: none (min-SNR when min_snr_gamma > 0), min_snr_gamma, "
                               "debiased_estimation (1/sqrt(SNR)), p2")
    p2_gamma = Param(float, 1.0, min=0, max=10, doc="p2: exponent gamma of 1 / (k + SNR)^gamma")
    p2_k = Param(float, 1.0, min=0.001, max=100, doc="p2: offset k of 1 / (k + SNR)^gamma")

    def problems(self) -> list[tuple[str, str]]:
        """(param, message) for settings that contradict each other."""
        out = []
        if self.min_timestep >= self.max_timestep:
            out.append(("min_timestep", f"min_timestep {self.min_timestep} must be below max_timestep "
                                        f"{self.max_timestep}"))
        if self.generalized_offset_noise and self.offset_noise == 0:
            out.append(("generalized_offset_noise", "generalized_offset_noise scales the offset noise: set "
                                                    "offset_noise above 0"))
        if self.zero_terminal_snr and self.prediction == "epsilon":
            out.append(("zero_terminal_snr", "zero_terminal_snr with prediction epsilon: at zero SNR the noise "
                                             "is the input, so the model learns nothing there; use v_prediction"))
        if self.loss_weighting == "min_snr_gamma" and self.min_snr_gamma == 0:
            out.append(("min_snr_gamma", "loss_weighting min_snr_gamma needs min_snr_gamma above 0 (5 is usual)"))
        if self.loss_weighting in ("debiased_estimation", "p2") and self.min_snr_gamma > 0:
            out.append(("min_snr_gamma", f"min_snr_gamma {self.min_snr_gamma} and loss_weighting "
                                         f"{self.loss_weighting} both set: one timestep weighting at a time"))
        return out + self.loss_problems()

    def run(self, ctx):
        self.refuse_problems()
        shape = Shape(self.logit_mean, self.logit_std, self.heavy_tail_scale, self.sigmoid_steepness,
                      self.distribution_center, self.parabola_curvature, self.beta_alpha, self.beta_beta)
        return {"objective": DiffusionObjective(
            prediction=self.prediction, min_timestep=self.min_timestep, max_timestep=self.max_timestep,
            offset_noise=self.offset_noise, min_snr_gamma=self.min_snr_gamma,
            generalized_offset_noise=self.generalized_offset_noise, input_perturbation=self.input_perturbation,
            zero_terminal_snr=self.zero_terminal_snr, timestep_distribution=self.timestep_distribution,
            shape=shape, timestep_shift=self.timestep_shift, loss_weighting=self.loss_weighting,
            p2_gamma=self.p2_gamma, p2_k=self.p2_k, **self.loss_settings(), **self.draw_settings(ctx))}
