"""Training noise for the DDPM objective: Gaussian noise, plain and generalized offset noise, input
perturbation, and the zero-terminal-SNR copy of a model's schedule. Every draw comes from the
generator passed in (a ``torch.Generator``, or ``SampleDraws``: one per sample), on the CPU (then
moved), so a seed gives the same noise on any device. No torch import at module level.
"""

from __future__ import annotations

from .sample_draws import draw


def gaussian(x0, generator):
    """N(0, 1) noise shaped like ``x0`` (float32, CPU)."""
    import torch

    rest = tuple(x0.shape[1:])
    return draw(generator, x0.shape[0], lambda n, g: torch.randn((n,) + rest, generator=g, dtype=torch.float32))


def channel_offset(x0, generator):
    """One N(0, 1) value per (sample, channel), broadcastable over ``x0``'s other dims (float32, CPU)."""
    import torch

    rest = (x0.shape[1],) + (1,) * (x0.ndim - 2)
    return draw(generator, x0.shape[0], lambda n, g: torch.randn((n,) + rest, generator=g))


def offset_psi(alphas_cumprod):
    """psi_t of generalized offset noise ("Generalized Diffusion Model with Adjusted Offset Noise",
    Algorithm 1, the balanced phi/psi strategy), float64 per timestep.

    The paper's recursion for gamma_t telescopes: the cumulative sum it normalises is
    proportional to (1 - abar_t) / abar_t, so psi_t = (abar_T / abar_t) sqrt((1 - abar_t) / (1 - abar_T)),
    which is 1 at the last timestep and grows with the noise level. Computed from the cumulative
    alphas (not the betas), so a zero-terminal-SNR schedule (beta_T = 1) stays finite."""
    import torch

    ab = torch.as_tensor(alphas_cumprod).double()
    return (ab[-1] / ab) * torch.sqrt((1.0 - ab) / (1.0 - ab[-1]))


class ZeroTerminalSchedule:
    """A cache of the zero-terminal-SNR copy of a model's DDPM schedule (diffusers' DDPMScheduler with
    ``rescale_betas_zero_snr``), rebuilt only when the model's schedule object changes."""

    def __init__(self):
        self.base, self.rescaled = None, None

    def __call__(self, scheduler, prediction_type: str):
        from .ddpm import training_scheduler

        if self.base is not scheduler or self.rescaled.config.prediction_type != prediction_type:
            self.rescaled, _ = training_scheduler(scheduler, prediction_type, zero_terminal_snr=True)
            self.base = scheduler
        return self.rescaled


class PsiCache:
    """psi_t of generalized offset noise for the last schedule asked for."""

    def __init__(self):
        self.scheduler, self.psi = None, None

    def __call__(self, scheduler):
        if self.scheduler is not scheduler:
            self.psi, self.scheduler = offset_psi(scheduler.alphas_cumprod).float(), scheduler
        return self.psi
