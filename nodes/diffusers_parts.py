"""Model parts that every diffusers-based family shares, as data-graph values.

A family's loader hands its VAE, text encoders and tokenizers to the data graph
as these values; each carries a stable ``fingerprint`` (the data graph's caches
key on it), derived from where the weights came from and their dtype, or for a
tiny model from its config and seed. No torch import here.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any as _Any


def fingerprint_of(*parts: _Any) -> str:
    """A short stable hash of JSON-able facts."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:20]


def files_fingerprint(path: Path) -> list:
    """Path, size and mtime of the weight and config files under ``path`` (or of the file itself)."""
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".bin", ".json", ".txt"))
    return [[str(p.resolve()), p.stat().st_size, int(p.stat().st_mtime)] for p in files]


@dataclass(eq=False)
class VaePart:
    """The VAE as a data-graph value: module, latent scaling and a cache fingerprint."""

    module: _Any
    fingerprint: str
    scaling_factor: float = 0.18215
    shift_factor: float = 0.0


@dataclass(eq=False)
class TextEncoderPart:
    """A text encoder as a data-graph value."""

    module: _Any
    fingerprint: str


@dataclass(eq=False)
class TokenizerPart:
    """A tokenizer as a data-graph value."""

    tokenizer: _Any
    fingerprint: str

    @property
    def max_length(self) -> int:
        return int(self.tokenizer.model_max_length)


def vae_part(vae, fingerprint: str) -> VaePart:
    """``vae`` as a data-graph value, with the latent scaling and shift its config gives."""
    cfg = vae.config
    return VaePart(vae, fingerprint, float(getattr(cfg, "scaling_factor", 0.18215) or 0.18215),
                   float(getattr(cfg, "shift_factor", 0.0) or 0.0))


def quiet_libraries() -> None:
    """No progress bars or chatter from diffusers / transformers (events are our progress)."""
    import logging
    import warnings

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # torchao (the optional quantization backend) announces on import what a CPU build of torch lacks
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="TorchaoLoraLinear was instantiated without")
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    dlog.set_verbosity_error()
    dlog.disable_progress_bar()
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(diffusers|transformers|peft)")


def torch_dtype(name: str):
    """The torch dtype of a param value: float32, float16 or bfloat16."""
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]
