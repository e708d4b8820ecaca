"""Flux files: LoRA in the diffusers and kohya/BFL formats, diffusers folders, the transformer as one file.

- diffusers LoRA: ``transformer.<module>.lora_A/B.weight``, CLIP-L under ``text_encoder.text_model.``,
  the adapter configs in the header (``nodes.lora_files``); ``FluxPipeline.load_lora_weights`` reads it.
- kohya/BFL LoRA: ``lora_unet_double_blocks_N_img_attn_qkv`` ... ``lora_unet_single_blocks_N_linear1``
  with q/k/v (and proj_mlp) fused, CLIP-L as ``lora_te1_text_model_...`` (``nodes.flux.lora_names``);
  ComfyUI, Forge, kohya's sd-scripts and diffusers read it.
- the transformer alone in BFL's original layout (``nodes.flux.bfl_layout``), as flux1-dev.safetensors
  is distributed: ComfyUI (diffusion_models/), Forge, and diffusers' ``from_single_file``.
"""

from __future__ import annotations

from pathlib import Path

from nodes import saving
from nodes.lora_files import diffusers_lora, lora_metadata, peft_state_dict

IMPLEMENTATION = "https://github.com/black-forest-labs/flux"


def architecture(model) -> str:
    """The modelspec architecture of a Flux model (kohya's sd-scripts names)."""
    return f"flux-1-{model.variant}"


def lora_file_metadata(model, graph_name: str, fmt: str) -> dict[str, str]:
    return {
        **saving.base_metadata(model, graph_name, fmt),
        **lora_metadata(model, saving.steps_of(model)),
        "nodetrainer_prediction_type": "flow",
        "ss_base_model_version": "flux1",
        "ss_sd_model_name": Path(model.source).name if model.source else "",
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": f"{architecture(model)}/lora",
        "modelspec.implementation": IMPLEMENTATION,
        "modelspec.title": graph_name or "nodetrainer LoRA",
    }


def save_diffusers_lora(model, path: Path, dtype, graph_name: str = "") -> Path:
    """The LoRA as diffusers' ``FluxPipeline.load_lora_weights`` reads it, with the adapter configs in the header."""
    tensors, meta = diffusers_lora(model)
    return saving.save_tensors(path, tensors, {**lora_file_metadata(model, graph_name, "diffusers"), **meta}, dtype)


def _transformer_modules(model) -> dict:
    from nodes.lora_files import adapter_modules

    return {k[len("transformer."):]: v for k, v in adapter_modules(model).items() if k.startswith("transformer.")}


def save_kohya_lora(model, path: Path, dtype, graph_name: str = "") -> tuple[Path, list[str]]:
    """The adapters with kohya/BFL names, q/k/v fused; returns the file and the layers left out (outside the
    blocks). LoRA from the peft state dict; the other kinds from their LyCORIS tensors."""
    from nodes.lora_files import adapter_modules, kohya_file
    from nodes.weights_check import listed

    from .lora_names import kohya_adapter_transformer, kohya_tensors

    if model.lora.kind == "lora":
        tensors, left_out = kohya_tensors(peft_state_dict(model), model.lora.alpha, model.transformer.config)
    else:
        tensors, left_out = kohya_adapter_transformer(_transformer_modules(model), model.transformer.config,
                                                      model.transformer)
        text = {k: v for k, v in adapter_modules(model).items() if k.startswith("text_encoder.")}
        tensors.update(kohya_file(text, {}))
    left_out = [f"transformer.{name}" for name in left_out]
    if not tensors:
        raise ValueError(f"none of the LoRA's layers ({listed(left_out)}) has a place in a kohya/BFL file: save "
                         f"with formats 'diffusers', or adapt layers in the transformer's blocks")
    return saving.save_tensors(path, tensors, lora_file_metadata(model, graph_name, "kohya"), dtype), left_out


def full_metadata(model, graph_name: str, fmt: str, dtype: str) -> dict[str, str]:
    return {**saving.model_metadata(model, graph_name, fmt, dtype, architecture(model)),
            "nodetrainer_prediction_type": "flow", "modelspec.implementation": IMPLEMENTATION,
            "modelspec.prediction_type": "flow"}


def write_diffusers_folder(model, folder: Path, state_dicts: dict[str, dict], graph_name: str = "") -> Path:
    """A diffusers FluxPipeline folder that ``from_pretrained`` (and ``flux.load_model``) loads."""
    from nodes.lora_fusion import dtype_label

    from .build import write_diffusers_folder as write

    return write(model, folder, state_dicts, full_metadata(model, graph_name, "diffusers", dtype_label(state_dicts)))


def transformer_tensors(transformer_sd: dict) -> dict:
    """The transformer's plain weights (diffusers names) in BFL's original layout."""
    from .bfl_layout import diffusers_to_bfl

    return diffusers_to_bfl(transformer_sd)


def write_transformer(model, path: Path, transformer_sd: dict, graph_name: str = "") -> Path:
    """The transformer alone as one ``.safetensors`` in BFL's layout (LoRA already fused into ``transformer_sd``)."""
    from nodes.lora_fusion import dtype_label

    meta = full_metadata(model, graph_name, "bfl_transformer", dtype_label({"transformer": transformer_sd}))
    return saving.save_tensors(path, transformer_tensors(transformer_sd), meta)
