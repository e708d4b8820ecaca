"""Data-graph stage of Flux: CLIP-L's pooled output and T5's sequence for each caption.

Its output port names are the batch keys the Flux model reads (``t5_embedding``, ``pooled_embedding``).
Captions go through ``sd.tokenize`` once per tokenizer (CLIP-L: 77 tokens; T5: the tokenizer's length,
512 for FLUX.1), images through the shared VAE encoder. Put a cache after this stage and the T5
encoder (the largest part of FLUX.1 after the transformer) runs once per caption, not once per epoch.
"""

from __future__ import annotations

from runtime import Input, Output, Param, node
from runtime.data import PerSampleStage
from runtime.port_types import TextEmbedding, TextEncoder, TokenIds

from .types import ClipPooledEmbedding

#: FluxPipeline refuses a longer T5 sequence; dev was trained with 512, schnell with 256
T5_MAX_LENGTH = 512


def clip_pooled(text_encoder, ids):
    """CLIP-L's pooled output (N, P) for token ids (N, 77): Flux's ``pooled_projections``."""
    return text_encoder(ids.to(text_encoder.device), output_hidden_states=False).pooler_output


def t5_sequence(text_encoder_2, ids):
    """T5's last hidden state (N, L, D) for token ids (N, L), no attention mask (as FluxPipeline)."""
    return text_encoder_2(ids.to(text_encoder_2.device), output_hidden_states=False)[0]


def fit_length(ids, length: int, pad_id: int, eos_id: int):
    """T5 token ids (N, L) as the tokenizer gives them at ``max_length=length``: padded with ``pad_id``, or
    cut with the end-of-sequence id last when the text went on past ``length``."""
    import torch

    n, have = ids.shape
    if have <= length:
        return torch.cat([ids, ids.new_full((n, length - have), pad_id)], dim=1)
    out = ids[:, :length].clone()
    cut = ids[:, length] != pad_id  # the text (or its end mark) did not fit
    out[cut, -1] = eos_id
    return out


def tokenize_both(tokenizer, tokenizer_2, texts: list[str], max_length: int = T5_MAX_LENGTH):
    """CLIP-L token ids (N, 77) and T5 token ids (N, max_length), padded as FluxPipeline pads them."""
    from nodes.sd.text import tokenize

    return tokenize(tokenizer, texts), tokenize(tokenizer_2, texts, max_length)


def encode_prompts(model, texts: list[str], max_length: int = T5_MAX_LENGTH):
    """(T5 sequence (N, L, D), CLIP pooled (N, P)) of ``texts`` with a Flux model's encoders (no grad),
    what ``FluxPipeline.encode_prompt`` gives (samplers use it)."""
    import torch

    ids, ids_2 = tokenize_both(model.tokenizer, model.tokenizer_2, list(texts), max_length)
    with torch.no_grad():
        return t5_sequence(model.text_encoder_2, ids_2), clip_pooled(model.text_encoder, ids)


def _is_t5(module) -> bool:
    return getattr(module.config, "model_type", "") in ("t5", "umt5")


@node("flux.encode_text", title="Encode text (Flux)", category="Data")
class EncodeText(PerSampleStage):
    """Encode a caption's token ids with both Flux text encoders: CLIP-L's pooled output (the transformer's
    pooled_projections) and T5's last hidden state (its text sequence), as FluxPipeline.encode_prompt does."""

    tokens = Input(TokenIds, doc="CLIP-L token ids (sd.tokenize with the model's 'tokenizer')")
    tokens_2 = Input(TokenIds, doc="T5 token ids (sd.tokenize with the model's 'tokenizer_2')")
    text_encoder = Input(TextEncoder, doc="CLIP-L (the Flux loader's 'text_encoder')")
    text_encoder_2 = Input(TextEncoder, doc="T5 (the Flux loader's 'text_encoder_2')")
    t5_embedding = Output(TextEmbedding, doc="T5's last hidden state: max_length x D")
    pooled_embedding = Output(ClipPooledEmbedding, doc="CLIP-L's pooled output")
    max_length = Param(int, T5_MAX_LENGTH, min=1, max=T5_MAX_LENGTH,
                       doc="T5 sequence length: padded or cut to this many tokens (dev: 512; schnell: 256)")
    random = False
    parallel = False

    def setup(self, ctx, text_encoder, text_encoder_2):
        for port, part in (("text_encoder", text_encoder), ("text_encoder_2", text_encoder_2)):
            if not hasattr(part, "module"):
                raise TypeError(f"input {port!r} must come from a Flux model loader (got {type(part).__name__})")
        if _is_t5(text_encoder.module) or not _is_t5(text_encoder_2.module):
            raise TypeError("input 'text_encoder' must be CLIP-L and 'text_encoder_2' T5: connect the Flux loader's "
                            "'text_encoder' and 'text_encoder_2' outputs to the ports of the same names")

    def process(self, item, tokens, tokens_2, text_encoder, text_encoder_2):
        import torch

        config = text_encoder_2.module.config
        ids_2 = fit_length(tokens_2[None], self.max_length, int(config.pad_token_id or 0),
                           int(config.eos_token_id if config.eos_token_id is not None else 1))
        with torch.no_grad():
            pooled = clip_pooled(text_encoder.module, tokens[None])
            sequence = t5_sequence(text_encoder_2.module, ids_2)
        return {"t5_embedding": sequence[0].to("cpu", torch.float32),
                "pooled_embedding": pooled[0].to("cpu", torch.float32)}
