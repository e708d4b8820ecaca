"""Timestep distributions (OneTrainer's set), the timestep shift and the map to DDPM timesteps.

A distribution draws a noise fraction u in [0, 1] per sample (1 = the most noise) from the
generator it is given (a ``torch.Generator``, or ``SampleDraws``: one per sample); ``shift_fractions``
shifts it, ``to_timesteps`` maps it into a timestep range. Every draw is the exact transform of a
seeded uniform or normal draw (beta: numpy's beta sampler seeded from the generator). No torch import
at module level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .sample_draws import draw

DISTRIBUTIONS = ("uniform", "sigmoid", "logit_normal", "heavy_tail", "cos_map", "inverted_parabola", "beta")


@dataclass(frozen=True)
class Shape:
    """The shape params of the distributions (which one reads which: see each field)."""

    logit_mean: float = 0.0         #: logit_normal: mean of the normal (OneTrainer's noising_bias)
    logit_std: float = 1.0          #: logit_normal: its std (OneTrainer's noising_weight + 1)
    heavy_tail_scale: float = 1.29  #: heavy_tail: tail scale s (OneTrainer's noising_weight; SD3's mode scale)
    sigmoid_steepness: float = 5.0  #: sigmoid: steepness k of the density (OneTrainer's noising_weight)
    center: float = 0.5             #: sigmoid, inverted_parabola: centre (OneTrainer's noising_bias + 0.5)
    parabola_curvature: float = 8.0  #: inverted_parabola: curvature w (OneTrainer's noising_weight)
    beta_alpha: float = 1.0         #: beta: alpha (OneTrainer's noising_weight)
    beta_beta: float = 1.0          #: beta: beta (OneTrainer's noising_bias)


def _softplus_inv(z):
    """The inverse of softplus for z > 0: log(e^z - 1), stably."""
    import torch

    return z + torch.log(-torch.expm1(-z))


def sigmoid_quantile(u, k: float, c: float):
    """Inverse CDF at ``u`` of the density proportional to sigmoid(k (x - c)) on [0, 1]; its CDF is
    (softplus(k (x - c)) - softplus(-k c)) / (softplus(k (1 - c)) - softplus(-k c))."""
    import torch.nn.functional as F

    if k == 0:
        return u
    u = u.double()
    lo, hi = F.softplus(u.new_tensor(-k * c)), F.softplus(u.new_tensor(k * (1 - c)))
    return (c + _softplus_inv(lo + u * (hi - lo)) / k).clamp(0, 1)


def parabola_cdf_support(w: float, c: float) -> tuple[float, float]:
    """Where max(2 - w (x - c)^2, 0) is positive within [0, 1]."""
    r = math.sqrt(2.0 / w)
    return max(0.0, c - r), min(1.0, c + r)


def parabola_quantile(u, w: float, c: float, iterations: int = 60):
    """Inverse CDF at ``u`` of the density proportional to max(2 - w (x - c)^2, 0) on [0, 1] (bisection on
    its antiderivative 2x - w (x - c)^3 / 3; 60 halvings reach float64 precision)."""
    import torch

    if w == 0:
        return u
    a, b = parabola_cdf_support(w, c)

    def g(x):
        return 2.0 * x - w * (x - c) ** 3 / 3.0

    target = g(a) + u.double() * (g(b) - g(a))
    lo, hi = torch.full_like(target, a), torch.full_like(target, b)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        below = g(mid) < target
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return (lo + hi) / 2


def sample_fractions(distribution: str, n: int, generator, shape: Shape = Shape()):
    """``n`` noise fractions in [0, 1] (float64, CPU) drawn with ``generator`` (1 = the most noise):

    - uniform: u ~ U(0, 1)
    - logit_normal: sigmoid(N(logit_mean, logit_std))
    - heavy_tail: 1 - u - s (cos^2(pi u / 2) - 1 + u) (SD3's mode sampling; s = 0 is uniform)
    - cos_map: 1 - 1 / (tan(pi u / 2) + 1) (density 2 / (pi (1 - 2x + 2x^2)))
    - sigmoid: density proportional to sigmoid(k (x - center)) (k = 0 uniform, k > 0 more noise)
    - inverted_parabola: density proportional to max(2 - w (x - center)^2, 0) (w = 8, center 0.5: 6x(1-x))
    - beta: Beta(alpha, beta)
    """
    return draw(generator, n, lambda k, g: _fractions(distribution, k, g, shape))


def _fractions(distribution: str, n: int, generator, shape: Shape):
    """``sample_fractions`` with one ``torch.Generator``."""
    import torch

    if distribution == "logit_normal":
        return torch.sigmoid(shape.logit_mean + shape.logit_std * torch.randn(n, generator=generator).double())
    if distribution == "beta":
        import numpy as np

        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        return torch.from_numpy(np.random.default_rng(seed).beta(shape.beta_alpha, shape.beta_beta, n))
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"unknown timestep distribution {distribution!r} (one of {', '.join(DISTRIBUTIONS)})")
    u = torch.rand(n, generator=generator).double()
    if distribution == "heavy_tail":
        s = shape.heavy_tail_scale
        return (1.0 - u - s * (torch.cos(math.pi / 2 * u) ** 2 - 1.0 + u)).clamp(0, 1)
    if distribution == "cos_map":
        return 1.0 - 1.0 / (torch.tan(math.pi / 2 * u) + 1.0)
    if distribution == "sigmoid":
        return sigmoid_quantile(u, shape.sigmoid_steepness, shape.center)
    if distribution == "inverted_parabola":
        return parabola_quantile(u, shape.parabola_curvature, shape.center)
    return u


def shift_fractions(u, shift: float):
    """The timestep shift s u / ((s - 1) u + 1) (SD3's; s > 1 moves draws towards more noise)."""
    return shift * u / (1.0 + (shift - 1.0) * u)


def to_timesteps(u, lo: int, hi: int):
    """Noise fractions in [0, 1] to integer timesteps in [lo, hi): lo + floor(u (hi - lo))."""
    import torch

    return (lo + torch.floor(u * (hi - lo))).clamp(lo, hi - 1).long()

