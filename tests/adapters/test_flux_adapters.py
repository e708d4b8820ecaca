"""The linear adapter kinds on Flux: kohya/BFL files (q/k/v and linear1 fused) merged by the format's
definitions onto BFL's fused base weights, built here from the diffusers layers in BFL's row order; the
peft file reloaded through peft; the kinds and settings Flux refuses."""

from __future__ import annotations

import pytest
import torch

from tests.adapters.helpers import file_layers, peft_merged, randomise, reference_merge, save_lora
from tests.adapters.test_sd_adapters import TOL

#: BFL layer (below a block) -> the diffusers layers (below the block) it holds, in row order
DOUBLE = {"img_attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
          "txt_attn_qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
          "img_attn_proj": ("attn.to_out.0",), "txt_attn_proj": ("attn.to_add_out",),
          "img_mlp_0": ("ff.net.0.proj",), "img_mlp_2": ("ff.net.2",),
          "txt_mlp_0": ("ff_context.net.0.proj",), "txt_mlp_2": ("ff_context.net.2",)}
SINGLE = {"linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"), "linear2": ("proj_out",)}


def _setup(runner, kind, targets="attn-mlp", **extra):
    from nodes.flux.build import build_tiny
    from nodes.flux.lora import LoraSetup

    adapted = runner.run(LoraSetup, f"lora_{kind}_{targets}", {"model": build_tiny(seed=0)}, rank=3, alpha=1.5,
                         adapter=kind, targets=targets, train_clip_l=True, **extra)["adapted"]
    randomise(adapted.transformer, 3)
    randomise(adapted.text_encoder, 4)
    return adapted


def _save(runner, model, name, formats="both"):
    from nodes.flux.savers import SaveLora

    return save_lora(runner, SaveLora, model, name, formats)


def _bfl_groups(config):
    for i in range(config["num_layers"]):
        for bfl, parts in DOUBLE.items():
            yield f"lora_unet_double_blocks_{i}_{bfl}", [f"transformer_blocks.{i}.{p}" for p in parts]
    for i in range(config["num_single_layers"]):
        for bfl, parts in SINGLE.items():
            yield f"lora_unet_single_blocks_{i}_{bfl}", [f"single_transformer_blocks.{i}.{p}" for p in parts]


@pytest.mark.parametrize("kind,targets", [("lora", "attn-mlp"), ("dora", "attn"), ("loha", "attn-mlp"),
                                          ("loha", "attn"), ("lokr", "attn"), ("oft", "attn")])
def test_kohya_bfl_file_merges_onto_the_fused_base_weights_as_ours(runner, kind, targets):
    """Each fused BFL layer of the file, merged by the format's definition onto the concatenated base rows,
    equals peft's merge of our separate layers concatenated in the same order (for ``attn`` the single
    blocks' proj_mlp rows have no adapter and must come out unchanged, also under DoRA). Fused LoKr
    layers and OFT are LyCORIS' full-weight diff; LoKr's unfused layers stay lokr_* tensors."""
    from safetensors.torch import load_file

    from nodes.flux.build import build_tiny

    model = _setup(runner, kind, targets, **({"oft_block_size": 4} if kind == "oft" else {}))
    layers = file_layers(load_file(_save(runner, model, f"{kind}_{targets}")["kohya"]))
    ours = peft_merged(model.transformer)
    base = dict(build_tiny(seed=0).transformer.named_modules())
    checked = 0
    for bfl, parts in _bfl_groups(model.transformer.config):
        if not any(p in ours for p in parts):
            assert bfl not in layers
            continue
        fused_base = torch.cat([base[p].weight.detach().float() for p in parts])
        want = torch.cat([ours[p] if p in ours else base[p].weight.detach().float() for p in parts])
        merged = reference_merge(fused_base, layers.pop(bfl))
        assert (merged - fused_base).abs().max() > 1e-3
        assert merged.allclose(want, **TOL), bfl
        checked += 1
    text = peft_merged(model.text_encoder)
    plain_te = dict(build_tiny(seed=0).text_encoder.named_modules())
    for name, weight in text.items():
        full = name if name.startswith("text_model.") else f"text_model.{name}"
        merged = reference_merge(plain_te[name].weight, layers.pop("lora_te1_" + full.replace(".", "_")))
        assert merged.allclose(weight, **TOL), name
    assert checked >= 4 and not layers


