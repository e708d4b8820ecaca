"""Adding LoRA adapters (peft) to a diffusers or transformers part: shared by the families' LoRA setups."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from nodes.lora_targets import target_modules


@dataclass
class LoraInfo:
    """What a LoRA setup did: savers write it into the file metadata. ``parts``: the adapted parts."""

    rank: int
    alpha: float
    targets: str
    unet: bool = True
    text_encoder: bool = False
    adapter_name: str = "default"
    parts: tuple[str, ...] = field(default=("unet",))


def check_regex(regex: str | None) -> str | None:
    """``regex`` if it compiles (None for empty), else a ValueError naming the param."""
    if not regex:
        return None
    try:
        re.compile(regex)
    except re.error as e:
        raise ValueError(f"param 'target_regex': {regex!r} is not a valid regular expression: {e}") from None
    return regex


def add_lora(ctx, name: str, module, *, rank: int, alpha: float, dropout: float, preset: str,
             regex: str | None, presets: dict, init: str, seed: int) -> int:
    """Add one peft LoRA adapter to ``module`` (named ``name`` in messages); returns its trainable count.

    The initial weights are drawn under ``ctx.torch_seeded(seed, name)`` (peft uses torch's generator);
    adapters train in float32 even on a half-precision base."""
    from peft import LoraConfig

    targets = target_modules(module, preset, regex, presets)
    if not targets:
        raise ValueError(f"no layer of the {name} matches " + (f"target_regex {regex!r}" if regex else f"preset {preset!r}"))
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout,
                        init_lora_weights=True if init == "default" else "gaussian", target_modules=targets)
    with ctx.torch_seeded(seed, name):
        module.add_adapter(config)
    for p in module.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
