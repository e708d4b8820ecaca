"""Writing whole SD 1.x/2.x models: diffusers folders and single-file LDM checkpoints.

Both write plain weights (``export.part_state_dicts``: LoRA fused, placeholder
vectors in place, chosen dtype) and never change the live model. Writes are
atomic: a folder is assembled beside its final name and swapped in
(``runtime.fileio.atomic_dir``), a file goes through ``atomic_path``.
"""

from __future__ import annotations

from pathlib import Path

from runtime.fileio import atomic_dir, atomic_path

from nodes.ldm_layout import ldm_state_dict
from nodes.saving import base_metadata

from .metadata import architecture


def model_metadata(model, graph_name: str, fmt: str, dtype: str) -> dict[str, str]:
    """Header metadata of a full-model file: what it is, where it came from, how long it trained."""
    meta = {
        **base_metadata(model, graph_name, fmt),
        "nodetrainer_dtype": dtype,
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": architecture(model),
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models",
        "modelspec.title": graph_name or "nodetrainer model",
        "modelspec.prediction_type": "v" if model.prediction_type == "v_prediction" else "epsilon",
    }
    if model.lora is not None:
        meta["nodetrainer_lora_fused"] = f"rank {model.lora.rank}, alpha {model.lora.alpha}"
    if model.embedding is not None:
        meta["nodetrainer_embedding"] = " ".join(model.embedding.tokens)
    return meta


def _save_weights(tensors: dict, path: Path, metadata: dict[str, str] | None = None) -> None:
    from nodes.weights_io import write_safetensors

    write_safetensors(tensors, path, metadata={"format": "pt", **(metadata or {})})


def write_diffusers_folder(model, folder: Path, state_dicts: dict[str, dict], graph_name: str = "") -> Path:
    """A diffusers StableDiffusionPipeline folder that ``from_pretrained`` loads."""
    import copy

    from diffusers import StableDiffusionPipeline
    from diffusers.utils import SAFETENSORS_WEIGHTS_NAME
    from transformers.utils import SAFE_WEIGHTS_NAME

    from nodes.lora_fusion import dtype_label
    from nodes.placeholder_tokens import plain_tokenizer

    tokenizer = plain_tokenizer(model.tokenizer)
    meta = model_metadata(model, graph_name, "diffusers", dtype_label(state_dicts))
    with atomic_dir(folder) as tmp:
        pipe = StableDiffusionPipeline(vae=model.vae, text_encoder=model.text_encoder, tokenizer=tokenizer,
                                       unet=model.unet, scheduler=model.noise_scheduler, safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)
        pipe.save_config(tmp)  # model_index.json: which class each sub-folder holds
        for name in ("unet", "vae"):
            getattr(model, name).save_config(tmp / name)
            _save_weights(state_dicts[name], tmp / name / SAFETENSORS_WEIGHTS_NAME, meta)
        te_config = copy.deepcopy(model.text_encoder.config)
        te_config.vocab_size = state_dicts["text_encoder"][_token_key(state_dicts["text_encoder"])].shape[0]
        te_config.architectures = [type(model.text_encoder).__name__]
        te_config.save_pretrained(tmp / "text_encoder")
        _save_weights(clip_file_keys(state_dicts["text_encoder"]), tmp / "text_encoder" / SAFE_WEIGHTS_NAME, meta)
        tokenizer.save_pretrained(tmp / "tokenizer")
        model.noise_scheduler.save_pretrained(tmp / "scheduler")
    return folder


def clip_file_keys(te_sd: dict) -> dict:
    """CLIP text-encoder weights under the names every loader expects in a ``text_encoder`` folder:
    ``text_model.``-prefixed. transformers 5 names its modules without that level and would save them
    so, which transformers 4.x and ComfyUI load as an untrained text encoder (with only a warning);
    transformers 5 reads both."""
    return {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in te_sd.items()}


def _token_key(te_sd: dict) -> str:
    return next(k for k in te_sd if k.endswith("embeddings.token_embedding.weight"))


def checkpoint_state_dict(model, state_dicts: dict[str, dict]) -> tuple[dict, list[str]]:
    """The LDM-layout tensors, and warnings. Placeholder tokens added by sd.embedding_setup are left
    out (a checkpoint has no tokenizer to carry them): their rows are cut off the token embedding."""
    te = dict(state_dicts["text_encoder"])
    warnings = []
    if model.embedding is not None:
        key = _token_key(te)
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
        _save_weights(tensors, tmp, meta)
    return path, warnings
