"""SD 1.x/2.x LoRA files (the formats and layer rules: ``nodes.lora_files``). SD's kohya names keep
diffusers' block names, with the single text encoder under ``lora_te_``."""

from __future__ import annotations

from pathlib import Path

from nodes.lora_files import adapter_modules, diffusers_lora, kohya_file, kohya_modules, lora_metadata
from nodes.saving import base_metadata, save_tensors, steps_of

from .metadata import architecture
from .model import SDModel


def file_metadata(model: SDModel, graph_name: str, fmt: str) -> dict[str, str]:
    """Header metadata: base model, rank, alpha, steps, graph, plus the keys kohya's tools show."""
    v2 = model.version == "sd2"
    return {
        **base_metadata(model, graph_name, fmt),
        **lora_metadata(model, steps_of(model)),
        "ss_base_model_version": "sd_v2" if v2 else "sd_v1",
        "ss_v2": str(v2),
        "ss_sd_model_name": Path(model.source).name if model.source else "",
        "modelspec.architecture": f"{architecture(model)}/lora",
        "modelspec.title": graph_name or "nodetrainer LoRA",
    }


def save_diffusers_lora(model: SDModel, path: Path, dtype, graph_name: str = "") -> Path:
    tensors, meta = diffusers_lora(model)
    return save_tensors(path, tensors, {**file_metadata(model, graph_name, "diffusers"), **meta}, dtype)


def save_kohya_lora(model: SDModel, path: Path, dtype, graph_name: str = "") -> tuple[Path, list[str]]:
    """Write the kohya file; returns it and the adapted layers it leaves out (kohya cannot place them)."""
    from nodes.weights_check import listed

    kept, left_out = kohya_modules(adapter_modules(model))
    if not kept:
        raise ValueError(f"none of the LoRA's layers ({listed(left_out)}) has a place in a kohya file: save "
                         f"with formats 'diffusers', or adapt layers in the UNet's blocks")
    tensors = kohya_file(kept, {"lora_te1_": "lora_te_"})
    return save_tensors(path, tensors, file_metadata(model, graph_name, "kohya"), dtype), left_out
