"""Textual inversion for SDXL: one set of placeholder vectors per text encoder.

The placeholder (e.g. ``<my-cat>``) gets ``vectors`` new tokens (``<my-cat>``,
``<my-cat>_1``, ...) in both tokenizers, and each encoder gets its own vectors for
them: CLIP-L's width (768 in SDXL) and CLIP-G's (1280). Both encoders run in the
training forward on the batches' ``tokens`` and ``tokens_2``; only the new rows of
their token embeddings train. The file (``nodes.sdxl.embedding_files``) holds them as
``clip_l`` and ``clip_g``, the SDXL embedding layout of A1111, ComfyUI and diffusers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from runtime import Input, Output, Param, node
from runtime.port_types import Tokenizer

from nodes.placeholder_tokens import PlaceholderParams

from .model import TOKENS, TOKENS_2
from .types import SDXLModel

ENCODERS = ("text_encoder", "text_encoder_2")
HOW_TO_FEED = {
    TOKENS: "connect this node's 'tokenizer' to sd.tokenize, and its 'tokens' output to the batches node's fields "
            "(the placeholder's vectors train through both text encoders)",
    TOKENS_2: "connect this node's 'tokenizer_2' to a second sd.tokenize, and its output to the batches node's "
              "fields, named 'tokens_2'",
}


@dataclass
class SDXLEmbeddingInfo:
    """What ``sdxl.embedding_setup`` did: savers and samplers read it.

    ``tokens`` are the placeholder's tokenizer entries (the same in both tokenizers),
    ``token_ids`` / ``token_ids_2`` their ids in the first / second tokenizer, and
    ``base_vocab_sizes`` each encoder's table rows before the setup added any.
    """

    placeholder: str
    tokens: list[str]
    token_ids: list[int]
    token_ids_2: list[int]
    initial_text: str
    base_vocab_sizes: tuple[int, int]


def embedding_vectors(model) -> dict:
    """The trained vectors of each encoder: ``{"text_encoder": (n, D1), "text_encoder_2": (n, D2)}``."""
    if model.embedding is None:
        raise ValueError("the model has no trained embedding: train it through sdxl.embedding_setup first")
    return {name: getattr(model, name).get_input_embeddings().vectors for name in ENCODERS}


def pool_at_end_token(text_encoder, tokenizer) -> bool:
    """Make a CLIP encoder whose config has the legacy ``eos_token_id`` 2 (SDXL's CLIP-G has it) pool at the
    tokenizer's end token. With the legacy id transformers pools at the highest token id, which once the
    placeholder is added is the placeholder, not the end token; the pooled embedding conditions SDXL's UNet,
    and A1111 and ComfyUI pool at the end token. Prompts without new tokens pool where they did."""
    eos = tokenizer.eos_token_id
    inner = getattr(text_encoder, "text_model", None)
    if inner is None or getattr(inner, "eos_token_id", None) != 2 or eos is None or eos == 2:
        return False
    inner.eos_token_id = text_encoder.config.eos_token_id = int(eos)
    return True


@node("sdxl.embedding_setup", title="Embedding (SDXL)", category="Setup")
class EmbeddingSetup(PlaceholderParams):
    """Learn a new word for SDXL: the placeholder gets token vectors in both text encoders (CLIP-L and
    CLIP-G), initialised from the initial text's token embeddings in each; only those vectors train,
    everything else is frozen.

    Captions must contain the placeholder (e.g. ``a photo of <my-cat>``): tokenize them with this node's
    ``tokenizer`` and ``tokenizer_2`` outputs (two sd.tokenize nodes) and give the batches ``tokens`` and
    ``tokens_2`` (both encoders run in the training loop). The input model is not changed where other
    nodes see it: the tokenizers are always copies, and an encoder is copied when another node of the run
    also uses it (the log says so)."""

    model = Input(SDXLModel, doc="base model")
    adapted = Output(SDXLModel, doc="model whose only trainable weights are the placeholder's vectors")
    tokenizer = Output(Tokenizer, doc="the first tokenizer with the placeholder, for sd.tokenize ('tokens')")
    tokenizer_2 = Output(Tokenizer, doc="the second tokenizer with the placeholder, for sd.tokenize ('tokens_2')")
    clip_skip = Param(int, 0, min=0, max=12, doc="layers to skip before the penultimate one in the training "
                                                 "forward")

    def needed_batch_fields(self) -> dict[str, str]:
        """What train.loop's check asks: both encoders run in the training forward, on both token ids."""
        return dict(HOW_TO_FEED)

    def run(self, ctx, model):
        from nodes.diffusers_parts import fingerprint_of
        from nodes.placeholder_tokens import check_placeholder, initial_vectors, train_new_tokens, with_placeholder

        model = self._check(model)
        tokenizers = {"tokenizer": model.tokenizer, "tokenizer_2": model.tokenizer_2}
        tokens = check_placeholder(self.placeholder, self.vectors, tokenizers)
        inits = {enc: initial_vectors(tok, getattr(model, enc), self.initial_text, self.vectors)
                 for enc, tok in zip(ENCODERS, tokenizers.values())}
        new_tokenizers = {k: with_placeholder(t, self.placeholder, tokens) for k, t in tokenizers.items()}
        ids = {enc: tok.convert_tokens_to_ids(tokens) for enc, tok in zip(ENCODERS, new_tokenizers.values())}

        encoders = ctx.own_copies("to add the new tokens there", **{enc: getattr(model, enc) for enc in ENCODERS})
        for part in (model.unet, model.vae, *encoders.values()):
            part.requires_grad_(False)
        rows = tuple(train_new_tokens(ctx, encoders[enc], ids[enc], inits[enc]) for enc in ENCODERS)
        if pool_at_end_token(encoders["text_encoder_2"], new_tokenizers["tokenizer_2"]):
            ctx.log("text_encoder_2 now pools at the end token, not at the highest token id (its config's "
                    "legacy eos_token_id 2), so the placeholder does not move the pooled embedding")

        info = SDXLEmbeddingInfo(self.placeholder, tokens, ids["text_encoder"], ids["text_encoder_2"],
                                 self.initial_text, rows)
        fp = fingerprint_of("sdxl-embedding", model.fingerprint, tokens, ids, self.initial_text)
        adapted = dataclasses.replace(model, **encoders, **new_tokenizers, embedding=info, train_text_encoder=True,
                                      clip_skip=self.clip_skip, fingerprint=fp)
        widths = " and ".join(str(inits[enc].shape[1]) for enc in ENCODERS)
        ctx.log(f"embedding {self.placeholder!r}: {self.vectors} vector(s) of {widths} (token ids "
                f"{ids['text_encoder'][0]}..{ids['text_encoder'][-1]}), initialised from {self.initial_text!r}")
        part, part_2 = adapted.tokenizer_parts()
        return {"adapted": adapted, "tokenizer": part, "tokenizer_2": part_2}

    def _check(self, model):
        """``model`` if it is a base SDXL model this setup can add tokens to, else a one-line error."""
        from .model import check_sdxl_model

        check_sdxl_model(model, "sdxl.embedding_setup")
        if model.embedding is not None:
            raise ValueError(f"the model already has the embedding {model.embedding.placeholder!r} "
                             f"(two sdxl.embedding_setup nodes in a row?)")
        if model.lora is not None:
            raise ValueError("the model has LoRA adapters (which this setup would freeze): connect "
                             "sdxl.embedding_setup to a base model")
        layers = min(getattr(model, enc).config.num_hidden_layers for enc in ENCODERS)
        if self.clip_skip + 2 > layers:
            raise ValueError(f"param 'clip_skip': {self.clip_skip} is too large for {layers}-layer text encoders")
        return model
