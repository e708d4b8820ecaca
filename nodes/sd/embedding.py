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
import re
from pathlib import Path

from runtime import Input, Output, Param, node
from runtime.port_types import Tokenizer

from nodes.saving import base_metadata

from .metadata import architecture
from .model import TOKENS
from .types import SDModel

EMBEDDING_KEY = "emb_params"
MAX_VECTORS = 75  # CLIP's 77 positions minus start and end
PLACEHOLDER_RE = re.compile(r"\S+")


def placeholder_tokens(placeholder: str, count: int) -> list[str]:
    """``<tok>``, ``<tok>_1``, ... ``<tok>_{count-1}``."""
    return [placeholder] + [f"{placeholder}_{i}" for i in range(1, count)]


def initial_vectors(model, text: str, count: int):
    """``count`` vectors from the token embeddings of ``text``, spread over its tokens as A1111 does
    (vector i takes token i * k // count of k); zeros when the text has no tokens."""
    import torch

    ids = model.tokenizer(text, add_special_tokens=False).input_ids if text.strip() else []
    table = model.text_encoder.get_input_embeddings().weight.detach()
    if not ids:
        return torch.zeros(count, table.shape[1], dtype=torch.float32, device=table.device)
    return torch.stack([table[ids[i * len(ids) // count]] for i in range(count)]).float()


@node("sd.embedding_setup", title="Embedding (textual inversion)", category="Setup")
class EmbeddingSetup:
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
    placeholder = Param(str, "<my-concept>", doc="the word to learn, as written in captions and prompts "
                                                 "(no spaces; must be new to the tokenizer)")
    initial_text = Param(str, "*", doc="text whose token embeddings start the vectors (e.g. 'cat', 'person'); "
                                       "empty = zeros")
    vectors = Param(int, 1, min=1, max=MAX_VECTORS, doc="token vectors of the placeholder (more = more capacity, "
                                                        "fewer words left in the 77-token prompt)")
    clip_skip = Param(int, 0, min=0, max=12, doc="text-encoder layers to skip in the training forward")

    def needed_batch_fields(self) -> dict[str, str]:
        """What train.loop's check asks: the text encoder runs in the training forward, on token ids."""
        return {TOKENS: "connect this node's tokenizer to sd.tokenize, and its 'tokens' output to the batches "
                        "node's fields (the placeholder's vectors train through the text encoder)"}

    def run(self, ctx, model):
        import torch

        from .model import EmbeddingInfo, check_sd_model, fingerprint_of
        from nodes.placeholder_tokens import TrainableTokens, with_placeholder

        model = check_sd_model(model, "sd.embedding_setup")
        if model.embedding is not None:
            raise ValueError(f"the model already has the embedding {model.embedding.placeholder!r} "
                             f"(two sd.embedding_setup nodes in a row?)")
        if not PLACEHOLDER_RE.fullmatch(self.placeholder or ""):
            raise ValueError(f"param 'placeholder': {self.placeholder!r} must be one word without spaces")
        layers = model.text_encoder.config.num_hidden_layers
        if self.clip_skip >= layers:
            raise ValueError(f"param 'clip_skip': {self.clip_skip} is too large for a {layers}-layer text encoder")
        tokens = placeholder_tokens(self.placeholder, self.vectors)
        vocab = model.tokenizer.get_vocab()
        known = [t for t in tokens if t in vocab]
        if known:
            raise ValueError(f"param 'placeholder': {', '.join(known)} is already a token of the tokenizer; "
                             f"choose a new word (e.g. in angle brackets: <{self.placeholder.strip('<>')}-1>)")
        init = initial_vectors(model, self.initial_text, self.vectors)
        tokenizer = with_placeholder(model.tokenizer, self.placeholder, tokens)
        ids = tokenizer.convert_tokens_to_ids(tokens)

        te = ctx.own_copies("to add the new tokens there", text_encoder=model.text_encoder)["text_encoder"]
        base_rows = te.get_input_embeddings().num_embeddings
        if max(ids) >= base_rows:
            # transformers fills the new rows from torch's global generator (they are overwritten below)
            with ctx.torch_seeded(0, "resize_token_embeddings"):
                te.resize_token_embeddings(max(ids) + 1, mean_resizing=False)
        for part in (model.unet, model.vae, te):
            part.requires_grad_(False)
        table = te.get_input_embeddings()
        with torch.no_grad():
            table.weight[ids] = init.to(table.weight.dtype)
        te.set_input_embeddings(TrainableTokens(table, ids, init))

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


def default_name(placeholder: str) -> str:
    """A file name from the placeholder (A1111 uses the file name as the prompt word)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", placeholder).strip("-.") or "embedding"
