"""The modelspec architecture names of SD 1.x/2.x files (the rest of the metadata: ``nodes.saving``)."""

from __future__ import annotations


def architecture(model) -> str:
    """The modelspec architecture name of an SD 1.x/2.x model."""
    if model.version != "sd2":
        return "stable-diffusion-v1"
    return "stable-diffusion-v2-768-v" if model.prediction_type == "v_prediction" else "stable-diffusion-v2-512"
