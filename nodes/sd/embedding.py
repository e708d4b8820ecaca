"""Textual inversion for SD 1.x/2.x: the setup node and the A1111 embedding file.

The placeholder (e.g. ``<my-cat>``) gets ``vectors`` new tokens, named like diffusers'
multi-vector embeddings: ``<my-cat>``, ``<my-cat>_1``, ... (one vector: just the
placeholder, as A1111). The setup's tokenizer expands the placeholder in any text it
tokenizes (captions in the data graph, sample prompts), the text encoder runs in the
training forward, and only the new rows of its token embedding train.

File: safetensors with one tensor ``emb_params`` (n_vectors x dim), A1111's format;
diffusers' ``load_textual_inversion(path, token=...)`` reads it too.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from runtime import Input, Output, Param, node
from runtime.port_types import Tokenizer

from nodes.placeholder_tokens import PlaceholderParams, check_placeholder, initial_vectors
from nodes.saving import base_metadata

from .metadata import architecture
from .model import TOKENS
from .types import SDModel

EMBEDDING_KEY = "emb_params"


@node("sd.embedding_setup", title="Embedding (textual inversion)", category="Setup")
class EmbeddingSetup(PlaceholderParams):
    """Learn a new word: the placeholder gets token vectors initialised from the initial text; only those
    vectors train, everything else is frozen.

    Captions must contain the placeholder (e.g. ``a photo of <my-cat>``): tokenize them with this node's
    ``tokenizer`` output and give the batches ``tokens`` (the text encoder runs in the training loop).
    The input model is not changed where other nodes see it: the tokenizer is always a copy, and the text
    encoder is copied when another node of the run also uses it (the log says so).
    """

    model = Input(SDModel, doc="base model")
    adapted = Output(SDModel, doc="model whose only trainable weights are the placeholder's vectors")
    tokenizer = Output(Tokenizer, doc="the tokenizer with the placeholder, for sd.tokenize")
    clip_skip = Param(int, 0, min=0, max=12, doc="text-encoder layers to skip in the training forward")

    def needed_batch_fields(self) -> dict[str, str]:
        """What train.loop's check asks: the text encoder runs in the training forward, on token ids."""
        return {TOKENS: "connect this node's tokenizer to sd.tokenize, and its 'tokens' output to the batches "
                        "node's fields (the placeholder's vectors train through the text encoder)"}

    def run(self, ctx, model):
        from .model import EmbeddingInfo, check_sd_model, fingerprint_of
        from nodes.placeholder_tokens import train_new_tokens, with_placeholder

        model = check_sd_model(model, "sd.embedding_setup")
        if model.embedding is not None:
            raise ValueError(f"the model already has the embedding {model.embedding.placeholder!r} "
                             f"(two sd.embedding_setup nodes in a row?)")
        tokens = check_placeholder(self.placeholder, self.vectors, {"the tokenizer": model.tokenizer})
        layers = model.text_encoder.config.num_hidden_layers
        if self.clip_skip >= layers:
            raise ValueError(f"param 'clip_skip': {self.clip_skip} is too large for a {layers}-layer text encoder")
        init = initial_vectors(model.tokenizer, model.text_encoder, self.initial_text, self.vectors)
        tokenizer = with_placeholder(model.tokenizer, self.placeholder, tokens)
        ids = tokenizer.convert_tokens_to_ids(tokens)

        te = ctx.own_copies("to add the new tokens there", text_encoder=model.text_encoder)["text_encoder"]
        for part in (model.unet, model.vae, te):
            part.requires_grad_(False)
        base_rows = train_new_tokens(ctx, te, ids, init)

        info = EmbeddingInfo(self.placeholder, tokens, ids, self.initial_text, base_rows)
        fp = fingerprint_of("embedding", model.fingerprint, tokens, ids, self.initial_text)
        adapted = dataclasses.replace(model, text_encoder=te, tokenizer=tokenizer, embedding=info,
                                      train_text_encoder=True, clip_skip=self.clip_skip, fingerprint=fp)
        ctx.log(f"embedding {self.placeholder!r}: {self.vectors} vector(s) of {init.shape[1]} "
                f"(token ids {ids[0]}..{ids[-1]}), initialised from {self.initial_text!r}")
        return {"adapted": adapted, "tokenizer": adapted.tokenizer_part()}


def embedding_metadata(model, graph_name: str) -> dict[str, str]:
    info = model.embedding
    return {
        **base_metadata(model, graph_name, "a1111_embedding"),
        "nodetrainer_placeholder": info.placeholder,
        "nodetrainer_tokens": " ".join(info.tokens),
        "nodetrainer_initial_text": info.initial_text,
        "modelspec.architecture": f"{architecture(model)}/textual-inversion",
        "modelspec.title": info.placeholder,
    }


def save_embedding_file(model, path: Path, dtype, graph_name: str = "") -> Path:
    """Write the model's trained placeholder vectors as an A1111 embedding (atomic)."""
    from nodes.saving import save_tensors

    vectors = model.embedding_vectors()
    return save_tensors(path, {EMBEDDING_KEY: vectors}, embedding_metadata(model, graph_name), dtype)
