"""The flow-matching objective (rectified flow, velocity target) as a node.

Family-agnostic: it asks the model for ``latents(batch)``, its ``noise_scheduler`` (a diffusers
``FlowMatchEulerDiscreteScheduler``: dynamic-shift defaults and its shift formula),
``image_seq_len(latents)`` and ``predict(x_t, sigmas, batch)`` (``nodes.train.flow.FlowMatchingBundle``).
Its output serves ``FlowMatchingModel``: train.loop refuses a DDPM model wired to it at validation,
as the DDPM objective refuses a flow-matching one.

One batch: sigma in [0, 1] drawn per sample (sampling scheme, then shift, then the sigma range),
``x_t = (1 - sigma) * x0 + sigma * noise``, target ``noise - x0``, loss ``mean(w(sigma) * loss(pred, target))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from runtime import Choice, Output, Param, node
from runtime.port_types import FlowMatchingModel, Objective

from .losses import LossParams, LossTerms
from .sample_draws import DrawParams, draw
from .timesteps import Shape, sample_fractions, shift_fractions

NODE = "train.flow_matching_objective"
SAMPLINGS = ("uniform", "logit_normal", "mode", "cosmap", "sigmoid", "inverted_parabola", "beta")
WEIGHTINGS = ("none", "sigma_sqrt", "cosmap")
#: dynamic-shift settings: our name -> (the scheduler config's name, the default when the model has none);
#: the defaults are Flux.1's (and diffusers' FlowMatchEulerDiscreteScheduler's)
DYNAMIC_DEFAULTS = {"base_shift": ("base_shift", 0.5), "max_shift": ("max_shift", 1.15),
                    "base_seq_len": ("base_image_seq_len", 256), "max_seq_len": ("max_image_seq_len", 4096)}
#: sigma_sqrt weights are sigma^-2: sigma is floored at the smallest sigma of a 1000-step schedule for them
SIGMA_FLOOR = 1e-3


def sample_sigmas(scheme: str, n: int, generator, logit_mean: float = 0.0, logit_std: float = 1.0,
                  mode_scale: float = 1.29, sigmoid_scale: float = 1.0, shape: Shape | None = None):
    """``n`` noise levels in [0, 1] (float32, CPU) drawn with ``generator``; 1 is pure noise.

    uniform, logit_normal (sigmoid of N(mean, std)) and mode (SD3's f_mode) come from diffusers'
    ``compute_density_for_timestep_sampling``, used as sigma directly (not as an index into the
    descending schedule, which would invert the logit-normal mean); cosmap (SD3's
    ``1 - 1/(tan(pi u / 2) + 1)``) and sigmoid (kohya's ``sigmoid(scale * N(0, 1))``) are not there;
    inverted_parabola and beta are OneTrainer's, shaped by ``shape`` (nodes.train.timesteps)."""
    return draw(generator, n, lambda k, g: _sigmas(scheme, k, g, logit_mean, logit_std, mode_scale,
                                                   sigmoid_scale, shape))


def _sigmas(scheme: str, n: int, generator, logit_mean: float, logit_std: float, mode_scale: float,
            sigmoid_scale: float, shape: Shape | None):
    """``sample_sigmas`` with one ``torch.Generator``."""
    import torch
    from diffusers.training_utils import compute_density_for_timestep_sampling

    if scheme in ("uniform", "logit_normal", "mode"):
        return compute_density_for_timestep_sampling("none" if scheme == "uniform" else scheme, n,
                                                     logit_mean=logit_mean, logit_std=logit_std,
                                                     mode_scale=mode_scale, generator=generator).float()
    if scheme == "cosmap":
        u = torch.rand(n, generator=generator)
        return 1.0 - 1.0 / (torch.tan(math.pi / 2 * u) + 1.0)
    if scheme == "sigmoid":
        return torch.sigmoid(sigmoid_scale * torch.randn(n, generator=generator))
    if scheme in ("inverted_parabola", "beta"):
        return sample_fractions(scheme, n, generator, shape or Shape()).float()
    raise ValueError(f"{NODE}: unknown sampling {scheme!r} (one of {', '.join(SAMPLINGS)})")


def shift_sigmas(sigmas, shift: float):
    """The fixed shift ``s * sigma / (1 + (s - 1) * sigma)`` (diffusers' and SD3's; s > 1: more noise)."""
    return shift_fractions(sigmas, shift)


def resolution_mu(image_seq_len: int, base_seq_len: int = 256, max_seq_len: int = 4096,
                  base_shift: float = 0.5, max_shift: float = 1.15) -> float:
    """mu of the resolution-dependent shift: linear in the image's token count, ``base_shift`` at
    ``base_seq_len`` tokens and ``max_shift`` at ``max_seq_len`` (extrapolated beyond; the shift is e^mu)."""
    slope = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return base_shift + slope * (image_seq_len - base_seq_len)


def time_shift(scheduler, mu: float, sigmas):
    """``sigmas`` shifted by ``mu`` with the scheduler's own formula (its ``time_shift_type``:
    exponential ``e^mu / (e^mu + 1/sigma - 1)`` for Flux), or the exponential one without a scheduler."""
    if scheduler is not None and hasattr(scheduler, "time_shift"):
        return scheduler.time_shift(mu, 1.0, sigmas)
    return shift_sigmas(sigmas, math.exp(mu))


def loss_weights(weighting: str, sigmas):
    """Per-sample loss weights from diffusers' ``compute_loss_weighting_for_sd3``: none = 1, sigma_sqrt =
    sigma^-2 (sic, sigma floored at ``SIGMA_FLOOR``), cosmap = 2 / (pi (1 - 2 sigma + 2 sigma^2))."""
    from diffusers.training_utils import compute_loss_weighting_for_sd3

    if weighting not in WEIGHTINGS:
        raise ValueError(f"{NODE}: unknown loss_weighting {weighting!r} (one of {', '.join(WEIGHTINGS)})")
    if weighting == "sigma_sqrt":
        sigmas = sigmas.clamp(min=SIGMA_FLOOR)
    return compute_loss_weighting_for_sd3(weighting, sigmas)


def sample_noise(x0, offset_noise: float, generator):
    """Gaussian noise like ``x0`` (drawn on the CPU, then moved), plus ``offset_noise`` times a per-channel
    constant."""
    from .noise import channel_offset, gaussian

    noise = gaussian(x0, generator)
    if offset_noise > 0:
        noise = noise + offset_noise * channel_offset(x0, generator)
    return noise.to(x0.device)


def scheduler_config(scheduler) -> dict:
    """The scheduler's config as a dict ({} without a scheduler)."""
    return dict(getattr(scheduler, "config", None) or {})


def dynamic_settings(scheduler, given: dict) -> dict:
    """The dynamic-shift settings: those ``given`` (not None), else the scheduler config's, else the defaults."""
    config = scheduler_config(scheduler)
    out = {}
    for name, (key, default) in DYNAMIC_DEFAULTS.items():
        value = given.get(name)
        value = config.get(key) if value is None else value
        out[name] = default if value is None else value
    if out["base_seq_len"] >= out["max_seq_len"]:
        raise ValueError(f"{NODE}: base_seq_len {out['base_seq_len']} must be below max_seq_len {out['max_seq_len']}")
    return out


@dataclass
class FlowMatchingObjective(LossTerms):
    """Sigmas, interpolation and loss for one batch; ``loss(model, batch, generator)`` -> (loss, metrics)."""

    sampling: str = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    mode_scale: float = 1.29
    sigmoid_scale: float = 1.0
    shift: float = 1.0
    dynamic_shift: bool = False
    base_shift: float | None = None
    max_shift: float | None = None
    base_seq_len: int | None = None
    max_seq_len: int | None = None
    loss_weighting: str = "none"
    offset_noise: float = 0.0
    min_sigma: float = 0.0
    max_sigma: float = 1.0
    shape: Shape = field(default_factory=Shape)  #: inverted_parabola and beta's shape params

    node_name = NODE

    def shift_for(self, model, x0) -> tuple[float | None, float]:
        """(mu, shift) for this batch: mu is None for the fixed shift; with ``dynamic_shift`` mu comes from
        ``model.image_seq_len(x0)`` and the shift is e^mu (or mu for a scheduler whose shift is linear)."""
        if not self.dynamic_shift:
            return None, float(self.shift)
        scheduler = getattr(model, "noise_scheduler", None)
        given = {k: getattr(self, k) for k in DYNAMIC_DEFAULTS}
        mu = resolution_mu(int(model.image_seq_len(x0)), **dynamic_settings(scheduler, given))
        linear = scheduler_config(scheduler).get("time_shift_type") == "linear"
        return mu, mu if linear else math.exp(mu)

    def sigmas(self, model, x0, generator):
        """Per-sample sigmas (B,) on the CPU for ``x0``, and the shift applied."""
        sigmas = sample_sigmas(self.sampling, x0.shape[0], generator, self.logit_mean, self.logit_std,
                               self.mode_scale, self.sigmoid_scale, self.shape)
        mu, shift = self.shift_for(model, x0)
        if mu is not None:
            sigmas = time_shift(getattr(model, "noise_scheduler", None), mu, sigmas)
        elif shift != 1.0:
            sigmas = shift_sigmas(sigmas, shift)
        if (self.min_sigma, self.max_sigma) != (0.0, 1.0):
            sigmas = self.min_sigma + (self.max_sigma - self.min_sigma) * sigmas
        return sigmas.float(), shift

    def loss(self, model, batch: dict, generator):
        from .flow import check_flow

        check_flow(model, NODE)
        x0 = model.latents(batch).float()
        generator = self.generator_for(batch, x0.shape[0], generator)
        noise = sample_noise(x0, self.offset_noise, generator)
        sigmas, shift = self.sigmas(model, x0, generator)
        sigmas = sigmas.to(x0.device)
        s = sigmas.reshape((-1,) + (1,) * (x0.ndim - 1))
        x_t = (1.0 - s) * x0 + s * noise
        target = noise - x0
        pred = model.predict(x_t, sigmas, batch).float()
        target = self.prior_targets(model, batch, target, lambda: model.predict(x_t, sigmas, batch))
        per_sample = self.reduce(pred, target, batch, generator)
        per_sample = per_sample * loss_weights(self.loss_weighting, sigmas).to(per_sample.device)
        item = self.sample_weights(batch, per_sample.shape[0], per_sample.device)
        if item is not None:
            per_sample = per_sample * item
        return per_sample.mean(), {"sigma_mean": float(sigmas.mean()), "shift": shift}


@node(NODE, title="Flow-matching objective", category="Training")
class FlowMatchingObjectiveNode(DrawParams, LossParams):
    """Flow-matching (rectified-flow) objective for velocity-predicting models (Flux, SD3 and later):
    ``x_t = (1 - sigma) * x0 + sigma * noise``, target ``noise - x0``; sigma = 1 is pure noise.

    Sampling of sigma: uniform; logit_normal, sigma = sigmoid(N(logit_mean, logit_std)): a positive
    logit_mean trains on MORE noise (higher sigma), a negative one on less (SD3's and OneTrainer's sign;
    diffusers' example scripts invert it); mode (SD3's f_mode; mode_scale > 0 favours mid sigmas, 0 is
    uniform); cosmap (SD3's CosMap); sigmoid, sigma = sigmoid(sigmoid_scale * N(0, 1)) (kohya's, not
    the DDPM objective's sigmoid density); inverted_parabola and beta (OneTrainer's, as in the DDPM objective).
    Then the shift: fixed, s * sigma / (1 + (s - 1) * sigma) (s > 1: more noise), or with dynamic_shift
    the resolution-dependent one, computed per batch from ``model.image_seq_len(latents)`` (the image's
    token count): mu linear from base_shift at base_seq_len tokens to max_shift at max_seq_len, shift e^mu
    with the model scheduler's formula (Flux: 1.65 at 256 tokens, 3.16 at 4096 = 1024 px). Flux dev was
    trained with it; unset settings come from the model's scheduler config. Last, sigma is mapped
    linearly into [min_sigma, max_sigma]. Loss weights (diffusers' names): sigma_sqrt is sigma^-2,
    cosmap 2 / (pi (1 - 2 sigma + 2 sigma^2)). The loss (MSE, L1, Huber, log-cosh or a mix), masked
    training and prior preservation (batch fields 'mask' and 'role') are the DDPM objective's; per-sample
    ``loss_weight`` fields are applied. ``draws: per_sample`` draws each item's noise and sigma from its
    own (seed, epoch, index), so results do not depend on the number of GPUs. See docs/objectives.md."""

    objective = Output(Objective, serves=FlowMatchingModel, doc="the objective for train.loop")
    sampling = Param(Choice(*SAMPLINGS), "logit_normal",
                     doc="how sigma is drawn; logit_normal (0, 1) is what SD3's study found best")
    logit_mean = Param(float, 0.0, min=-5, max=5,
                       doc="logit_normal: mean; positive = more noise (higher sigma), negative = less")
    logit_std = Param(float, 1.0, min=0.01, max=10, doc="logit_normal: standard deviation")
    mode_scale = Param(float, 1.29, min=-1, max=1.75, doc="mode: scale (0 = uniform, > 0 favours mid sigmas)")
    sigmoid_scale = Param(float, 1.0, min=0.01, max=10, doc="sigmoid: scale of the normal draw")
    parabola_curvature = Param(float, 8.0, min=0, max=1000,
                               doc="inverted_parabola: curvature w of the density max(2 - w (sigma - center)^2, 0); "
                                   "0 = uniform (OneTrainer: noising_weight)")
    distribution_center = Param(float, 0.5, min=0, max=1,
                            doc="inverted_parabola: centre (OneTrainer: noising_bias + 0.5)")
    beta_alpha = Param(float, 1.0, min=1e-4, max=1000, doc="beta: alpha of Beta(alpha, beta) (OneTrainer: "
                                                             "noising_weight)")
    beta_beta = Param(float, 1.0, min=1e-4, max=1000, doc="beta: beta (OneTrainer: noising_bias)")
    shift = Param(float, 1.0, min=0.01, max=100, doc="fixed sigma shift; 1 = none, 3 = SD3, > 1 = more noise")
    dynamic_shift = Param(bool, False, doc="resolution-dependent shift e^mu from the image's token count "
                                           "(Flux dev); replaces shift")
    base_shift = Param(float, optional=True, doc="dynamic shift: mu at base_seq_len (empty: the model's "
                                                 "scheduler config, else 0.5)")
    max_shift = Param(float, optional=True, doc="dynamic shift: mu at max_seq_len (empty: the model's "
                                                "scheduler config, else 1.15)")
    base_seq_len = Param(int, optional=True, min=1, doc="dynamic shift: token count of base_shift (empty: "
                                                        "the scheduler config, else 256)")
    max_seq_len = Param(int, optional=True, min=2, doc="dynamic shift: token count of max_shift (empty: "
                                                       "the scheduler config, else 4096)")
    loss_weighting = Param(Choice(*WEIGHTINGS), "none", doc="per-sample loss weight by sigma")
    offset_noise = Param(float, 0.0, min=0, max=1, doc="offset-noise strength (0.05-0.1 helps very dark/bright "
                                                       "images)")
    min_sigma = Param(float, 0.0, min=0, max=1, doc="lowest sigma: the drawn, shifted sigma is mapped into "
                                                    "[min_sigma, max_sigma]")
    max_sigma = Param(float, 1.0, min=0, max=1, doc="highest sigma")

    def problems(self) -> list[tuple[str, str]]:
        """(param, message) for settings that contradict each other."""
        out = []
        if self.min_sigma >= self.max_sigma:
            out.append(("min_sigma", f"min_sigma {self.min_sigma} must be below max_sigma {self.max_sigma}"))
        if self.dynamic_shift and self.shift != 1.0:
            out.append(("shift", f"shift {self.shift} and dynamic_shift both set: the dynamic shift replaces the "
                                 "fixed one, set shift to 1 or turn dynamic_shift off"))
        if self.base_seq_len is not None and self.max_seq_len is not None and self.base_seq_len >= self.max_seq_len:
            out.append(("base_seq_len", f"base_seq_len {self.base_seq_len} must be below max_seq_len "
                                        f"{self.max_seq_len}"))
        return out + self.loss_problems()

    def run(self, ctx):
        self.refuse_problems()
        return {"objective": FlowMatchingObjective(
            sampling=self.sampling, logit_mean=self.logit_mean, logit_std=self.logit_std,
            mode_scale=self.mode_scale, sigmoid_scale=self.sigmoid_scale, shift=self.shift,
            dynamic_shift=self.dynamic_shift, base_shift=self.base_shift, max_shift=self.max_shift,
            base_seq_len=self.base_seq_len, max_seq_len=self.max_seq_len, loss_weighting=self.loss_weighting,
            offset_noise=self.offset_noise, min_sigma=self.min_sigma, max_sigma=self.max_sigma,
            shape=Shape(parabola_curvature=self.parabola_curvature, center=self.distribution_center,
                        beta_alpha=self.beta_alpha, beta_beta=self.beta_beta),
            **self.loss_settings(), **self.draw_settings(ctx))}
