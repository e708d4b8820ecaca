"""New placeholder tokens for textual inversion: a tokenizer that expands them, an embedding that trains only them.

- ``check_placeholder`` turns the setup's placeholder param into its tokens (``<tok>``,
  ``<tok>_1``, ...), refusing a word with spaces or one a tokenizer already knows;
  ``initial_vectors`` starts them from a text's token embeddings; ``train_new_tokens``
  puts them into a text encoder. Every family with CLIP-style encoders uses these (SD
  with one encoder, SDXL with two).
- ``PlaceholderTokenizer`` wraps a plain tokenizer that has the placeholder's tokens
  added. Its calls (``__call__``, ``encode``, ``tokenize``) first expand each
  placeholder to its multi-vector sequence (``<tok>`` -> ``<tok> <tok>_1 <tok>_2``,
  diffusers' naming, so a saved pipeline expands prompts the same way); every other
  attribute is the wrapped tokenizer's. ``plain_tokenizer`` gives the wrapped one
  (what a saved diffusers folder holds).
- ``TrainableTokens`` replaces a text encoder's token embedding: the table stays
  frozen, the placeholder rows come from a small trainable ``vectors`` parameter.
  Its state dict is a plain embedding table with those rows filled in, so the text
  encoder saves, loads and goes into backups like any other.

peft's trainable tokens (``TrainableTokensLayer``) do the same training, but their state
dict renames the table (``base_layer.weight`` plus ``trainable_tokens_delta`` and
``trainable_tokens_original``), which every plain-CLIP reader of our text encoder
(diffusers folders, checkpoints, backups) would then have to undo.

The registry imports every module of ``nodes/`` when it lists them, so torch is imported only when
``TrainableTokens`` is first used (the module's ``__getattr__`` defines it then, under its own name, so
pickle finds it).
"""

from __future__ import annotations

import copy
import re
from typing import Any as _Any

from runtime import Param


MAX_VECTORS = 75  # CLIP's 77 positions minus start and end
PLACEHOLDER_RE = re.compile(r"\S+")


class PlaceholderParams:
    """The params of a family's embedding (textual inversion) setup node."""

    placeholder = Param(str, "<my-concept>", doc="the word to learn, as written in captions and prompts "
                                                 "(no spaces; must be new to the model's tokenizers)")
    initial_text = Param(str, "*", doc="text whose token embeddings start the vectors (e.g. 'cat', 'person'); "
                                       "empty = zeros")
    vectors = Param(int, 1, min=1, max=MAX_VECTORS, doc="token vectors of the placeholder, in each text encoder "
                                                        "(more = more capacity, fewer words left in the 77-token "
                                                        "prompt)")


# -- the placeholder's tokens --------------------------------------------------------------

def placeholder_tokens(placeholder: str, count: int) -> list[str]:
    """``<tok>``, ``<tok>_1``, ... ``<tok>_{count-1}`` (diffusers' multi-vector naming)."""
    return [placeholder] + [f"{placeholder}_{i}" for i in range(1, count)]


def check_placeholder(placeholder: str, count: int, tokenizers: dict) -> list[str]:
    """The placeholder's ``count`` tokens; a one-line ValueError naming the param 'placeholder' when it is
    not one word or when one of its tokens is already in a tokenizer (``tokenizers``: name -> tokenizer)."""
    if not PLACEHOLDER_RE.fullmatch(placeholder or ""):
        raise ValueError(f"param 'placeholder': {placeholder!r} must be one word without spaces")
    tokens = placeholder_tokens(placeholder, count)
    for name, tokenizer in tokenizers.items():
        vocab = tokenizer.get_vocab()
        known = [t for t in tokens if t in vocab]
        if known:
            raise ValueError(f"param 'placeholder': {', '.join(known)} is already a token of {name}; "
                             f"choose a new word (e.g. in angle brackets: <{placeholder.strip('<>')}-1>)")
    return tokens


