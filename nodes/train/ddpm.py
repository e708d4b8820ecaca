"""The DDPM part of a model value: what families trained on DDPM noise (epsilon / v-prediction) share.

SD 1.x/2.x and SDXL models derive from ``DDPMBundle``; ``train.diffusion_objective`` reads
their ``noise_scheduler`` (the training schedule: betas, timesteps) and ``prediction_type``.
A flow-matching family does not derive from it, so the objective refuses its models with a
clear message (and, before the run, the port types do: ``DDPMModel``).
"""

from __future__ import annotations

from typing import Any as _Any

from .bundle import ModelBundle

PREDICTION_TYPES = ("epsilon", "v_prediction")


class DDPMBundle(ModelBundle):
    """A model trained on DDPM noise. Subclasses (dataclasses) hold the two fields below."""

    #: the DDPM training schedule (a diffusers ``DDPMScheduler``)
    noise_scheduler: _Any = None
    #: what the denoiser predicts: ``epsilon`` or ``v_prediction``
    prediction_type: str = "epsilon"


def training_scheduler(scheduler, prediction_type: str = "auto", zero_terminal_snr: bool = False):
    """The DDPM training schedule with ``scheduler``'s betas, and the prediction type it trains
    (``auto``: the scheduler config's); ``zero_terminal_snr`` rescales the betas so the last step is pure
    noise (what v-prediction models such as NoobAI-v-pred were trained with). Returns (scheduler, type)."""
    from diffusers import DDPMScheduler

    pred = scheduler.config.get("prediction_type", "epsilon") if prediction_type == "auto" else prediction_type
    config = {k: v for k, v in dict(scheduler.config).items() if not k.startswith("_")}
    extra = {"rescale_betas_zero_snr": True} if zero_terminal_snr else {}
    return DDPMScheduler.from_config(config, prediction_type=pred, **extra), pred


def check_ddpm(model, node: str) -> DDPMBundle:
    """``model`` if it trains on DDPM noise, else a clear error naming ``node``."""
    if not isinstance(model, DDPMBundle) or model.noise_scheduler is None:
        kind = getattr(model, "family", "") or type(model).__name__
        raise TypeError(f"{node} trains models on DDPM noise (epsilon / v-prediction); the {kind!r} model has "
                        f"no DDPM noise schedule (use its family's objective)")
    return model
