"""Plain weights of a model's parts for the full-model savers of every diffusers-based family.

Adapters (peft, every kind) are fused into the weights they adapt, trained placeholder
vectors are in the token-embedding rows (``tokens.TrainableTokens`` does that in
its state dict), and floating-point tensors get the requested dtype. The live
model is never changed: everything here reads and builds new tensors.
"""

from __future__ import annotations

from typing import Any as _Any

DTYPES = ("keep", "float16", "bfloat16", "float32")


def _pending(layer) -> list[str]:
    """The active adapters of a peft tuner layer that are not merged into its weight yet."""
    if getattr(layer, "disable_adapters", False) or not hasattr(layer, "get_delta_weight"):
        return []
    return [a for a in layer.active_adapters if a not in layer.merged_adapters]


def _additive(layer, adapters: list[str]) -> bool:
    """Whether ``adapters`` are plain LoRA, whose delta simply adds to the weight (every other kind goes
    through peft's own merge: DoRA rescales rows, OFT rotates)."""
    lora = getattr(layer, "lora_A", {})
    return all(a in lora and not layer.use_dora.get(a, False) for a in adapters)


def _adapter_deltas(layer) -> _Any:
    """The summed weight delta of a peft LoRA layer's active, unmerged adapters (None if none)."""
    delta = None
    for adapter in _pending(layer):
        d = layer.get_delta_weight(adapter).float()
        delta = d if delta is None else delta + d
    return delta


def merged_weight(layer) -> _Any:
    """The weight of a peft tuner layer with its active adapters merged, by peft's own ``merge`` on a copy
    of the layer (every adapter kind: DoRA's row norms, OFT's rotation, LoHa, LoKr); float32, or None."""
    import copy

    import torch

    adapters = _pending(layer)
    if not adapters:
        return None
    clone = copy.deepcopy(layer)
    base = clone.get_base_layer()
    base.weight = torch.nn.Parameter(dense_weight(base.weight).detach().float().clone(), requires_grad=False)
    clone.merge(adapter_names=adapters)
    return clone.get_base_layer().weight.detach()


def plain_state_dict(module, dtype=None) -> dict:
    """``module``'s weights under its library's own names, adapters fused, detached on the CPU.

    ``dtype``: a torch dtype for the floating-point tensors, or None to keep each one's dtype.
    """
    import torch
    from peft.tuners.tuners_utils import BaseTunerLayer

    tuners = {name: m for name, m in module.named_modules() if isinstance(m, BaseTunerLayer)}
    out = {}
    with torch.no_grad():
        for key, value in module.state_dict().items():
            if tuners and _adapter_key(key):
                continue
            out[key.replace(".base_layer.", ".")] = value.detach()
        for name, layer in tuners.items():
            key = f"{name}.weight"
            if _additive(layer, _pending(layer)):
                delta = _adapter_deltas(layer)
                if delta is not None:
                    out[key] = (out[key].float() + delta.to(out[key].device)).to(out[key].dtype if dtype is None else dtype)
                continue
            merged = merged_weight(layer)
            if merged is not None:
                out[key] = merged.to(out[key].device, out[key].dtype if dtype is None else dtype)
        return {k: _cast(v, dtype) for k, v in out.items()}


def dense_weight(weight):
    """A plain tensor of ``weight``: a quantized one (torchao's int8/fp8, nf4) dequantized."""
    if hasattr(weight, "dequantize") and type(weight).__name__ not in ("Tensor", "Parameter"):
        return weight.dequantize()
    if hasattr(weight, "get_original_weight"):
        return weight.get_original_weight()
    return weight


#: the state-dict key parts of peft's adapter weights, per kind
ADAPTER_KEYS = (".lora_", ".hada_", ".lokr_", ".oft_R")


def _adapter_key(key: str) -> bool:
    return any(part in key for part in ADAPTER_KEYS)


def _cast(t, dtype):
    t = t.to("cpu")
    if dtype is not None and t.is_floating_point():
        t = t.to(dtype)
    return t.contiguous()


def part_state_dicts(model, dtype_name: str = "keep") -> dict[str, dict]:
    """Plain weights of each of the model's parts (``model.part_names``); ``dtype_name`` from ``DTYPES``."""
    from nodes.diffusers_parts import torch_dtype

    dtype = None if dtype_name == "keep" else torch_dtype(dtype_name)
    return {name: plain_state_dict(part, dtype) for name, part in model.parts().items()}


def dtype_label(state_dicts: dict[str, dict]) -> str:
    """'float16', or e.g. 'float32+float16' when parts differ (for event and file metadata)."""
    seen = []
    for sd in state_dicts.values():
        for v in sd.values():
            if v.is_floating_point():
                name = str(v.dtype).removeprefix("torch.")
                if name not in seen:
                    seen.append(name)
    return "+".join(seen)
