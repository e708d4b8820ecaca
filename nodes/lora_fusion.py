"""Plain weights of a model's parts for the full-model savers of every diffusers-based family.

LoRA adapters (peft) are fused into the weights they adapt, trained placeholder
vectors are in the token-embedding rows (``tokens.TrainableTokens`` does that in
its state dict), and floating-point tensors get the requested dtype. The live
model is never changed: everything here reads and builds new tensors.
"""

from __future__ import annotations

from typing import Any as _Any

DTYPES = ("keep", "float16", "bfloat16", "float32")


def _adapter_deltas(layer) -> _Any:
    """The summed weight delta of a peft tuner layer's active, unmerged adapters (None if none)."""
    if getattr(layer, "disable_adapters", False) or not hasattr(layer, "get_delta_weight"):
        return None
    delta = None
    for adapter in layer.active_adapters:
        if adapter in layer.merged_adapters or adapter not in getattr(layer, "lora_A", {}):
            continue
        d = layer.get_delta_weight(adapter).float()
        delta = d if delta is None else delta + d
    return delta


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
            if tuners and ".lora_" in key:
                continue
            out[key.replace(".base_layer.", ".")] = value.detach()
        for name, layer in tuners.items():
            delta = _adapter_deltas(layer)
            if delta is not None:
                key = f"{name}.weight"
                out[key] = (out[key].float() + delta.to(out[key].device)).to(out[key].dtype if dtype is None else dtype)
        return {k: _cast(v, dtype) for k, v in out.items()}


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
