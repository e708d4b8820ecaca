"""Writing a diffusers pipeline folder (what ``from_pretrained`` loads) from plain part weights, shared by
the diffusers-based families' savers. The live model is never changed; the folder is assembled beside
its final name and swapped in (``runtime.fileio.atomic_dir``)."""

from __future__ import annotations

import copy
from pathlib import Path


def save_weights(tensors: dict, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Reproducible safetensors write (the caller makes it atomic)."""
    from nodes.weights_io import write_safetensors

    write_safetensors(tensors, path, metadata={"format": "pt", **(metadata or {})})


def clip_file_keys(te_sd: dict) -> dict:
    """CLIP text-encoder weights under the names every loader expects in a ``text_encoder`` folder:
    ``text_model.``-prefixed. transformers 5 names its modules without that level and would save them
    so, which transformers 4.x and ComfyUI load as an untrained text encoder (with only a warning);
    transformers 5 reads both."""
    return {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in te_sd.items()}


def is_clip(te_sd: dict) -> bool:
    """Whether a text encoder's state dict is CLIP's (it has CLIP's token-embedding table)."""
    return any(k.endswith("embeddings.token_embedding.weight") for k in te_sd)


def untied(state_dict: dict, module) -> dict:
    """``state_dict`` without the copies of tied weights (T5's ``encoder.embed_tokens`` is ``shared``):
    safetensors refuses tensors that share memory, and the library ties them again on load."""
    tied = getattr(module, "_tied_weights_keys", None) or {}
    names = tied.keys() if isinstance(tied, dict) else tied
    return {k: v for k, v in state_dict.items() if k not in names}


def token_key(te_sd: dict) -> str:
    """The token-embedding key of a CLIP text encoder's state dict."""
    return next(k for k in te_sd if k.endswith("embeddings.token_embedding.weight"))


def write_pipeline_folder(folder: Path, pipeline, state_dicts: dict[str, dict], tokenizers: dict, scheduler,
                          metadata: dict[str, str]) -> Path:
    """``pipeline`` (a diffusers pipeline built from the live parts) as a folder: its model_index.json,
    each part's config with ``state_dicts[part]`` as its weights (CLIP text encoders' vocabularies sized
    to their token tables, under ``text_model.`` names; other transformers encoders such as T5 without
    their tied copies), the ``tokenizers`` (name -> plain tokenizer) and the training ``scheduler``."""
    from diffusers.utils import SAFETENSORS_WEIGHTS_NAME
    from transformers.utils import SAFE_WEIGHTS_NAME

    from runtime.fileio import atomic_dir

    with atomic_dir(folder) as tmp:
        pipeline.save_config(tmp)  # model_index.json: which class each sub-folder holds
        for name, weights in state_dicts.items():
            module = getattr(pipeline, name)
            if hasattr(module, "save_config"):  # a diffusers model (UNet, transformer, VAE)
                module.save_config(tmp / name)
                save_weights(weights, tmp / name / SAFETENSORS_WEIGHTS_NAME, metadata)
            elif is_clip(weights):
                config = copy.deepcopy(module.config)
                config.vocab_size = weights[token_key(weights)].shape[0]
                config.architectures = [type(module).__name__]
                config.save_pretrained(tmp / name)
                save_weights(clip_file_keys(weights), tmp / name / SAFE_WEIGHTS_NAME, metadata)
            else:  # another transformers model (T5): its own config, without tied copies
                config = copy.deepcopy(module.config)
                config.architectures = [type(module).__name__]
                config.save_pretrained(tmp / name)
                save_weights(untied(weights, module), tmp / name / SAFE_WEIGHTS_NAME, metadata)
        for name, tokenizer in tokenizers.items():
            tokenizer.save_pretrained(tmp / name)
        scheduler.save_pretrained(tmp / "scheduler")
    return folder
