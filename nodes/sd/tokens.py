"""New placeholder tokens for textual inversion: a tokenizer that knows them, an embedding that trains only them.

- ``with_placeholder(tokenizer, placeholder, tokens)`` copies a tokenizer, adds the
  tokens and makes its calls expand the placeholder to the multi-vector sequence
  (``<tok>`` -> ``<tok> <tok>_1 <tok>_2``, diffusers' naming, so a saved pipeline
  expands prompts the same way). It stays an instance of the tokenizer's own class.
- ``TrainableTokens`` replaces a text encoder's token embedding: the table stays
  frozen, the placeholder rows come from a small trainable ``vectors`` parameter.
  Its state dict is a plain embedding table with those rows filled in, so the text
  encoder saves and loads like any other.

Classes are built on first use (torch and transformers are imported only then).
"""

from __future__ import annotations

import copy
import re
from typing import Any as _Any

_CLASSES: dict = {}


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


class _ExpandsPlaceholders:
    """Mixin put in front of a tokenizer class: ``__call__`` and ``encode`` expand placeholders first."""

    _nt_plain_class: type
    _nt_placeholders: dict

    def expand_placeholders(self, text: _Any) -> _Any:
        if isinstance(text, str):
            return expand_text(text, self._nt_placeholders)
        if isinstance(text, (list, tuple)) and all(isinstance(t, str) for t in text):
            return [expand_text(t, self._nt_placeholders) for t in text]
        return text

    def __call__(self, text=None, *args, **kwargs):
        return super().__call__(self.expand_placeholders(text), *args, **kwargs)

    def encode(self, text, *args, **kwargs):
        return super().encode(self.expand_placeholders(text), *args, **kwargs)

    @property
    def placeholders(self) -> dict[str, list[str]]:
        return dict(self._nt_placeholders)

    def plain(self):
        """A shallow copy of class ``_nt_plain_class`` (same vocabulary, no expansion)."""
        obj = self._nt_plain_class.__new__(self._nt_plain_class)
        obj.__dict__.update({k: v for k, v in self.__dict__.items() if k != "_nt_placeholders"})
        return obj

    def __reduce_ex__(self, protocol):  # pickles (DataLoader workers, deepcopy) keep the expansion
        return _restore_tokenizer, (self.plain(), self._nt_placeholders)


def _expanding_class(plain: type) -> type:
    """``plain`` with the expansion mixin, under the same name and module (libraries that record a
    tokenizer's class, like diffusers' model_index.json, see the plain class)."""
    key = ("tokenizer", plain)
    if key not in _CLASSES:
        _CLASSES[key] = type(plain.__name__, (_ExpandsPlaceholders, plain),
                             {"__module__": plain.__module__, "__qualname__": plain.__qualname__,
                              "_nt_plain_class": plain})
    return _CLASSES[key]


def _restore_tokenizer(plain, placeholders: dict):
    plain.__class__ = _expanding_class(type(plain))
    plain._nt_placeholders = dict(placeholders)
    return plain


def with_placeholder(tokenizer, placeholder: str, tokens: list[str]):
    """A copy of ``tokenizer`` with ``tokens`` added and ``placeholder`` expanding to them."""
    placeholders = dict(getattr(tokenizer, "_nt_placeholders", {}))
    plain_class = getattr(tokenizer, "_nt_plain_class", type(tokenizer))
    new = copy.deepcopy(tokenizer)
    added = new.add_tokens(list(tokens))
    if added != len(tokens):
        raise ValueError(f"the tokenizer already knows some of {tokens}")
    new.__class__ = _expanding_class(plain_class)
    new._nt_placeholders = {**placeholders, placeholder: list(tokens)}
    return new


def plain_tokenizer(tokenizer):
    """``tokenizer`` without placeholder expansion (the vocabulary keeps the added tokens)."""
    return tokenizer.plain() if isinstance(tokenizer, _ExpandsPlaceholders) else tokenizer


# -- text encoder -------------------------------------------------------------------------

def trainable_tokens_class() -> type:
    """The ``TrainableTokens`` class (a ``torch.nn.Embedding``), built once."""
    if "TrainableTokens" in _CLASSES:
        return _CLASSES["TrainableTokens"]
    import torch

    class TrainableTokens(torch.nn.Embedding):
        """A frozen embedding table whose rows ``token_ids`` are the trainable ``vectors`` instead."""

        def __init__(self, base: torch.nn.Embedding, token_ids: list[int], init: torch.Tensor):
            super().__init__(base.num_embeddings, base.embedding_dim, padding_idx=base.padding_idx,
                             _weight=base.weight.detach(), _freeze=True, device=base.weight.device)
            self.register_buffer("token_ids", torch.tensor(token_ids, dtype=torch.long,
                                                           device=base.weight.device), persistent=False)
            # float32 even on a half-precision text encoder (like LoRA adapters), cast in forward
            self.vectors = torch.nn.Parameter(init.detach().to(base.weight.device, torch.float32).clone())

        def forward(self, ids):
            out = super().forward(ids)
            match = ids.unsqueeze(-1) == self.token_ids  # (..., n)
            rows = match.to(self.vectors.dtype) @ self.vectors  # each id matches at most one row
            return torch.where(match.any(-1, keepdim=True), rows.to(out.dtype), out)

        def merged_weight(self) -> torch.Tensor:
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

    TrainableTokens.__module__, TrainableTokens.__qualname__ = __name__, "TrainableTokens"
    _CLASSES["TrainableTokens"] = TrainableTokens
    return TrainableTokens


def __getattr__(name: str):  # ``nodes.sd.tokens.TrainableTokens`` resolves (pickle finds the class by name)
    if name == "TrainableTokens":
        return trainable_tokens_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