def test_lokr_on_unfused_layers_keeps_its_kronecker_factors(runner):
    from safetensors.torch import load_file

    from nodes.flux.build import build_tiny

    model = _setup(runner, "lokr", target_regex=r".*(attn\.to_out\.0|ff\.net\.2)")
    layers = file_layers(load_file(_save(runner, model, "lokr_plain")["kohya"]))
    base = dict(build_tiny(seed=0).transformer.named_modules())
    ours = peft_merged(model.transformer)
    assert len(ours) == 2 * model.transformer.config["num_layers"]
    for i in range(model.transformer.config["num_layers"]):
        for bfl, leaf in (("img_attn_proj", "attn.to_out.0"), ("img_mlp_2", "ff.net.2")):
            name = f"transformer_blocks.{i}.{leaf}"
            tensors = layers.pop(f"lora_unet_double_blocks_{i}_{bfl}")
            assert "lokr_w1" in tensors or "lokr_w1_a" in tensors
            merged = reference_merge(base[name].weight, tensors)
            assert merged.allclose(ours[name], **TOL), name
    assert all(k.startswith("lora_te1_") for k in layers)


@pytest.mark.parametrize("kind", ["lora", "dora", "loha", "lokr", "oft"])
def test_flux_diffusers_file_reloads_through_peft(runner, kind):
    import json

    import peft
    from peft.utils import set_peft_model_state_dict
    from safetensors import safe_open
    from safetensors.torch import load_file

    from nodes.flux.build import build_tiny

    extra = {"oft_block_size": 4, "targets": "attn"} if kind == "oft" else {}  # CLIP's MLP is 37 wide
    model = _setup(runner, kind, **extra)
    path = _save(runner, model, kind, formats="diffusers")["diffusers"]
    with safe_open(path, "pt") as f:
        configs = json.loads(f.metadata()["lora_adapter_metadata"])
    cfg = {k.split(".", 1)[1]: v for k, v in configs.items() if k.startswith("transformer.")}
    config = peft.PEFT_TYPE_TO_CONFIG_MAPPING[cfg["peft_type"]](**{k: v for k, v in cfg.items() if k != "peft_type"})
    fresh = build_tiny(seed=0).transformer
    peft.inject_adapter_in_model(config, fresh)
    state = {k[len("transformer."):]: v for k, v in load_file(path).items() if k.startswith("transformer.")}
    assert not set_peft_model_state_dict(fresh, state).unexpected_keys
    ours, theirs = peft_merged(model.transformer), peft_merged(fresh)
    assert ours.keys() == theirs.keys() and ours
    for name, weight in ours.items():
        assert theirs[name].allclose(weight, **TOL), name


def test_flux_refuses_locon(runner):
    from nodes.flux.build import build_tiny
    from nodes.flux.lora import LoraSetup

    with pytest.raises(ValueError, match="adapter locon adapts 3x3 convolutions, which this model's denoiser"):
        runner.run(LoraSetup, "locon", {"model": build_tiny(seed=0)}, adapter="locon")


def test_quantized_transformer_lokr_kohya_file_and_oft_refusal(runner):
    """On an int8 transformer: LoKr's fused layers (a diff from peft's merge on a dequantized copy) match the
    unquantized reference merge of the same adapters closely; OFT, which peft cannot put on quantized
    layers, is one line naming the param."""
    from safetensors.torch import load_file

    from nodes.flux.build import build_tiny
    from nodes.flux.lora import LoraSetup
    from nodes.quantize import quantize_frozen

    model = build_tiny(seed=0)
    quantize_frozen(model.transformer, "int8")
    adapted = runner.run(LoraSetup, "q", {"model": model}, rank=3, alpha=1.5, adapter="lokr",
                         targets="attn")["adapted"]
    randomise(adapted.transformer, 3)
    layers = file_layers(load_file(_save(runner, adapted, "q_lokr", formats="kohya")["kohya"]))
    qkv = layers["lora_unet_double_blocks_0_img_attn_qkv"]["diff"]
    mods = dict(adapted.transformer.named_modules())
    want = torch.cat([mods[f"transformer_blocks.0.attn.{p}"].get_delta_weight("default").float()
                      for p in ("to_q", "to_k", "to_v")])
    assert qkv.shape == want.shape and qkv.allclose(want, rtol=1e-3, atol=1e-4)
    quantized = build_tiny(seed=0)
    quantize_frozen(quantized.transformer, "int8")
    with pytest.raises(ValueError, match="param 'adapter': peft cannot put oft adapters on the transformer's quantized"):
        runner.run(LoraSetup, "qoft", {"model": quantized}, adapter="oft", oft_block_size=4)
