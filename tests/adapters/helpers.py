"""Helpers of the adapter tests: random adapter weights, peft's own merge, independent reference merges.

The reference merges are written from the file formats' published definitions (LyCORIS, ComfyUI's
``weight_adapter``), or use the lycoris-lora package's functional code where it is installed; they never
call nodetrainer's code, so a wrong conversion there shows as a mismatch here.
"""

from __future__ import annotations

import copy


def save_lora(runner, saver, model, name: str, formats: str = "both") -> dict:
    """Run a family's LoRA saver node (``saver``) on ``model``: its files by format (kohya, diffusers)."""
    runner.run(saver, f"save_{name}", {"model": model}, name=name, formats=formats, dtype="float32")
    return {e["format"].split("_")[0]: e["path"] for e in runner.events("saved", f"save_{name}")}


def randomise(module, seed: int = 0) -> None:
    """Give every trainable (adapter) tensor of ``module`` seeded random values, so each adapter changes its
    layer (peft starts every kind as a no-op). DoRA magnitudes are scaled around their start."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            noise = torch.randn(p.shape, generator=g)
            if "lora_magnitude_vector" in name:
                p.mul_(1 + 0.2 * noise)
            else:
                p.copy_(0.3 * noise)


def peft_merged(module) -> dict:
    """Module name -> weight of each adapted layer of ``module`` with its adapters merged by peft itself
    (on a copy; float32)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    clone = copy.deepcopy(module).float()
    out = {}
    for name, layer in clone.named_modules():
        if isinstance(layer, BaseTunerLayer) and name:
            layer.merge()
            out[name] = layer.get_base_layer().weight.detach().clone()
    return out


def base_weights(module, names) -> dict:
    """Module name -> plain weight (float32) of ``module``'s layers ``names``."""
    layers = dict(module.named_modules())
    return {n: layers[n].weight.detach().float().clone() for n in names}


def file_layers(tensors: dict) -> dict:
    """kohya module name -> {suffix: tensor} of a kohya/LyCORIS file's tensors."""
    out: dict = {}
    for key, value in tensors.items():
        module, _, suffix = key.partition(".")
        out.setdefault(module, {})[suffix] = value.float()
    return out


def reference_merge(weight, t: dict):
    """``weight`` with one kohya/LyCORIS layer ``t`` applied at strength 1, from the formats' definitions:
    LoRA/LoCon up @ down * alpha / rank; DoRA the row-normalised LoRA weight times dora_scale; LoHa and
    LoKr by ComfyUI's and LyCORIS' rules for alpha (and, where lycoris-lora is installed, also through its
    functional code, which must agree); ``diff`` added."""
    import torch

    w = weight.float()
    if "diff" in t:  # LyCORIS' full form: the weight difference itself
        return w + t["diff"].reshape(w.shape)
    if "lora_down.weight" in t:
        down, up = t["lora_down.weight"], t["lora_up.weight"]
        rank = down.shape[0]
        delta = (up.flatten(1) @ down.flatten(1)).reshape(w.shape) * (float(t["alpha"]) / rank)
        merged = w + delta
        if "dora_scale" in t:
            norm = merged.reshape(merged.shape[0], -1).norm(dim=1).reshape(-1, *[1] * (w.dim() - 1))
            merged = merged * (t["dora_scale"].reshape(norm.shape) / norm)
        return merged
    if "hada_w1_a" in t:  # (w1_a @ w1_b) * (w2_a @ w2_b) * alpha / r, r = rows of w1_b
        scale = float(t["alpha"]) / t["hada_w1_b"].shape[0]
        delta = (t["hada_w1_a"] @ t["hada_w1_b"].flatten(1)) * (t["hada_w2_a"] @ t["hada_w2_b"].flatten(1)) * scale
        _same_as_lycoris("loha", delta, t, gamma=scale)
        return w + delta.reshape(w.shape)
    if any(k.startswith("lokr_") for k in t):  # kron(w1, w2) * alpha / r where a factor is low-rank, else * 1
        w1 = t["lokr_w1"] if "lokr_w1" in t else t["lokr_w1_a"] @ t["lokr_w1_b"]
        w2 = t["lokr_w2"] if "lokr_w2" in t else t["lokr_w2_a"] @ t["lokr_w2_b"].flatten(1)
        low = t.get("lokr_w1_b", t.get("lokr_w2_b"))
        scale = float(t["alpha"]) / low.shape[0] if low is not None else 1.0
        w2 = w2.reshape(w2.shape[0], -1)
        delta = torch.kron(w1, w2) * scale
        _same_as_lycoris("lokr", delta, t, gamma=float(t["alpha"]))
        return w + delta.reshape(w.shape)
    raise AssertionError(f"no adapter in {sorted(t)}")


def _same_as_lycoris(kind: str, delta, t: dict, gamma: float) -> None:
    """Where the lycoris-lora package is installed, its functional code gives the same delta."""
    try:
        from lycoris.functional import loha, lokr
    except ImportError:
        return
    if kind == "loha":
        theirs = loha.diff_weight(t["hada_w1_b"], t["hada_w1_a"], t["hada_w2_b"], t["hada_w2_a"], None, None,
                                  gamma=gamma, backend="torch")
    else:
        theirs = lokr.diff_weight(t.get("lokr_w1"), t.get("lokr_w1_a"), t.get("lokr_w1_b"), t.get("lokr_w2"),
                                  t.get("lokr_w2_a"), t.get("lokr_w2_b"), t.get("lokr_t2"), gamma=gamma, backend="torch")
    assert theirs.reshape(delta.shape).allclose(delta, rtol=1e-5, atol=1e-6), f"lycoris-lora disagrees on {kind}"
