"""Adding LoRA adapters (peft) to a diffusers or transformers part: shared by the families' LoRA setups."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from nodes.lora_targets import target_modules
from runtime import Choice, Param, Seed


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


class LoraParams:
    """The adapter params of a family's LoRA setup node (the node adds which text encoders get adapters)."""

    rank = Param(int, 16, min=1, max=1024, doc="LoRA rank (dimension)")
    alpha = Param(float, 16.0, min=0, doc="LoRA alpha; the update is scaled by alpha / rank")
    dropout = Param(float, 0.0, min=0, max=1, doc="dropout on the adapter input during training")
    targets = Param(Choice("attn", "attn-mlp", "all-linear"), "attn",
                    doc="which layers get adapters: attention projections, + feed-forward, or every linear layer")
    target_regex = Param(str, optional=True,
                         doc="instead of the preset: a regex matched against full module names (e.g. .*attn2.*)")
    init = Param(Choice("default", "gaussian"), "default",
                 doc="adapter initialisation: default (Kaiming A, zero B) or gaussian; both start as a no-op")
    seed = Param(Seed, 0, doc="seed of the adapter initialisation (mixed with the node id)")


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
