"""Which layers get adapters: presets and selection shared by every diffusers-based family.

The presets name module-name suffixes in diffusers' UNet (``to_q`` ... ``proj_out``) and
transformers' CLIP text encoders (``q_proj`` ... ``fc2``); SD 1.x/2.x and SDXL use the same
names. A regex over full module names replaces the preset when given. LoCon adds the 3x3
convolutions that kohya's LoCon (``conv_dim``) adapts: those of the UNet's resnet blocks and
down/up-samplers (``conv_modules``).
"""

from __future__ import annotations

import re

#: module-name suffixes per target preset of a diffusers UNet
UNET_PRESETS = {
    "attn": ["to_q", "to_k", "to_v", "to_out.0"],
    "attn-mlp": ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out"],
}
#: module-name suffixes per target preset of a CLIP text encoder
TEXT_PRESETS = {
    "attn": ["q_proj", "k_proj", "v_proj", "out_proj"],
    "attn-mlp": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
}


def target_modules(module, preset: str, regex: str | None, presets: dict) -> list[str]:
    """Full names of the Linear (and 1x1 projection) layers of ``module`` to adapt."""
    import torch

    names = []
    pattern = re.compile(regex) if regex else None
    for name, sub in module.named_modules():
        if not isinstance(sub, (torch.nn.Linear, torch.nn.Conv2d)) or not name:
            continue
        if isinstance(sub, torch.nn.Conv2d) and sub.kernel_size != (1, 1):
            continue  # LoRA on 3x3 convs (LoCon) is a different preset
        if pattern is not None:
            hit = pattern.fullmatch(name) is not None
        elif preset == "all-linear":
            hit = isinstance(sub, torch.nn.Linear)
        else:
            hit = any(name == s or name.endswith("." + s) for s in presets[preset])
        if hit:
            names.append(name)
    return names


#: the UNet modules whose 3x3 convolutions kohya's LoCon adapts (resnet blocks, down/up-samplers)
CONV_BLOCKS = re.compile(r"^(down_blocks\.\d+\.|up_blocks\.\d+\.|mid_block\.)(resnets|downsamplers|upsamplers)\.\d+\.")


def conv_modules(module) -> list[str]:
    """Full names of the 3x3 (non-1x1) Conv2d layers of ``module`` in the blocks kohya's LoCon adapts."""
    import torch

    return [name for name, sub in module.named_modules()
            if isinstance(sub, torch.nn.Conv2d) and sub.kernel_size != (1, 1) and CONV_BLOCKS.match(name)]
