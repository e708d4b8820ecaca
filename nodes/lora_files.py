"""LoRA files of the diffusers-based families: the diffusers/peft format and the kohya format.

- diffusers/peft: ``unet.<module>.lora_A.weight`` / ``lora_B``; a text encoder under
  ``text_encoder.text_model.`` (``text_encoder_2.text_model.`` for a second one), the
  names every loader expects whatever transformers version wrote them; the adapter
  config (rank, alpha, targets) in the ``lora_adapter_metadata`` header entry that
  diffusers' ``load_lora_weights`` reads.
- kohya: ``lora_unet_<module_path>`` / ``lora_te{1,2}_text_model_<...>`` with
  ``.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``: diffusers' own
  ``convert_state_dict_to_kohya`` over the peft names (a family may first rename the
  UNet's modules, as SDXL does to its original block names), with the real alpha
  (the converter writes alpha = rank).

Which layers a kohya file holds: those kohya's sd-scripts can place. Its LoRA network
adapts the Linear and Conv2d layers inside the UNet's transformer blocks
(``*.attentions.N``), resnet blocks (``*.resnets.N``) and down/up-samplers, and inside
the text encoders' attention and MLP (``encoder.layers.N.self_attn`` / ``.mlp``); its
loader silently drops any other key. Layers outside those blocks (the UNet's
``time_embedding`` linears, which ``targets: all-linear`` adapts) are left out of the
kohya file, and the saver warns; the diffusers file keeps every layer.
"""

from __future__ import annotations

import json
import re
from typing import Callable

LORA_METADATA_KEY = "lora_adapter_metadata"  # diffusers' key for the adapter config
#: the layers a kohya file can hold (diffusers names, with this module's part prefixes)
KOHYA_LAYERS = re.compile(r"^(unet\.(down_blocks\.\d+\.|up_blocks\.\d+\.|mid_block\.)"
                          r"(attentions|resnets|downsamplers|upsamplers)\.\d+\."
                          r"|text_encoder(_2)?\.text_model\.encoder\.layers\.\d+\.(self_attn|mlp)\.)")


def part_prefix(part: str) -> str:
    """The key prefix of a part's adapter weights in a diffusers LoRA file."""
    return f"{part}.text_model." if part.startswith("text_encoder") else f"{part}."


def peft_state_dict(model) -> dict:
    """The adapter weights of every part ``model.lora.parts`` names, with diffusers' prefixes."""
    from peft.utils import get_peft_model_state_dict

    out = {}
    for part in model.lora.parts:
        weights = get_peft_model_state_dict(getattr(model, part), adapter_name=model.lora.adapter_name)
        prefix = part_prefix(part)
        if part.startswith("text_encoder"):
            weights = {k.removeprefix("text_model."): v for k, v in weights.items()}
        out.update({prefix + k: v for k, v in weights.items()})
    return out


def adapter_configs(model) -> dict:
    """diffusers' adapter metadata: each adapted part's LoraConfig under its name."""
    out = {}
    for part in model.lora.parts:
        cfg = getattr(model, part).peft_config[model.lora.adapter_name].to_dict()
        for k, v in cfg.items():
            out[f"{part}.{k}"] = sorted(v) if isinstance(v, set) else v
    return out


def diffusers_lora(model) -> tuple[dict, dict[str, str]]:
    """The diffusers-format tensors and the header entry with their adapter configs."""
    meta = {LORA_METADATA_KEY: json.dumps(adapter_configs(model), sort_keys=True, default=str)}
    return peft_state_dict(model), meta


def kohya_layers(peft_sd: dict) -> tuple[dict, list[str]]:
    """The adapter weights a kohya file can hold, and the layers (diffusers names) it cannot."""
    kept, left_out = {}, set()
    for key, value in peft_sd.items():
        if KOHYA_LAYERS.match(key):
            kept[key] = value
        else:
            left_out.add(key.rsplit(".lora_", 1)[0])
    return kept, sorted(left_out)


def to_kohya(peft_sd: dict, alpha: float, te_names: dict[str, str],
             rename_unet: Callable[[str], str] | None = None) -> dict:
    """Kohya key names for ``peft_sd`` (diffusers names): ``te_names`` maps diffusers' converter prefixes
    (``lora_te1_``, ``lora_te2_``) to the family's; ``rename_unet`` renames UNet module names first."""
    import torch
    from diffusers.utils import convert_state_dict_to_kohya

    if rename_unet is not None:
        peft_sd = {_rename_unet_key(k, rename_unet): v for k, v in peft_sd.items()}
    out = {}
    for key, value in convert_state_dict_to_kohya(peft_sd).items():
        for theirs, ours in te_names.items():
            if key.startswith(theirs):
                key = ours + key[len(theirs):]
        out[key] = torch.tensor(float(alpha)) if key.endswith(".alpha") else value
    return out


def _rename_unet_key(key: str, rename: Callable[[str], str]) -> str:
    if not key.startswith("unet."):
        return key
    module, weight = key[len("unet."):].rsplit(".lora_", 1)
    return f"unet.{rename(module)}.lora_{weight}"


def lora_metadata(model, steps: int) -> dict[str, str]:
    """The LoRA facts in a file's header: ours, and the keys kohya's tools show."""
    lora = model.lora
    return {
        "nodetrainer_rank": str(lora.rank),
        "nodetrainer_alpha": str(lora.alpha),
        "nodetrainer_targets": lora.targets,
        "nodetrainer_text_encoder": str(lora.text_encoder).lower(),
        "nodetrainer_parts": " ".join(lora.parts),
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(lora.rank),
        "ss_network_alpha": str(lora.alpha),
        "ss_steps": str(steps),
    }
