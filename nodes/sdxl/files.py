"""SDXL files: LoRA in the diffusers and kohya formats, diffusers folders, single-file checkpoints.

Kohya's SDXL files name UNet layers after the original (SGM) modules and the two text encoders
``lora_te1_`` / ``lora_te2_`` (``nodes.sdxl.lora_names``); the single-file layout is the one SDXL
base, Pony, Illustrious and NoobAI are distributed in (``nodes.ldm_layout.sdxl_state_dict``). The
formats and layer rules shared with other families are in ``nodes.lora_files``.
"""

from __future__ import annotations

from pathlib import Path

from nodes import saving
from nodes.lora_files import adapter_modules, diffusers_lora, kohya_file, kohya_modules, lora_metadata

ARCHITECTURE = "stable-diffusion-xl-v1-base"


def architecture(model) -> str:
    """The modelspec architecture of an SDXL model (v-prediction models say so)."""
    return f"{ARCHITECTURE}-v" if model.prediction_type == "v_prediction" else ARCHITECTURE


def lora_file_metadata(model, graph_name: str, fmt: str) -> dict[str, str]:
    return {
        **saving.base_metadata(model, graph_name, fmt),
        **lora_metadata(model, saving.steps_of(model)),
        "ss_base_model_version": "sdxl_base_v1-0",
        "ss_sd_model_name": Path(model.source).name if model.source else "",
        "modelspec.architecture": f"{ARCHITECTURE}/lora",
        "modelspec.title": graph_name or "nodetrainer LoRA",
    }


def save_diffusers_lora(model, path: Path, dtype, graph_name: str = "") -> Path:
    """The LoRA as diffusers' ``load_lora_weights`` reads it, with the adapter configs in the header."""
    tensors, meta = diffusers_lora(model)
    return saving.save_tensors(path, tensors, {**lora_file_metadata(model, graph_name, "diffusers"), **meta}, dtype)


def save_kohya_lora(model, path: Path, dtype, graph_name: str = "") -> tuple[Path, list[str]]:
    """The LoRA with kohya's sd-scripts names (SGM UNet blocks); returns it and the layers left out."""
    from nodes.weights_check import listed

    from .lora_names import sgm_module_name

    kept, left_out = kohya_modules(adapter_modules(model))
    if not kept:
        raise ValueError(f"none of the LoRA's layers ({listed(left_out)}) has a place in a kohya file: save "
                         f"with formats 'diffusers', or adapt layers in the UNet's blocks")
    config = model.unet.config
    tensors = kohya_file(kept, {}, rename_unet=lambda name: sgm_module_name(name, config))
    return saving.save_tensors(path, tensors, lora_file_metadata(model, graph_name, "kohya"), dtype), left_out


def write_diffusers_folder(model, folder: Path, state_dicts: dict[str, dict], graph_name: str = "") -> Path:
    """A diffusers StableDiffusionXLPipeline folder that ``from_pretrained`` loads."""
    from diffusers import StableDiffusionXLPipeline

    from nodes.lora_fusion import dtype_label
    from nodes.pipeline_folder import write_pipeline_folder
    from nodes.placeholder_tokens import plain_tokenizer

    tokenizers = {"tokenizer": plain_tokenizer(model.tokenizer), "tokenizer_2": plain_tokenizer(model.tokenizer_2)}
    meta = saving.model_metadata(model, graph_name, "diffusers", dtype_label(state_dicts), architecture(model))
    pipe = StableDiffusionXLPipeline(vae=model.vae, text_encoder=model.text_encoder,
                                     text_encoder_2=model.text_encoder_2, unet=model.unet,
                                     scheduler=model.noise_scheduler, **tokenizers)
    return write_pipeline_folder(folder, pipe, state_dicts, tokenizers, model.noise_scheduler, meta)


def checkpoint_state_dict(model, state_dicts: dict[str, dict]) -> tuple[dict, list[str]]:
    """The single-file tensors, and warnings. Placeholder tokens of a trained embedding are cut off both
    token tables (a checkpoint has no tokenizer to carry them)."""
    from nodes.ldm_layout import sdxl_state_dict
    from nodes.pipeline_folder import token_key

    parts, warnings = dict(state_dicts), []
    info = model.embedding
    if info is not None:
        for name in ("text_encoder", "text_encoder_2"):
            te = dict(parts[name])
            key, base = token_key(te), info.base_vocab_size
            te[key] = te[key][:base].contiguous()
            parts[name] = te
        warnings.append(f"the checkpoint leaves out the trained embedding {info.placeholder!r} (a checkpoint has "
                        f"no tokenizer for it): save it with sdxl.save_embedding")
    tensors = sdxl_state_dict(parts["unet"], model.unet.config, parts["vae"], model.vae.config,
                              parts["text_encoder"], parts["text_encoder_2"])
    return tensors, warnings


def write_checkpoint(model, path: Path, state_dicts: dict[str, dict], graph_name: str = "") -> tuple[Path, list[str]]:
    """A single-file ``.safetensors`` SDXL checkpoint in the original layout."""
    from nodes.lora_fusion import dtype_label
    from nodes.pipeline_folder import save_weights
    from runtime.fileio import atomic_path

    tensors, warnings = checkpoint_state_dict(model, state_dicts)
    meta = saving.model_metadata(model, graph_name, "checkpoint", dtype_label(state_dicts), architecture(model))
    with atomic_path(path) as tmp:
        save_weights(tensors, tmp, meta)
    return path, warnings
