"""The flow-matching part of a model value: what families trained with flow matching share.

Flux (and later SD3, Z-Image, Qwen-Image) model values derive from ``FlowMatchingBundle``;
``train.flow_matching_objective`` interpolates ``x_t = (1 - sigma) * x0 + sigma * noise`` and
trains ``predict(x_t, sigma, batch)`` towards the velocity ``noise - x0``. A DDPM family does not
derive from it, so the objective refuses its models (and, before the run, the port types do:
``FlowMatchingModel``).
"""

from __future__ import annotations

from typing import Any as _Any

from .bundle import ModelBundle


class FlowMatchingBundle(ModelBundle):
    """A model trained with flow matching. Subclasses (dataclasses) hold the field below and implement
    ``latents``, ``predict`` and, when the latent is patched into tokens, ``image_seq_len``."""

    #: the training schedule: a diffusers ``FlowMatchEulerDiscreteScheduler`` (its config has ``shift``,
    #: ``use_dynamic_shifting``, ``base_shift``, ``max_shift``, ``base_image_seq_len``, ``max_image_seq_len``)
    noise_scheduler: _Any = None

    def image_seq_len(self, latents) -> int:
        """Tokens per image of ``latents`` (B, C, H, W), for the resolution-dependent shift. Default: one
        token per 2x2 latent patch, as Flux packs them."""
        return int(latents.shape[-2] // 2) * int(latents.shape[-1] // 2)

    def predict(self, noisy, sigmas, batch: dict) -> _Any:
        """The velocity prediction for ``noisy`` latents at noise levels ``sigmas`` (B,) in [0, 1]."""
        raise NotImplementedError(f"{type(self).__name__} does not provide predict()")


def check_flow(model, node: str) -> FlowMatchingBundle:
    """``model`` if it trains with flow matching, else a clear error naming ``node``."""
    if not isinstance(model, FlowMatchingBundle):
        kind = getattr(model, "family", "") or type(model).__name__
        raise TypeError(f"{node} trains models with flow matching; the {kind!r} model is not one (use its "
                        f"family's objective, e.g. train.diffusion_objective for DDPM models)")
    return model
