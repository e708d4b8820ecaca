"""Writing whole SD 1.x/2.x models: diffusers folders and single-file LDM checkpoints.

Both write plain weights (``export.part_state_dicts``: LoRA fused, placeholder
vectors in place, chosen dtype) and never change the live model. Writes are
atomic: a folder is assembled beside its final name and swapped in
(``runtime.fileio.atomic_dir``), a file goes through ``atomic_path``.
"""

from __future__ import annotations

from pathlib import Path

from runtime.fileio import atomic_path

from nodes.ldm_layout import ldm_state_dict
from nodes.pipeline_folder import save_weights, token_key, write_pipeline_folder
from nodes import saving

from .metadata import architecture


def model_metadata(model, graph_name: str, fmt: str, dtype: str) -> dict[str, str]:
    """Header metadata of a full SD 1.x/2.x model file."""
    return saving.model_metadata(model, graph_name, fmt, dtype, architecture(model))


def write_diffusers_folder(model, folder: Path, state_dicts: dict[str, dict], graph_name: str = "") -> Path:
    """A diffusers StableDiffusionPipeline folder that ``from_pretrained`` loads."""
    from diffusers import StableDiffusionPipeline

    from nodes.lora_fusion import dtype_label
    from nodes.placeholder_tokens import plain_tokenizer

    tokenizer = plain_tokenizer(model.tokenizer)
    meta = model_metadata(model, graph_name, "diffusers", dtype_label(state_dicts))
    pipe = StableDiffusionPipeline(vae=model.vae, text_encoder=model.text_encoder, tokenizer=tokenizer,
                                   unet=model.unet, scheduler=model.noise_scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    return write_pipeline_folder(folder, pipe, state_dicts, {"tokenizer": tokenizer}, model.noise_scheduler, meta)


def checkpoint_state_dict(model, state_dicts: dict[str, dict]) -> tuple[dict, list[str]]:
    """The LDM-layout tensors, and warnings. Placeholder tokens added by sd.embedding_setup are left
    out (a checkpoint has no tokenizer to carry them): their rows are cut off the token embedding."""
    te = dict(state_dicts["text_encoder"])
    warnings = []
    if model.embedding is not None:
        key = token_key(te)
        base = model.embedding.base_vocab_size
        if te[key].shape[0] > base:
            te[key] = te[key][:base].contiguous()
            warnings.append(f"the checkpoint leaves out the trained embedding {model.embedding.placeholder!r} "
                            f"(a checkpoint has no tokenizer for it): save it with sd.save_embedding")
    tensors = ldm_state_dict(state_dicts["unet"], model.unet.config, state_dicts["vae"], model.vae.config, te,
                             model.version)
    return tensors, warnings


def write_checkpoint(model, path: Path, state_dicts: dict[str, dict], graph_name: str = "") -> tuple[Path, list[str]]:
    """A single-file ``.safetensors`` checkpoint in the original (LDM) layout."""
    from nodes.lora_fusion import dtype_label

    tensors, warnings = checkpoint_state_dict(model, state_dicts)
    meta = model_metadata(model, graph_name, "checkpoint", dtype_label(state_dicts))
    with atomic_path(path) as tmp:
        save_weights(tensors, tmp, meta)
    return path, warnings
