"""Safetensors header metadata shared by every SD file nodetrainer writes."""

from __future__ import annotations


def architecture(model) -> str:
    """The modelspec architecture name of an SD 1.x/2.x model."""
    if model.version != "sd2":
        return "stable-diffusion-v1"
    return "stable-diffusion-v2-768-v" if model.prediction_type == "v_prediction" else "stable-diffusion-v2-512"


def base_metadata(model, graph_name: str, fmt: str) -> dict[str, str]:
    """What the file is, which model it came from, how long it trained and in which graph."""
    return {
        "nodetrainer_format": fmt,
        "nodetrainer_base_model": model.source,
        "nodetrainer_model_version": model.version,
        "nodetrainer_prediction_type": model.prediction_type,
        "nodetrainer_steps": str(int(getattr(model, "progress", {}).get("step", 0))),
        "nodetrainer_graph": graph_name,
    }
