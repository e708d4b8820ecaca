"""SD 1.x/2.x's names in LoRA files, over the shared checks of ``nodes.lora_check``.

Kohya files name the layers ``lora_unet_*`` / ``lora_te_*`` after diffusers' module names
(SD 1.x/2.x kohya files keep diffusers' block names); diffusers/peft files ``unet.*`` /
``text_encoder.*``.
"""

from __future__ import annotations

from typing import Any as _Any

from nodes.lora_check import LoraPart, check_fits, lora_layers as _lora_layers

PARTS = (LoraPart("unet", "lora_unet_", "unet."), LoraPart("text_encoder", "lora_te_", "text_encoder.", clip_text=True))
KOHYA_PREFIX = {p.attr: p.kohya for p in PARTS}
VERSION_NAMES = {"sd1": "SD 1.x", "sd2": "SD 2.x"}


def lora_layers(model) -> dict[str, _Any]:
    """Every name a LoRA file may give a layer of ``model`` (kohya's and diffusers') -> the layer."""
    return _lora_layers(model, PARTS)


def check_lora_fits(tensors: dict, model, name: str) -> None:
    """Raise unless every key of ``tensors`` is a LoRA weight of a layer of ``model``, in its shape."""
    check_fits(tensors, lora_layers(model), name, VERSION_NAMES.get(model.version, model.version))