def initial_vectors(tokenizer, text_encoder, text: str, count: int):
    """``count`` vectors from ``text_encoder``'s token embeddings of ``text``, spread over its tokens as A1111
    does (vector i takes token i * k // count of k); zeros when the text has no tokens. float32."""
    import torch

    ids = tokenizer(text, add_special_tokens=False).input_ids if text.strip() else []
    table = text_encoder.get_input_embeddings().weight.detach()
    if not ids:
        return torch.zeros(count, table.shape[1], dtype=torch.float32, device=table.device)
    return torch.stack([table[ids[i * len(ids) // count]] for i in range(count)]).float()


def default_name(placeholder: str) -> str:
    """A file name from the placeholder (A1111 uses the file name as the prompt word)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", placeholder).strip("-.") or "embedding"


# -- tokenizer --------------------------------------------------------------------------

def expand_text(text: str, placeholders: dict[str, list[str]]) -> str:
    """Each placeholder -> its tokens joined by spaces. Idempotent: an already expanded
    sequence (or an explicit ``<tok>_1``) is left alone. Case-insensitive like CLIP."""
    for placeholder, tokens in placeholders.items():
        if len(tokens) < 2:
            continue
        pattern = re.escape(placeholder) + r"(?!_\d)(?!\s+" + re.escape(tokens[1]) + r"(?!\w))"
        text = re.sub(pattern, " ".join(tokens), text, flags=re.IGNORECASE)
    return text


class PlaceholderTokenizer:
    """A tokenizer whose text inputs get their placeholders expanded; everything else is ``tokenizer``'s."""

    def __init__(self, tokenizer, placeholders: dict[str, list[str]]):
        self.tokenizer = tokenizer
        self.placeholders = {k: list(v) for k, v in placeholders.items()}

    def expand(self, text: _Any) -> _Any:
        """``text`` (a string or a list of strings) with the placeholders expanded; anything else as is."""
        if isinstance(text, str):
            return expand_text(text, self.placeholders)
        if isinstance(text, (list, tuple)) and all(isinstance(t, str) for t in text):
            return [expand_text(t, self.placeholders) for t in text]
        return text

    def __call__(self, text=None, *args, **kwargs):
        return self.tokenizer(self.expand(text), *args, **kwargs)

    def encode(self, text, *args, **kwargs):
        return self.tokenizer.encode(self.expand(text), *args, **kwargs)

    def tokenize(self, text, *args, **kwargs):
        return self.tokenizer.tokenize(self.expand(text), *args, **kwargs)

    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("tokenizer", "placeholders"):  # not set yet (copy, unpickling)
            raise AttributeError(name)
        return getattr(self.tokenizer, name)

    def __len__(self) -> int:
        return len(self.tokenizer)

    def __repr__(self) -> str:
        return f"PlaceholderTokenizer({sorted(self.placeholders)}, {type(self.tokenizer).__name__})"


def with_placeholder(tokenizer, placeholder: str, tokens: list[str]) -> PlaceholderTokenizer:
    """A copy of ``tokenizer`` with ``tokens`` added and ``placeholder`` expanding to them (``tokenizer`` is
    not changed; placeholders it already expands are kept)."""
    placeholders = dict(getattr(tokenizer, "placeholders", {})) if isinstance(tokenizer, PlaceholderTokenizer) else {}
    new = copy.deepcopy(plain_tokenizer(tokenizer))
    added = new.add_tokens(list(tokens))
    if added != len(tokens):
        raise ValueError(f"the tokenizer already knows some of {tokens}")
    return PlaceholderTokenizer(new, {**placeholders, placeholder: list(tokens)})


def plain_tokenizer(tokenizer):
    """``tokenizer`` without placeholder expansion (the vocabulary keeps the added tokens)."""
    return tokenizer.tokenizer if isinstance(tokenizer, PlaceholderTokenizer) else tokenizer


# -- text encoder -------------------------------------------------------------------------

def train_new_tokens(ctx, text_encoder, token_ids: list[int], init) -> int:
    """Make rows ``token_ids`` of ``text_encoder``'s token embedding the only trainable weights, starting at
    ``init`` (n x dim): the table grows when the ids pass its end, and becomes a ``TrainableTokens``. The
    caller freezes the rest of the encoder. Returns the table's rows before."""
    import torch

    base_rows = text_encoder.get_input_embeddings().num_embeddings
    if max(token_ids) >= base_rows:
        # transformers fills the new rows from torch's global generator (they are overwritten below)
        with ctx.torch_seeded(0, "resize_token_embeddings"):
            text_encoder.resize_token_embeddings(max(token_ids) + 1, mean_resizing=False)
    table = text_encoder.get_input_embeddings()
    table.requires_grad_(False)
    with torch.no_grad():
        table.weight[token_ids] = init.to(table.weight.dtype)
    text_encoder.set_input_embeddings(_trainable_tokens_class()(table, token_ids, init))
    return base_rows


def _define_trainable_tokens() -> type:
    import torch

    class TrainableTokens(torch.nn.Embedding):
        """A frozen embedding table whose rows ``token_ids`` are the trainable ``vectors`` instead."""

        def __init__(self, base: torch.nn.Embedding, token_ids: list[int], init: torch.Tensor):
            super().__init__(base.num_embeddings, base.embedding_dim, padding_idx=base.padding_idx,
                             _weight=base.weight.detach(), _freeze=True, device=base.weight.device)
            ids = torch.tensor(token_ids, dtype=torch.long, device=base.weight.device)
            self.register_buffer("token_ids", ids, persistent=False)
            # float32 even on a half-precision text encoder (like LoRA adapters), cast in forward
            self.vectors = torch.nn.Parameter(init.detach().to(base.weight.device, torch.float32).clone())

        def forward(self, ids):
            out = super().forward(ids)
            match = ids.unsqueeze(-1) == self.token_ids  # (..., n)
            rows = match.to(self.vectors.dtype) @ self.vectors  # each id matches at most one row
            return torch.where(match.any(-1, keepdim=True), rows.to(out.dtype), out)

        def merged_weight(self) -> torch.Tensor:
            """The table with the trained rows written in (a new tensor)."""
            weight = self.weight.detach().clone()
            weight[self.token_ids] = self.vectors.detach().to(weight.dtype)
            return weight

        def _save_to_state_dict(self, destination, prefix, keep_vars):
            destination[prefix + "weight"] = self.merged_weight()

        def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                                  unexpected_keys, error_msgs):
            key = prefix + "weight"
            if key in state_dict and prefix + "vectors" not in state_dict:
                state_dict[prefix + "vectors"] = state_dict[key][self.token_ids.to(state_dict[key].device)]
            super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                          unexpected_keys, error_msgs)

        def extra_repr(self) -> str:
            return f"{super().extra_repr()}, trainable_tokens={self.token_ids.tolist()}"

    TrainableTokens.__qualname__ = "TrainableTokens"
    return TrainableTokens


def _trainable_tokens_class() -> type:
    cls = globals().get("TrainableTokens")
    if cls is None:
        globals()["TrainableTokens"] = cls = _define_trainable_tokens()
    return cls


def __getattr__(name: str):
    if name == "TrainableTokens":
        return _trainable_tokens_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
