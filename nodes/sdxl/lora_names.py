"""SDXL's names in LoRA files: the table of parts, the SGM <-> diffusers UNet module names, the fit check.

Kohya's sd-scripts name SDXL UNet layers after the original (SGM/LDM) modules
(``lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q``), diffusers'
``convert_state_dict_to_kohya`` after diffusers' (``lora_unet_down_blocks_1_attentions_0_...``);
A1111, ComfyUI and diffusers read both. The text encoders are ``lora_te1_`` / ``lora_te2_`` with
CLIP's ``text_model.`` names. A module's SGM name is where its ``.weight`` goes in the single-file
layout (``nodes.ldm_layout``).
"""

from __future__ import annotations

from typing import Any as _Any

from nodes.lora_check import LoraPart, check_fits, lora_layers as _lora_layers

PARTS = (LoraPart("unet", "lora_unet_", "unet."),
         LoraPart("text_encoder", "lora_te1_", "text_encoder.", clip_text=True),
         LoraPart("text_encoder_2", "lora_te2_", "text_encoder_2.", clip_text=True))
KOHYA_PREFIX = {p.attr: p.kohya for p in PARTS}
#: UNet block names of each layout, as diffusers tells them apart in a file's keys
SGM_BLOCKS, DIFFUSERS_BLOCKS = ("input_blocks", "middle_block", "output_blocks"), ("down_blocks", "mid_block", "up_blocks")


def sgm_module_name(diffusers_name: str, unet_config) -> str:
    """The original SDXL (SGM) name of a diffusers UNet module: ``down_blocks.1.attentions.0.proj_in``
    -> ``input_blocks.4.1.proj_in`` (for SDXL's 2 layers per block). ``ValueError`` if it has none."""
    from nodes.ldm_layout import UNET_PREFIX, unet_to_ldm

    (key,) = unet_to_ldm({f"{diffusers_name}.weight": None}, unet_config)
    return key[len(UNET_PREFIX):-len(".weight")]


def diffusers_module_name(sgm_name: str, unet_config) -> str:
    """The inverse of ``sgm_module_name``: ``input_blocks.4.1.proj_in`` -> ``down_blocks.1.attentions.0.proj_in``."""
    from nodes.ldm_layout import RESNET, _unet_map

    inverse = {ldm: ours for ours, ldm in _unet_map(unet_config).items()}
    prefix = next((p for p in sorted(inverse, key=len, reverse=True)
                   if sgm_name == p or sgm_name.startswith(p + ".")), None)
    if prefix is None:
        raise ValueError(f"{sgm_name!r} is not a module name of the SDXL UNet's original layout")
    ours, tail = inverse[prefix], sgm_name[len(prefix) + 1:]
    if ".resnets." in ours + "." and tail:
        for diffusers_leaf, ldm_leaf in sorted(RESNET.items(), key=lambda kv: len(kv[1]), reverse=True):
            if tail == ldm_leaf or tail.startswith(ldm_leaf + "."):
                tail = diffusers_leaf + tail[len(ldm_leaf):]
                break
    return f"{ours}.{tail}" if tail else ours


def kohya_module_name(part: str, module_name: str, unet_config=None) -> str:
    """The name kohya's sd-scripts give a layer (without the weight suffix): ``lora_unet_`` + its SGM name,
    ``lora_te1_`` / ``lora_te2_`` + its ``text_model.`` name; dots become ``_``."""
    table = {p.attr: p for p in PARTS}
    if part not in table:
        raise ValueError(f"SDXL has no LoRA part {part!r} (parts: {', '.join(table)})")
    if part == "unet":
        name = sgm_module_name(module_name, unet_config)
    else:
        name = module_name if module_name.startswith("text_model.") else f"text_model.{module_name}"
    return table[part].kohya + name.replace(".", "_")


def lora_layers(model) -> dict[str, _Any]:
    """Every name a LoRA file may give a layer of the SDXL ``model`` -> the layer: kohya's (UNet in SGM
    and in diffusers block names) and diffusers'."""
    config = model.unet.config

    def sgm(part, name):
        if part.attr != "unet":
            return []
        try:
            return [sgm_module_name(name, config)]
        except ValueError:
            return []

    return _lora_layers(model, PARTS, sgm)


def check_lora_fits(tensors: dict, model, name: str) -> None:
    """Raise unless every key of ``tensors`` is a LoRA weight of a layer of the SDXL ``model``, in its shape,
    and its UNet keys use one block naming (diffusers drops the SGM-named keys of a mixed file silently)."""
    sgm = sorted(k for k in tensors if any(b in k for b in SGM_BLOCKS))
    ours = sorted(k for k in tensors if any(b in k for b in DIFFUSERS_BLOCKS))
    if sgm and ours:
        raise ValueError(f"{name} mixes the original SDXL block names ({sgm[0]}) and diffusers' ({ours[0]}) in its "
                         f"UNet keys: diffusers would leave the {len(sgm)} original-named weights out without a word; "
                         f"write the file with one naming")
    check_fits(tensors, lora_layers(model), name, "SDXL")
