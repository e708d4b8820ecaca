"""The original (BFL) layout of a FLUX.1 transformer file and diffusers' ``FluxTransformer2DModel`` names, both ways.

flux1-dev.safetensors, flux1-schnell.safetensors and the transformer files ComfyUI and Forge load are in
BFL's layout (optionally under ``model.diffusion_model.``). diffusers' own reader
(``convert_flux_transformer_checkpoint_to_diffusers``) hard-codes FLUX.1's width (3072) and MLP ratio, so
it cannot read a smaller model, and diffusers has no writer; this map reads every width from the tensors.

Per double-stream block ``i`` (``double_blocks.i.`` <-> ``transformer_blocks.i.``) and single-stream block
(``single_blocks.i.`` <-> ``single_transformer_blocks.i.``), weight and bias alike:

=====================================  ======================================================  ============
BFL                                    diffusers                                               how
=====================================  ======================================================  ============
img_in / txt_in                        x_embedder / context_embedder                           renamed
time_in.{in,out}_layer                 time_text_embed.timestep_embedder.linear_{1,2}          renamed
vector_in.{in,out}_layer               time_text_embed.text_embedder.linear_{1,2}              renamed
guidance_in.{in,out}_layer (dev)       time_text_embed.guidance_embedder.linear_{1,2}          renamed
img_mod.lin / txt_mod.lin              norm1.linear / norm1_context.linear                     renamed
img_attn.qkv                           attn.to_q, attn.to_k, attn.to_v                         3 equal row blocks
txt_attn.qkv                           attn.add_q_proj, attn.add_k_proj, attn.add_v_proj       3 equal row blocks
img_attn.proj / txt_attn.proj          attn.to_out.0 / attn.to_add_out                         renamed
img_attn.norm.{query,key}_norm.scale   attn.norm_q / attn.norm_k .weight                       renamed
txt_attn.norm.{query,key}_norm.scale   attn.norm_added_q / attn.norm_added_k .weight           renamed
img_mlp.{0,2} / txt_mlp.{0,2}          ff.net.{0.proj,2} / ff_context.net.{0.proj,2}           renamed
linear1 (single)                       attn.to_q, attn.to_k, attn.to_v, proj_mlp               rows: 3 x width + MLP
linear2 / modulation.lin (single)      proj_out / norm.linear                                  renamed
norm.{query,key}_norm.scale (single)   attn.norm_q / attn.norm_k .weight                       renamed
final_layer.linear                     proj_out                                                renamed
final_layer.adaLN_modulation.1         norm_out.linear                                         halves swapped
=====================================  ======================================================  ============

The last row: BFL's final modulation is (shift, scale), diffusers' (scale, shift). No torch import here:
the functions take and return dicts of tensors (also on the meta device).
"""

from __future__ import annotations

#: the prefix BFL-layout files may carry (ComfyUI full checkpoints, some fine-tunes)
PREFIX = "model.diffusion_model."
#: a key every BFL-layout FLUX.1 transformer has (diffusers' and kohya's detection key)
DETECT = "double_blocks.0.img_attn.norm.key_norm.scale"
#: present in dev (guidance-distilled) models only
GUIDANCE = "guidance_in.in_layer.weight"

#: (BFL module, diffusers module): renamed, weight and bias
TOP = (("img_in", "x_embedder"), ("txt_in", "context_embedder"),
       ("time_in.in_layer", "time_text_embed.timestep_embedder.linear_1"),
       ("time_in.out_layer", "time_text_embed.timestep_embedder.linear_2"),
       ("vector_in.in_layer", "time_text_embed.text_embedder.linear_1"),
       ("vector_in.out_layer", "time_text_embed.text_embedder.linear_2"),
       ("guidance_in.in_layer", "time_text_embed.guidance_embedder.linear_1"),
       ("guidance_in.out_layer", "time_text_embed.guidance_embedder.linear_2"),
       ("final_layer.linear", "proj_out"))
