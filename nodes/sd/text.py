"""CLIP tokenizing and encoding shared by the encode stage, the training forward and the sampler."""

from __future__ import annotations

from typing import Any as _Any


def tokenize(tokenizer, texts: list[str], max_length: int | None = None):
    """Token ids (N, max_length) padded and truncated the way SD pipelines do."""
    max_length = max_length or tokenizer.model_max_length
    return tokenizer(list(texts), padding="max_length", max_length=max_length, truncation=True,
                     return_tensors="pt").input_ids


def encode_tokens(text_encoder, ids, clip_skip: int = 0) -> _Any:
    """CLIP hidden states (N, L, D). ``clip_skip`` = how many final layers to skip (diffusers'
    convention: 1 is A1111's "Clip skip: 2"); skipped outputs get the final layer norm as in diffusers."""
    ids = ids.to(text_encoder.device)
    if clip_skip <= 0:
        return text_encoder(ids)[0]
    layers = text_encoder.config.num_hidden_layers
    if clip_skip >= layers:
        raise ValueError(f"clip_skip {clip_skip} is too large: the text encoder has {layers} layers")
    out = text_encoder(ids, output_hidden_states=True)
    hidden = out.hidden_states[-(clip_skip + 1)]
    norm = getattr(text_encoder, "final_layer_norm", None)
    if norm is None:  # transformers 4 nests the CLIP text transformer under .text_model
        norm = text_encoder.text_model.final_layer_norm
    return norm(hidden)
