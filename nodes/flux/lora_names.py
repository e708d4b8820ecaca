"""Flux's names in LoRA files: diffusers' module names <-> kohya/BFL names, with fused q/k/v.

The kohya/BFL format (kohya's sd-scripts ``networks/lora_flux.py``, read by ComfyUI, Forge and
diffusers) names transformer layers after the original (BFL) modules, ``lora_unet_`` + the BFL
path with ``_`` for ``.``: ``lora_unet_double_blocks_0_img_attn_qkv``,
``lora_unet_single_blocks_3_linear1``; CLIP-L is ``lora_te1_text_model_...``. BFL fuses what
diffusers keeps apart: a double block's ``img_attn.qkv`` is ``attn.to_q/to_k/to_v``, its
``txt_attn.qkv`` is ``attn.add_q/k/v_proj``, and a single block's ``linear1`` is
``attn.to_q/to_k/to_v`` + ``proj_mlp``.

Fusing n adapters of rank r into one (kohya's ``split_qkv`` save, OneTrainer's ``lora_fuse_qkv``):
``down`` = the n ``lora_A`` stacked (n·r, in), ``up`` = block-diagonal (sum of outs, n·r) with each
``lora_B`` on the diagonal, ``alpha`` = n·alpha so that alpha / rank holds. A part with no adapter
gets zero blocks, so every fused layer has rank n·r. ``up @ down`` is then the fused weight's delta
row block by row block, and diffusers' reader recognises the block-diagonal ``up`` and slices it back
(one adapter of rank r per projection). Splitting reverses that exactly; a dense fused ``up`` (another
trainer's) splits by rows, each part keeping the whole ``down``. Any transformer size: the row blocks
come from the config (inner dim = heads x head dim, MLP = 4 x inner).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any as _Any

from nodes.lora_check import LoraPart

from . import bfl_layout

TRANSFORMER, TEXT_ENCODER = "transformer.", "text_encoder.text_model."
KOHYA_UNET, KOHYA_TE1 = "lora_unet_", "lora_te1_"
PARTS = (LoraPart("transformer", KOHYA_UNET, TRANSFORMER),
         LoraPart("text_encoder", KOHYA_TE1, "text_encoder.", clip_text=True))

#: BFL layer of a double / single block -> the diffusers layers below ``transformer_blocks.N.`` /
#: ``single_transformer_blocks.N.`` it holds, in row order (the table of ``nodes.flux.bfl_layout``)
DOUBLE = {**{b: (d,) for b, d in bfl_layout.DOUBLE}, **dict(bfl_layout.DOUBLE_FUSED)}
SINGLE = {**{b: (d,) for b, d in bfl_layout.SINGLE}, **dict(bfl_layout.SINGLE_FUSED)}
BLOCKS = {"transformer_blocks": ("double_blocks", DOUBLE), "single_transformer_blocks": ("single_blocks", SINGLE)}
_DIFFUSERS_BLOCK = re.compile(r"^(transformer_blocks|single_transformer_blocks)\.(\d+)\.(.+)$")
_KOHYA_BLOCK = re.compile(r"^lora_unet_(double_blocks|single_blocks)_(\d+)_(.+)$")


@dataclass
class Layer:
    """One LoRA layer of a file: ``down`` (rank, in), ``up`` (out, rank); the update is alpha / rank * up @ down."""

    down: _Any
    up: _Any
    alpha: float

    def delta(self):
        return (self.up.float() @ self.down.float()) * (self.alpha / self.down.shape[0])


def bfl_target(module: str) -> tuple[str, int, tuple[str, ...]] | None:
    """``(BFL layer, position in it, the diffusers layers it fuses)`` of a transformer module (diffusers
    name): ``transformer_blocks.0.attn.to_k`` -> ``("double_blocks.0.img_attn.qkv", 1, (...q, ...k, ...v))``.
    None for a layer outside the blocks."""
    m = _DIFFUSERS_BLOCK.match(module)
    if m is None:
        return None
    kind, table = BLOCKS[m.group(1)]
    for bfl, parts in table.items():
        if m.group(3) in parts:
            prefix = f"{m.group(1)}.{m.group(2)}."
            return f"{kind}.{m.group(2)}.{bfl}", parts.index(m.group(3)), tuple(prefix + p for p in parts)
    return None


def row_sizes(config, bfl_layer: str, n: int) -> list[int]:
    """Output rows of each diffusers layer fused into ``bfl_layer`` (n of them), for the transformer ``config``."""
    inner = config["num_attention_heads"] * config["attention_head_dim"]
    if bfl_layer.rsplit(".", 1)[-1] == "linear1":
        return [inner, inner, inner, 4 * inner]
    return [inner] * n


def _layers(peft_sd: dict, prefix: str) -> dict[str, dict[str, _Any]]:
    """module -> {"A": ..., "B": ...} for the keys of ``peft_sd`` under ``prefix``."""
    out: dict[str, dict[str, _Any]] = {}
    for key, value in peft_sd.items():
        if key.startswith(prefix) and key.endswith((".lora_A.weight", ".lora_B.weight")):
            module, ab = key[len(prefix):-len(".weight")].rsplit(".lora_", 1)
            out.setdefault(module, {})[ab] = value
    return out


def kohya_transformer(peft_sd: dict, alpha: float, config) -> tuple[dict, list[str]]:
    """The transformer's adapters of ``peft_sd`` (diffusers names under ``transformer.``) as kohya/BFL
    tensors, fused where BFL fuses; returns them and the adapted layers outside the blocks, which kohya's
    format has no place for (diffusers' reader drops them)."""
    import torch

    layers = _layers(peft_sd, TRANSFORMER)
    fused: dict[str, tuple[tuple[str, ...], dict[int, dict]]] = {}
    left_out = []
    for module, ab in layers.items():
        target = bfl_target(module)
        if target is None:
            left_out.append(module)
            continue
        bfl, index, parts = target
        fused.setdefault(bfl, (parts, {}))[1][index] = ab
    out = {}
    for bfl, (parts, present) in sorted(fused.items()):
        name = KOHYA_UNET + bfl.replace(".", "_")
        first = next(iter(present.values()))
        rank, n = first["A"].shape[0], len(parts)
        if n == 1:
            down, up = first["A"], first["B"]
        else:
            rows = row_sizes(config, bfl, n)
            like = first["A"]
            downs = [present[i]["A"] if i in present else torch.zeros_like(like) for i in range(n)]
            ups = [present[i]["B"] if i in present else like.new_zeros(rows[i], rank) for i in range(n)]
            down, up = torch.cat(downs, 0), torch.block_diag(*ups)
        out[f"{name}.lora_down.weight"] = down
        out[f"{name}.lora_up.weight"] = up
        out[f"{name}.alpha"] = torch.tensor(float(alpha) * n)
    return out, sorted(left_out)


def split_transformer(tensors: dict, config) -> dict[str, Layer]:
    """The kohya/BFL transformer layers of ``tensors`` as diffusers layers (names below ``transformer.``):
    fused ones split exactly (a block-diagonal ``up`` into its blocks, a dense one by rows)."""
    out = {}
    for name, layer in _kohya_layers(tensors, KOHYA_UNET).items():
        m = _KOHYA_BLOCK.match(name)
        entry = None if m is None else _bfl_entry(m.group(1), m.group(3))
        if entry is None:
            raise ValueError(f"{name}: not a layer of a Flux transformer block (kohya/BFL names are "
                             f"lora_unet_double_blocks_N_... and lora_unet_single_blocks_N_...)")
        bfl, parts = entry
        block = "transformer_blocks" if m.group(1) == "double_blocks" else "single_transformer_blocks"
        names = [f"{block}.{m.group(2)}.{p}" for p in parts]
        if len(parts) == 1:
            out[names[0]] = layer
            continue
        rows = row_sizes(config, bfl, len(parts))
        if sum(rows) != layer.up.shape[0]:
            raise ValueError(f"{name}: its up weight has {layer.up.shape[0]} rows, the transformer's {bfl} has "
                             f"{sum(rows)}: the LoRA is for another model size")
        out.update(zip(names, _split(layer, rows)))
    return out


def _bfl_entry(kind: str, leaf: str) -> tuple[str, tuple[str, ...]] | None:
    table = DOUBLE if kind == "double_blocks" else SINGLE
    for bfl, parts in table.items():
        if bfl.replace(".", "_") == leaf:
            return bfl, parts
    return None


def _split(layer: Layer, rows: list[int]) -> list[Layer]:
    import torch

    n, rank = len(rows), layer.down.shape[0]
    ups = torch.split(layer.up, rows, dim=0)
    if rank % n == 0:
        r = rank // n
        blocks = [u[:, i * r:(i + 1) * r] for i, u in enumerate(ups)]
        off_diagonal_zero = all(
            not torch.any(torch.cat([u[:, :i * r], u[:, (i + 1) * r:]], 1)) for i, u in enumerate(ups))
        if off_diagonal_zero:
            return [Layer(d.contiguous(), b.contiguous(), layer.alpha / n)
                    for d, b in zip(torch.chunk(layer.down, n, 0), blocks)]
    return [Layer(layer.down, u.contiguous(), layer.alpha) for u in ups]


def _kohya_layers(tensors: dict, prefix: str) -> dict[str, Layer]:
    grouped: dict[str, dict] = {}
    for key, value in tensors.items():
        if key.startswith(prefix):
            module, _, role = key.partition(".")
            grouped.setdefault(module, {})[role] = value
    out = {}
    for module, roles in grouped.items():
        if "lora_down.weight" not in roles or "lora_up.weight" not in roles:
            raise ValueError(f"{module}: needs both lora_down.weight and lora_up.weight")
        down = roles["lora_down.weight"]
        alpha = float(roles["alpha"]) if "alpha" in roles else float(down.shape[0])
        out[module] = Layer(down, roles["lora_up.weight"], alpha)
    return out


def kohya_text_encoder(peft_sd: dict, alpha: float) -> dict:
    """CLIP-L's adapters of ``peft_sd`` (under ``text_encoder.text_model.``) as ``lora_te1_text_model_...``."""
    from nodes.lora_files import to_kohya

    te = {k: v for k, v in peft_sd.items() if k.startswith(TEXT_ENCODER)}
    return to_kohya(te, alpha, {}) if te else {}


def text_encoder_layers(tensors: dict, text_encoder) -> dict[str, Layer]:
    """The ``lora_te1_`` layers of ``tensors`` by CLIP-L module name (as ``text_model.``-prefixed)."""
    from nodes.lora_check import adaptable_layers

    names = {}
    for name in adaptable_layers(text_encoder):
        full = name if name.startswith("text_model.") else f"text_model.{name}"
        names[KOHYA_TE1 + full.replace(".", "_")] = full
    out = {}
    for module, layer in _kohya_layers(tensors, KOHYA_TE1).items():
        if module not in names:
            raise ValueError(f"{module}: not a layer of the model's CLIP-L text encoder")
        out[names[module]] = layer
    return out


def read_kohya(tensors: dict, model) -> dict[str, Layer]:
    """Every layer of a kohya/BFL Flux LoRA, under diffusers-file names without the weight suffix
    (``transformer.<module>``, ``text_encoder.text_model.<module>``). Keys of other parts (T5's
    ``lora_te3_``/``lora_te2_``) are an error, not skipped."""
    other = sorted(k for k in tensors if not k.startswith((KOHYA_UNET, KOHYA_TE1)))
    if other:
        raise ValueError(f"{len(other)} key(s) are neither transformer (lora_unet_) nor CLIP-L (lora_te1_) "
                         f"layers, e.g. {other[0]}")
    out = {TRANSFORMER + k: v for k, v in split_transformer(tensors, model.transformer.config).items()}
    if any(k.startswith(KOHYA_TE1) for k in tensors):
        out.update({"text_encoder." + k: v for k, v in text_encoder_layers(tensors, model.text_encoder).items()})
    return out


def diffusers_state_dict(layers: dict[str, Layer]) -> dict:
    """``layers`` (from ``read_kohya``) as a diffusers-format LoRA state dict with alpha / rank folded into
    the weights (scale 1), what ``FluxPipeline.load_lora_weights`` takes for any transformer size."""
    out = {}
    for name, layer in layers.items():
        scale = layer.alpha / layer.down.shape[0]
        out[f"{name}.lora_A.weight"] = layer.down * scale
        out[f"{name}.lora_B.weight"] = layer.up
    return out


def kohya_tensors(peft_sd: dict, alpha: float, config) -> tuple[dict, list[str]]:
    """The whole kohya/BFL file from diffusers-named adapters (transformer and CLIP-L), and the layers
    it leaves out (outside the transformer's blocks)."""
    tensors, left_out = kohya_transformer(peft_sd, alpha, config)
    tensors.update(kohya_text_encoder(peft_sd, alpha))
    return tensors, left_out


def lora_layers(model) -> dict[str, _Any]:
    """Every name a diffusers-format or unfused kohya key may give a layer of the Flux ``model`` -> the layer."""
    from nodes.lora_check import lora_layers as layers_of

    return layers_of(model, PARTS)


def check_lora_fits(tensors: dict, model, name: str) -> None:
    """Raise unless every key of ``tensors`` (a kohya/BFL or diffusers-format Flux LoRA) is a LoRA weight of a
    layer of ``model`` in its shape; fused kohya layers are split first (``read_kohya``)."""
    from nodes.lora_check import check_fits, unsupported_kind

    why = unsupported_kind(tensors, name)
    if why:
        raise ValueError(why)
    kohya = {k: v for k, v in tensors.items() if k.startswith(("lora_unet_", "lora_te"))}
    rest = {k: v for k, v in tensors.items() if k not in kohya}
    if kohya:
        try:
            rest.update(diffusers_state_dict(read_kohya(kohya, model)))
        except ValueError as e:
            raise ValueError(f"{name} does not fit this Flux model: {e}") from None
    check_fits(rest, lora_layers(model), name, "Flux")


# -- the other adapter kinds (DoRA, LoHa, LoKr): fused from each layer's kohya/LyCORIS tensors --------

#: per kind: the (up-like, down-like) tensor pairs that fuse as LoRA's up / down do
_PAIRS = {"lora": (("lora_up.weight", "lora_down.weight"),),
          "loha": (("hada_w1_a", "hada_w1_b"), ("hada_w2_a", "hada_w2_b"))}


def _fuse(name: str, present: dict[int, dict], rows: list[int], norms: list) -> dict:
    """One BFL layer fused from its diffusers layers' LyCORIS tensors (index -> suffix -> tensor); a part
    without an adapter gets zero blocks (and, for DoRA, its base rows' norms as magnitude)."""
    import torch

    from nodes.adapter_formats import file_kind

    first = next(iter(present.values()))
    kind = file_kind(f".{k}" for k in first)
    if kind == "full":  # stacked rows; a part without an adapter does not change
        return {"diff": torch.cat([present[i]["diff"] if i in present else first["diff"].new_zeros(rows[i], *first[
            "diff"].shape[1:]) for i in range(len(rows))])}
    if kind not in ("lora", "dora", "loha"):
        raise ValueError(f"{name}: a {kind} adapter cannot be fused into one BFL layer exactly")
    alphas = {float(t["alpha"]) for t in present.values()}
    if len(alphas) > 1:
        raise ValueError(f"{name}: the fused layers have different alphas {sorted(alphas)}")
    n = len(rows)
    out = {}
    for up_key, down_key in _PAIRS["loha" if kind == "loha" else "lora"]:
        like_down, like_up = first[down_key], first[up_key]
        rank = like_down.shape[0]
        downs = [present[i][down_key] if i in present else like_down.new_zeros(rank, *like_down.shape[1:])
                 for i in range(n)]
        ups = [present[i][up_key] if i in present else like_up.new_zeros(rows[i], rank) for i in range(n)]
        out[down_key], out[up_key] = torch.cat(downs, 0), torch.block_diag(*ups)
    out["alpha"] = torch.tensor(alphas.pop() * n)
    if kind == "dora":
        scales = [present[i]["dora_scale"] if i in present else norms[i].reshape(rows[i], 1) for i in range(n)]
        out["dora_scale"] = torch.cat(scales, 0)
    return out


def kohya_adapter_transformer(modules: dict[str, dict], config, transformer) -> tuple[dict, list[str]]:
    """The transformer's adapted layers (module name below ``transformer.`` -> LyCORIS tensors) as kohya/BFL
    tensors, fused where BFL fuses; and the layers outside the blocks."""
    from nodes.lora_fusion import dense_weight

    layers = dict(transformer.named_modules())
    fused: dict[str, tuple[tuple[str, ...], dict[int, dict]]] = {}
    left_out = []
    for module, tensors in modules.items():
        target = bfl_target(module)
        if target is None:
            left_out.append(module)
            continue
        bfl, index, parts = target
        fused.setdefault(bfl, (parts, {}))[1][index] = tensors
    out = {}
    for bfl, (parts, present) in sorted(fused.items()):
        name = KOHYA_UNET + bfl.replace(".", "_")
        if len(parts) == 1:
            tensors = present[0]
        elif any(k.startswith("lokr_") for k in next(iter(present.values()))):
            tensors = {"diff": _stacked_diff(parts, layers)}
        else:
            rows = row_sizes(config, bfl, len(parts))
            norms = [None if i in present else dense_weight(_base(layers[p]).weight).detach().float().norm(dim=1)
                     .to("cpu") for i, p in enumerate(parts)]
            tensors = _fuse(name, present, rows, norms)
        out.update({f"{name}.{suffix}": t for suffix, t in tensors.items()})
    return out, sorted(left_out)


def _stacked_diff(parts: tuple[str, ...], layers: dict):
    """The fused layer's exact weight difference (LyCORIS' full form): each part's peft merge minus its base,
    stacked in BFL's row order (zeros for a part without an adapter). LoKr needs it: a stack of Kronecker
    products is no Kronecker product."""
    import torch

    from nodes.lora_fusion import dense_weight, merged_weight

    rows = []
    for part in parts:
        layer = layers[part]
        base = dense_weight(_base(layer).weight).detach().float()
        merged = merged_weight(layer) if hasattr(layer, "get_base_layer") else None
        rows.append((merged - base if merged is not None else torch.zeros_like(base)).to("cpu"))
    return torch.cat(rows)


def _base(layer):
    return layer.get_base_layer() if hasattr(layer, "get_base_layer") else layer