DOUBLE = (("img_mod.lin", "norm1.linear"), ("txt_mod.lin", "norm1_context.linear"),
          ("img_attn.proj", "attn.to_out.0"), ("txt_attn.proj", "attn.to_add_out"),
          ("img_mlp.0", "ff.net.0.proj"), ("img_mlp.2", "ff.net.2"),
          ("txt_mlp.0", "ff_context.net.0.proj"), ("txt_mlp.2", "ff_context.net.2"))
SINGLE = (("linear2", "proj_out"), ("modulation.lin", "norm.linear"))
#: (BFL module, diffusers modules whose weights are its row blocks, in order)
DOUBLE_FUSED = (("img_attn.qkv", ("attn.to_q", "attn.to_k", "attn.to_v")),
                ("txt_attn.qkv", ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj")))
SINGLE_FUSED = (("linear1", ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")),)
#: (BFL tensor, diffusers tensor): the RMS norms' scales
DOUBLE_NORMS = (("img_attn.norm.query_norm.scale", "attn.norm_q.weight"),
                ("img_attn.norm.key_norm.scale", "attn.norm_k.weight"),
                ("txt_attn.norm.query_norm.scale", "attn.norm_added_q.weight"),
                ("txt_attn.norm.key_norm.scale", "attn.norm_added_k.weight"))
SINGLE_NORMS = (("norm.query_norm.scale", "attn.norm_q.weight"), ("norm.key_norm.scale", "attn.norm_k.weight"))
#: (BFL module, diffusers module): the final modulation, (shift, scale) <-> (scale, shift)
SWAPPED = (("final_layer.adaLN_modulation.1", "norm_out.linear"),)


def strip_prefix(state_dict: dict) -> dict:
    """The transformer's tensors of a BFL-layout file without ``model.diffusion_model.`` (a file with that
    prefix may hold other parts too: only the prefixed tensors are the transformer)."""
    if any(k.startswith(PREFIX) for k in state_dict):
        return {k[len(PREFIX):]: v for k, v in state_dict.items() if k.startswith(PREFIX)}
    return dict(state_dict)


def is_bfl(keys) -> bool:
    """Whether tensor names ``keys`` are a BFL-layout FLUX.1 transformer (prefixed or not)."""
    return any(k in (DETECT, PREFIX + DETECT) for k in keys)


def block_counts(keys, double: str, single: str) -> tuple[int, int]:
    """Number of double- and single-stream blocks named in ``keys`` (prefixes ``double``, ``single``)."""
    def count(prefix: str) -> int:
        idx = {int(k[len(prefix):].split(".", 1)[0]) for k in keys if k.startswith(prefix)}
        return max(idx) + 1 if idx else 0

    return count(double), count(single)


def module_map(num_double: int, num_single: int, guidance: bool = True) -> list[tuple[str, tuple[str, ...], str]]:
    """Every BFL module (weight + bias) with its diffusers module(s) and how they relate: ``"renamed"``,
    ``"fused"`` (the BFL weight's rows are the diffusers weights, in order) or ``"swapped"`` (halves swapped).
    For LoRA names as well as full weights."""
    out = [(b, (d,), "renamed") for b, d in TOP if guidance or not b.startswith("guidance_in")]
    for i in range(num_double):
        out += [(f"double_blocks.{i}.{b}", (f"transformer_blocks.{i}.{d}",), "renamed") for b, d in DOUBLE]
        out += [(f"double_blocks.{i}.{b}", tuple(f"transformer_blocks.{i}.{d}" for d in ds), "fused")
                for b, ds in DOUBLE_FUSED]
    for i in range(num_single):
        out += [(f"single_blocks.{i}.{b}", (f"single_transformer_blocks.{i}.{d}",), "renamed") for b, d in SINGLE]
        out += [(f"single_blocks.{i}.{b}", tuple(f"single_transformer_blocks.{i}.{d}" for d in ds), "fused")
                for b, ds in SINGLE_FUSED]
    out += [(b, (d,), "swapped") for b, d in SWAPPED]
    return out


def norm_map(num_double: int, num_single: int) -> list[tuple[str, str]]:
    """(BFL tensor, diffusers tensor) of the attention RMS norms' scales."""
    out = []
    for i in range(num_double):
        out += [(f"double_blocks.{i}.{b}", f"transformer_blocks.{i}.{d}") for b, d in DOUBLE_NORMS]
    for i in range(num_single):
        out += [(f"single_blocks.{i}.{b}", f"single_transformer_blocks.{i}.{d}") for b, d in SINGLE_NORMS]
    return out


def _swap_halves(t):
    import torch

    first, second = t.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def _listed(keys) -> str:
    from nodes.weights_check import listed

    return listed(keys)


def _take(source: dict, key: str, what: str):
    if key not in source:
        raise ValueError(f"{what} has no tensor {key!r}")
    return source.pop(key)


def bfl_to_diffusers(state_dict: dict) -> dict:
    """A BFL-layout FLUX.1 transformer (prefixed or not) as ``FluxTransformer2DModel`` tensors, any width.

    Raises ValueError naming the missing tensor, or the tensors that are not part of the layout."""
    import torch

    src = strip_prefix(state_dict)
    if DETECT not in src:
        raise ValueError(f"the tensors are not a FLUX.1 transformer in the BFL layout (no {DETECT!r})")
    what = "the BFL-layout transformer"
    n_double, n_single = block_counts(src, "double_blocks.", "single_blocks.")
    width = int(_take(dict(src), "img_in.weight", what).shape[0])  # a q, k or v block's rows
    out = {}
    for bfl, diffusers, how in module_map(n_double, n_single, GUIDANCE in src):
        for suffix in (".weight", ".bias"):
            t = _take(src, bfl + suffix, what)
            if how == "renamed":
                out[diffusers[0] + suffix] = t
            elif how == "swapped":
                out[diffusers[0] + suffix] = _swap_halves(t)
            else:
                sizes = [width] * 3 + ([t.shape[0] - 3 * width] if len(diffusers) == 4 else [])
                if sizes[-1] <= 0 or sum(sizes) != t.shape[0]:
                    raise ValueError(f"{what}: {bfl}{suffix} has {t.shape[0]} rows, which do not split into "
                                     f"{len(diffusers)} parts of width {width}")
                for name, part in zip(diffusers, torch.split(t, sizes, dim=0)):
                    out[name + suffix] = part
    for bfl, diffusers in norm_map(n_double, n_single):
        out[diffusers] = _take(src, bfl, what)
    if src:
        raise ValueError(f"{what} has tensors that are not part of FLUX.1's layout: {_listed(src)}")
    return out


def diffusers_to_bfl(state_dict: dict, prefix: str = "") -> dict:
    """``FluxTransformer2DModel`` tensors in the BFL layout (what ComfyUI, Forge and BFL's code load), any
    width; ``prefix`` e.g. ``model.diffusion_model.``. Raises ValueError on tensors outside the map."""
    import torch

    src = dict(state_dict)
    what = "the diffusers Flux transformer"
    if "transformer_blocks.0.attn.norm_k.weight" not in src:
        raise ValueError("the tensors are not a diffusers FLUX.1 transformer (no 'transformer_blocks.0.attn.norm_k')")
    n_double, n_single = block_counts(src, "transformer_blocks.", "single_transformer_blocks.")
    guidance = "time_text_embed.guidance_embedder.linear_1.weight" in src
    out = {}
    for bfl, diffusers, how in module_map(n_double, n_single, guidance):
        for suffix in (".weight", ".bias"):
            parts = [_take(src, d + suffix, what) for d in diffusers]
            if how == "renamed":
                out[prefix + bfl + suffix] = parts[0]
            elif how == "swapped":
                out[prefix + bfl + suffix] = _swap_halves(parts[0])
            else:
                out[prefix + bfl + suffix] = torch.cat(parts, dim=0)
    for bfl, diffusers in norm_map(n_double, n_single):
        out[prefix + bfl] = _take(src, diffusers, what)
    if src:
        raise ValueError(f"{what} has tensors that have no place in the BFL layout: {_listed(src)}")
    return out
