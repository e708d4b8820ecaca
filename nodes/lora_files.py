"""Adapter files of the diffusers-based families: the diffusers/peft format and the kohya format.

- diffusers/peft: ``unet.<module>.lora_A.weight`` / ``lora_B``; a text encoder under
  ``text_encoder.text_model.`` (``text_encoder_2.text_model.`` for a second one), the
  names every loader expects whatever transformers version wrote them; the adapter
  config (rank, alpha, targets) in the ``lora_adapter_metadata`` header entry that
  diffusers' ``load_lora_weights`` reads (LoRA, DoRA, LoCon; the other kinds' files hold
  peft's own keys, ``hada_*`` / ``lokr_*`` / ``oft_R``, with their config, and load through peft).
- kohya: ``lora_unet_<module_path>`` / ``lora_te{1,2}_text_model_<...>`` (the names of diffusers'
  ``convert_state_dict_to_kohya``; a family may first rename the UNet's modules, as SDXL does to
  its original block names), each layer with its kind's LyCORIS tensors
  (``nodes.adapter_formats``: ``lora_down``/``lora_up``/``alpha``, ``dora_scale``, ``hada_*``,
  ``lokr_*``, OFT as the exact weight ``diff``) and its real alpha.

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


def adapter_modules(model) -> dict[str, dict]:
    """Each adapted layer of the model's adapted parts, under its diffusers-file module name
    (``unet.<module>``, ``text_encoder.text_model.<module>``) -> its kohya/LyCORIS tensors."""
    from nodes.adapter_formats import part_tensors

    out = {}
    for part in model.lora.parts:
        for name, tensors in part_tensors(getattr(model, part), model.lora.adapter_name).items():
            if part.startswith("text_encoder"):
                name = name.removeprefix("text_model.")
            out[part_prefix(part) + name] = tensors
    return out


def kohya_modules(modules: dict) -> tuple[dict, list[str]]:
    """The layers of ``modules`` (from ``adapter_modules``) a kohya file can hold, and those it cannot."""
    kept = {k: v for k, v in modules.items() if KOHYA_LAYERS.match(k + ".")}
    return kept, sorted(k for k in modules if k not in kept)


KOHYA_PARTS = {"unet": "lora_unet_", "text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}


def kohya_file(modules: dict, te_names: dict[str, str],
               rename_unet: Callable[[str], str] | None = None) -> dict:
    """The kohya-file tensors of ``modules`` (diffusers-file module name -> suffix -> tensor): ``te_names``
    maps ``lora_te1_`` / ``lora_te2_`` to the family's prefixes; ``rename_unet`` renames UNet modules first."""
    out = {}
    for name, tensors in modules.items():
        part, _, module = name.partition(".")
        if part == "unet" and rename_unet is not None:
            module = rename_unet(module)
        prefix = KOHYA_PARTS[part]
        prefix = te_names.get(prefix, prefix)
        key = prefix + module.replace(".", "_")
        out.update({f"{key}.{suffix}": t for suffix, t in tensors.items()})
    return out


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


def network_metadata(lora) -> dict[str, str]:
    """kohya's ``ss_network_module`` / ``ss_network_args`` for the adapter kind (LyCORIS' names)."""
    if lora.kind == "lora":
        return {"ss_network_module": "networks.lora"}
    if lora.kind == "locon":
        return {"ss_network_module": "networks.lora", "ss_network_args": json.dumps(
            {"conv_dim": str(lora.conv_rank), "conv_alpha": str(lora.conv_alpha)})}
    args = {"algo": "lora" if lora.kind == "dora" else ("full" if lora.kind == "oft" else lora.kind)}
    if lora.kind == "dora":
        args["dora_wd"] = "True"
    if lora.kind == "lokr":
        args["factor"] = str(lora.options.get("lokr_factor", -1))
        args["decompose_both"] = str(lora.options.get("lokr_decompose_both", False))
    return {"ss_network_module": "lycoris.kohya", "ss_network_args": json.dumps(args, sort_keys=True)}


def lora_metadata(model, steps: int) -> dict[str, str]:
    """The adapter facts in a file's header: ours, and the keys kohya's tools show."""
    lora = model.lora
    return {
        "nodetrainer_adapter": lora.kind,
        "nodetrainer_rank": str(lora.rank),
        "nodetrainer_alpha": str(lora.alpha),
        "nodetrainer_targets": lora.targets,
        "nodetrainer_text_encoder": str(lora.text_encoder).lower(),
        "nodetrainer_parts": " ".join(lora.parts),
        **network_metadata(lora),
        "ss_network_dim": str(lora.rank),
        "ss_network_alpha": str(lora.alpha),
        "ss_steps": str(steps),
    }
