"""Which layers of the Flux transformer get LoRA adapters: presets over diffusers' module names, block ranges.

A preset names layers inside the blocks by their path below the block (``attn.to_q``), never by a bare
suffix: peft's suffix match of ``proj_out`` would also wrap the transformer's final ``proj_out`` (the
output layer), which no Flux LoRA adapts. The double blocks (``transformer_blocks.N``, BFL
``double_blocks``) hold the image and text streams' attention (``to_*`` / ``add_*_proj``,
``to_add_out``), MLPs (``ff``, ``ff_context``) and modulations (``norm1*.linear``); the single blocks
(``single_transformer_blocks.N``) hold ``attn.to_q/k/v``, ``proj_mlp`` (BFL fuses these four into
``linear1``), ``proj_out`` (``linear2``) and ``norm.linear``.

OneTrainer's Flux ``attn-mlp`` preset (``attn``, ``ff.net``, ``proj_mlp``) leaves the text-stream MLP
and the single blocks' ``proj_out`` out; ours adapts both (the diffusers example and kohya do too).
"""

from __future__ import annotations

import re

ATTENTION = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
             "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out")
MLP = ("ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2", "proj_mlp", "proj_out")
#: layer paths below a block per preset; ``all-linear`` is every Linear inside the blocks
PRESETS = {"attn": ATTENTION, "attn-mlp": ATTENTION + MLP}
BLOCK = re.compile(r"^(transformer_blocks|single_transformer_blocks)\.(\d+)\.(.+)$")
BLOCK_KINDS = {"transformer_blocks": ("double_blocks", "num_layers"),
               "single_transformer_blocks": ("single_blocks", "num_single_layers")}
BLOCKS_DOC = "{} blocks that get adapters: all, none, or indices and ranges such as 0-9,15 (from 0)"


def parse_blocks(text: str | None, count: int, param: str) -> set[int]:
    """The block indices ``text`` names ("all", "none", "0-9,15") out of ``count``; a ValueError names
    ``param`` for anything else or an index the transformer does not have."""
    text = (text or "all").strip().lower()
    if text == "all":
        return set(range(count))
    if text == "none":
        return set()
    out: set[int] = set()
    for item in text.replace(" ", "").split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", item)
        if m is None:
            raise ValueError(f"param '{param}': {item!r} is not a block index or range (write all, none, or e.g. 0-9,15)")
        first, last = int(m.group(1)), int(m.group(2) or m.group(1))
        if first > last:
            raise ValueError(f"param '{param}': range {item!r} runs backwards")
        if last >= count:
            raise ValueError(f"param '{param}': block {last} does not exist (the transformer has {count} of them: "
                             f"0-{count - 1})")
        out.update(range(first, last + 1))
    return out


def select_targets(transformer, preset: str, regex: str | None, double_blocks: str | None = "all",
                   single_blocks: str | None = "all") -> list[str]:
    """Full module names of the Linear layers of ``transformer`` to adapt: the ``preset``'s layers (or
    those whose full name ``regex`` matches) in the chosen double and single blocks. Layers outside the
    blocks (embedders, the final layer) only through ``regex``."""
    import torch

    config = transformer.config
    allowed = {kind: parse_blocks(text, config[count_key], param)
               for kind, text in (("transformer_blocks", double_blocks), ("single_transformer_blocks", single_blocks))
               for param, count_key in [BLOCK_KINDS[kind]]}
    pattern = re.compile(regex) if regex else None
    names = []
    for name, module in transformer.named_modules():
        if not isinstance(module, torch.nn.Linear) or _peft_child(name):
            continue
        block = BLOCK.match(name)
        if pattern is not None:
            hit = pattern.fullmatch(name) is not None
        elif preset == "all-linear":
            hit = block is not None
        else:
            hit = block is not None and block.group(3) in PRESETS[preset]
        if hit and (block is None or int(block.group(2)) in allowed[block.group(1)]):
            names.append(name)
    return names


def _peft_child(name: str) -> bool:
    return any(seg == "base_layer" or seg.startswith("lora_") for seg in name.split("."))
