"""LoRA state dicts and files: diffusers/peft format and kohya format (what A1111 and ComfyUI load).

- diffusers/peft: ``unet.<module>.lora_A.weight`` / ``lora_B``, text encoder under
  ``text_encoder.text_model.``; the adapter config (rank, alpha, targets) in the
  ``lora_adapter_metadata`` header entry that ``load_lora_weights`` reads.
- kohya: ``lora_unet_<module_path>`` / ``lora_te_text_model_<...>`` with
  ``.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha`` (diffusers' own PEFT->kohya
  conversion, with SD 1.x/2.x's single-text-encoder prefix and the real alpha).

Which layers a kohya file holds: those kohya's sd-scripts can place. Its LoRA network
adapts the Linear and Conv2d layers inside the UNet's transformer blocks
(``*.attentions.N``), resnet blocks (``*.resnets.N``, e.g. ``time_emb_proj``,
``conv_shortcut``) and down/up-samplers, and inside the text encoder's attention and
MLP (``encoder.layers.N.self_attn`` / ``.mlp``); its loader silently drops any other
key, and older A1111 releases had no names for them. So layers outside those blocks (the
UNet's ``time_embedding`` linears, which ``targets: all-linear`` adapts) are left out
of the kohya file with a warning; the diffusers file keeps every layer.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from nodes.saving import base_metadata, save_tensors

from .metadata import architecture
from .model import SDModel

LORA_METADATA_KEY = "lora_adapter_metadata"  # diffusers' key for the adapter config
TE_PREFIX = "text_encoder.text_model."
#: the layers a kohya file can hold (diffusers names under ``unet.`` / ``text_encoder.``; see the module doc)
KOHYA_LAYERS = re.compile(r"^(unet\.(down_blocks\.\d+\.|up_blocks\.\d+\.|mid_block\.)"
                          r"(attentions|resnets|downsamplers|upsamplers)\.\d+\."
                          r"|text_encoder\.text_model\.encoder\.layers\.\d+\.(self_attn|mlp)\.)")


def peft_state_dict(model: SDModel) -> dict:
    """Adapter weights by part with diffusers' prefixes (``unet.``, ``text_encoder.text_model.``)."""
    from peft.utils import get_peft_model_state_dict

    out = {f"unet.{k}": v for k, v in get_peft_model_state_dict(model.unet).items()}
    if model.lora and model.lora.text_encoder:
        te = get_peft_model_state_dict(model.text_encoder)
        out.update({TE_PREFIX + k.removeprefix("text_model."): v for k, v in te.items()})
    return out


def adapter_configs(model: SDModel) -> dict:
    """diffusers' adapter metadata: each part's LoraConfig under its prefix."""
    out = {}
    parts = [("unet", model.unet)] + ([("text_encoder", model.text_encoder)] if model.lora.text_encoder else [])
    for prefix, module in parts:
        cfg = module.peft_config[model.lora.adapter_name].to_dict()
        for k, v in cfg.items():
            out[f"{prefix}.{k}"] = sorted(v) if isinstance(v, set) else v
    return out


def kohya_layers(peft_sd: dict) -> tuple[dict, list[str]]:
    """The adapter weights a kohya file can hold, and the layers (diffusers names) it cannot."""
    kept, left_out = {}, set()
    for key, value in peft_sd.items():
        if KOHYA_LAYERS.match(key):
            kept[key] = value
        else:
            left_out.add(key.rsplit(".lora_", 1)[0])
    return kept, sorted(left_out)


def to_kohya(peft_sd: dict, alpha: float) -> dict:
    """Kohya key names with SD 1.x/2.x's ``lora_te_`` prefix and ``alpha`` per module."""
    import torch
    from diffusers.utils import convert_state_dict_to_kohya

    converted = convert_state_dict_to_kohya(peft_sd)
    out = {}
    for key, value in converted.items():
        key = key.replace("lora_te1_", "lora_te_", 1)
        if key.endswith(".alpha"):
            value = torch.tensor(float(alpha))
        out[key] = value
    return out


def file_metadata(model: SDModel, graph_name: str, fmt: str) -> dict[str, str]:
    """Header metadata: base model, rank, alpha, steps, graph, plus the keys kohya's tools show."""
    lora = model.lora
    steps = int(getattr(model, "progress", {}).get("step", 0))
    v2 = model.version == "sd2"
    meta = {
        **base_metadata(model, graph_name, fmt),
        "nodetrainer_rank": str(lora.rank),
        "nodetrainer_alpha": str(lora.alpha),
        "nodetrainer_targets": lora.targets,
        "nodetrainer_text_encoder": str(lora.text_encoder).lower(),
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(lora.rank),
        "ss_network_alpha": str(lora.alpha),
        "ss_base_model_version": "sd_v2" if v2 else "sd_v1",
        "ss_v2": str(v2),
        "ss_steps": str(steps),
        "ss_sd_model_name": Path(model.source).name if model.source else "",
        "modelspec.architecture": f"{architecture(model)}/lora",
        "modelspec.title": graph_name or "nodetrainer LoRA",
    }
    return meta


def save_diffusers_lora(model: SDModel, path: Path, dtype, graph_name: str = "") -> Path:
    meta = file_metadata(model, graph_name, "diffusers")
    meta[LORA_METADATA_KEY] = json.dumps(adapter_configs(model), sort_keys=True, default=str)
    return save_tensors(path, peft_state_dict(model), meta, dtype)


def save_kohya_lora(model: SDModel, path: Path, dtype, graph_name: str = "") -> tuple[Path, list[str]]:
    """Write the kohya file; returns it and the adapted layers it leaves out (kohya cannot place them)."""
    from nodes.weights_check import listed

    kept, left_out = kohya_layers(peft_state_dict(model))
    if not kept:
        raise ValueError(f"none of the LoRA's layers ({listed(left_out)}) has a place in a kohya file: save "
                         f"with formats 'diffusers', or adapt layers in the UNet's blocks")
    meta = file_metadata(model, graph_name, "kohya")
    return save_tensors(path, to_kohya(kept, model.lora.alpha), meta, dtype), left_out
