"""The kohya/LyCORIS tensors of each peft adapter layer: what A1111, ComfyUI, Forge and kohya's tools load.

Per adapted layer (key prefix ``<kohya module name>.``), from the published definitions (LyCORIS,
kohya's sd-scripts, ComfyUI's ``weight_adapter``); ``s`` is peft's scaling of the layer:

- LoRA / LoCon: ``lora_down.weight`` (rank, in[, kh, kw]), ``lora_up.weight`` (out, rank[, 1, 1]),
  ``alpha``; delta = alpha / rank * up @ down. peft's ``lora_A`` / ``lora_B`` as they are, alpha = s * rank.
- DoRA: LoRA's keys + ``dora_scale`` (out, 1[, 1, 1]): the weight becomes
  dora_scale * (W + delta) / ||W + delta|| with the norm per output row: peft's magnitude vector.
- LoHa: ``hada_w1_a`` (out, r), ``hada_w1_b`` (r, in), ``hada_w2_a``, ``hada_w2_b``, ``alpha``;
  delta = (w1_a @ w1_b) * (w2_a @ w2_b) * alpha / r, r = ``hada_w1_b.shape[0]``: peft's LoHa as it is.
- LoKr: ``lokr_w1`` or ``lokr_w1_a`` @ ``lokr_w1_b``, ``lokr_w2`` or ``lokr_w2_a`` @ ``lokr_w2_b``, ``alpha``;
  delta = kron(w1, w2) * alpha / r when a factor is low-rank (r its rank), else kron(w1, w2) (the
  loaders then ignore alpha): peft always scales by alpha / r, so with both factors full the scale is
  folded into ``lokr_w1``.
- OFT: the format's ``oft_blocks`` rotate a layer's output rows (W' = R W, R from the Cayley transform of
  the skew part of ``oft_blocks``); peft's OFT rotates its input columns (W' = W R). The two are different
  adapters: no ``oft_blocks`` equal a peft OFT. The layer is written in LyCORIS' full-weight form
  instead, ``diff`` = W' - W (peft's own merge), which A1111, Forge and ComfyUI add at strength 1:
  exact, and as large as the adapted weights.
"""

from __future__ import annotations

from typing import Any as _Any

def _kind_of(layer, adapter: str) -> str:
    if hasattr(layer, "lora_A") and adapter in layer.lora_A:
        return "dora" if layer.use_dora.get(adapter, False) else "lora"
    if hasattr(layer, "hada_w1_a") and adapter in layer.hada_w1_a:
        return "loha"
    if hasattr(layer, "lokr_w1") and (adapter in layer.lokr_w1 or adapter in layer.lokr_w1_a):
        return "lokr"
    if hasattr(layer, "oft_R") and adapter in layer.oft_R:
        return "oft"
    raise ValueError(f"{type(layer).__name__}: an adapter kind with no kohya format")


def _scalar(value: float):
    import torch

    return torch.tensor(float(value))


def layer_tensors(layer, adapter: str = "default") -> dict[str, _Any]:
    """The kohya/LyCORIS tensors of one peft tuner layer (suffix -> tensor, detached, on the CPU)."""
    kind = _kind_of(layer, adapter)
    scale = float(layer.scaling[adapter]) if kind != "oft" else 1.0
    rank = int(layer.r[adapter]) if kind != "oft" else 0
    out: dict[str, _Any] = {}
    if kind in ("lora", "dora"):
        out["lora_down.weight"] = layer.lora_A[adapter].weight
        out["lora_up.weight"] = layer.lora_B[adapter].weight
        out["alpha"] = _scalar(scale * rank)
        if kind == "dora":
            base = layer.get_base_layer().weight
            magnitude = layer.lora_magnitude_vector[adapter].weight
            out["dora_scale"] = magnitude.reshape(base.shape[0], *[1] * (base.dim() - 1))
    elif kind == "loha":
        for name in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2"):
            if adapter in getattr(layer, name, {}):
                out[name] = getattr(layer, name)[adapter]
        out["alpha"] = _scalar(scale * out["hada_w1_b"].shape[0])
    elif kind == "lokr":
        for name in ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2"):
            if adapter in getattr(layer, name, {}):
                out[name] = getattr(layer, name)[adapter]
        low = out.get("lokr_w1_b", out.get("lokr_w2_b"))
        if low is not None:
            out["alpha"] = _scalar(scale * low.shape[0])
        else:  # both factors full: the loaders apply no alpha
            out["lokr_w1"] = out["lokr_w1"] * scale
            out["alpha"] = _scalar(rank)
    else:  # oft: the exact weight difference (see the module doc)
        from nodes.lora_fusion import dense_weight, merged_weight

        out["diff"] = merged_weight(layer) - dense_weight(layer.get_base_layer().weight).detach().float()
    return {k: v.detach().to("cpu").contiguous() for k, v in out.items()}


def tuner_layers(module) -> dict[str, _Any]:
    """Module name -> peft tuner layer of ``module``."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return {name: m for name, m in module.named_modules() if isinstance(m, BaseTunerLayer) and name}


def part_tensors(module, adapter: str = "default") -> dict[str, dict[str, _Any]]:
    """Each adapted layer of ``module`` (by its module name) -> its kohya/LyCORIS tensors."""
    return {name: layer_tensors(layer, adapter) for name, layer in tuner_layers(module).items()}


def file_kind(keys) -> str:
    """The adapter kind a file's keys hold: lora, dora, loha, lokr, oft or full (``diff``, as our OFT files);
    LoCon files read as lora."""
    keys = list(keys)
    if any(k.endswith(".diff") for k in keys):
        return "full"
    if any(".hada_" in k for k in keys):
        return "loha"
    if any(".lokr_" in k for k in keys):
        return "lokr"
    if any(".oft_" in k for k in keys):
        return "oft"
    if any(k.endswith((".dora_scale", ".lora_magnitude_vector")) for k in keys):
        return "dora"
    return "lora"
