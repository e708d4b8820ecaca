"""What saver and sampler nodes hand to training hooks.

A saver node (``sd.save_lora``, ``sd.save_diffusers``, ...) outputs a ``ModelSaver``
on its ``saver`` port and, when a model is connected to its optional ``model``
input, also saves that model when the graph reaches it. The periodic-save hook
(``train.save_hook``) calls ``saver.save(ctx, model, step=...)`` during training.
Sampler nodes do the same with ``ModelSampler`` and ``train.sample_hook``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any as _Any


def step_path(path: Path, step: int | None) -> Path:
    """``lora.safetensors`` -> ``lora-step000120.safetensors`` (files or folders); unchanged for ``None``."""
    if step is None:
        return path
    suffix = "".join(path.suffixes) if path.suffix and not path.name.startswith(".") else ""
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    return path.with_name(f"{stem}-step{step:06d}{suffix}")


class ModelSaver:
    """Writes a model in one format. Subclasses implement ``save``."""

    #: short format name used in ``saved`` events (e.g. ``kohya_lora``)
    format: str = ""

    def save(self, ctx: _Any, model: _Any, step: int | None = None) -> list[Path]:
        """Write the model (atomically), emit ``ctx.saved`` per file and return the paths.
        ``step`` marks a periodic save: file names get ``-step000123``."""
        raise NotImplementedError


class ModelSampler:
    """Makes preview images of a model. Subclasses implement ``sample``."""

    def sample(self, ctx: _Any, model: _Any, step: int | None = None, tag: str = "") -> list[Path]:
        """Write the images, emit ``ctx.sample`` per image and return the paths. ``tag`` (e.g. ``ema``)
        distinguishes variants made at the same step."""
        raise NotImplementedError
