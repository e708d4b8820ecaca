"""Our BFL <-> diffusers map of the Flux transformer: at FLUX.1's full dims (on the meta device: names and shapes)
it agrees with diffusers' own reader, and it round-trips the tiny transformer bit-exactly at its small dims."""

from __future__ import annotations

import pytest
import torch


def full_size(guidance: bool):
    """FLUX.1-dev / schnell's transformer (diffusers' default config: 19 double, 38 single blocks, 3072 wide)."""
    from diffusers import FluxTransformer2DModel

    with torch.device("meta"):
        return FluxTransformer2DModel(guidance_embeds=guidance)


def shapes(state_dict: dict) -> dict:
    return {k: tuple(v.shape) for k, v in state_dict.items()}


@pytest.mark.parametrize("guidance", [True, False], ids=["dev", "schnell"])
def test_at_full_dims_our_bfl_file_is_what_diffusers_reader_turns_into_the_model(guidance):
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    from nodes.flux.bfl_layout import PREFIX, bfl_to_diffusers, diffusers_to_bfl

    model = shapes(full_size(guidance).state_dict())
    bfl = diffusers_to_bfl(full_size(guidance).state_dict(), prefix=PREFIX)
    assert len(bfl) == (780 if guidance else 776)  # flux1-dev.safetensors has 780 tensors
    assert bfl[PREFIX + "single_blocks.0.linear1.weight"].shape == (3 * 3072 + 12288, 3072)
    assert bfl[PREFIX + "double_blocks.18.img_attn.qkv.weight"].shape == (3 * 3072, 3072)
    leftover = dict(bfl)
    converted = convert_flux_transformer_checkpoint_to_diffusers(leftover)
    assert not leftover  # diffusers' reader consumed every tensor of our file
    assert shapes(converted) == model  # ... and each lands on a module of the model, in its shape
    assert shapes(bfl_to_diffusers(bfl)) == model  # our reader agrees


def test_the_tiny_transformer_round_trips_bit_exactly_and_the_fused_rows_are_in_order():
    from nodes.flux.bfl_layout import PREFIX, bfl_to_diffusers, diffusers_to_bfl
    from nodes.flux.build import build_tiny

    for variant in ("dev", "schnell"):
        sd = build_tiny(seed=0, variant=variant).transformer.state_dict()
        for prefix in ("", PREFIX):
            bfl = diffusers_to_bfl(sd, prefix=prefix)
            back = bfl_to_diffusers(bfl)
            assert set(back) == set(sd) and all(torch.equal(back[k], sd[k]) for k in sd)
        assert (prefix + "guidance_in.in_layer.weight" in bfl) == (variant == "dev")
    sd = build_tiny(seed=0, variant="dev").transformer.state_dict()
    bfl = diffusers_to_bfl(sd)
    linear1 = bfl["single_blocks.0.linear1.weight"]
    parts = [sd[f"single_transformer_blocks.0.{n}.weight"] for n in ("attn.to_q", "attn.to_k", "attn.to_v",
                                                                      "proj_mlp")]
    assert torch.equal(linear1, torch.cat(parts))
    qkv = bfl["double_blocks.0.txt_attn.qkv.bias"]
    assert torch.equal(qkv, torch.cat([sd[f"transformer_blocks.0.attn.add_{n}_proj.bias"] for n in "qkv"]))
    scale, shift = sd["norm_out.linear.weight"].chunk(2)  # diffusers: (scale, shift); BFL: (shift, scale)
    assert torch.equal(bfl["final_layer.adaLN_modulation.1.weight"], torch.cat([shift, scale]))
    assert torch.equal(bfl["double_blocks.0.img_attn.norm.key_norm.scale"], sd["transformer_blocks.0.attn.norm_k.weight"])


def test_tensors_outside_the_layout_are_named():
    from nodes.flux.bfl_layout import bfl_to_diffusers, diffusers_to_bfl
    from nodes.flux.build import build_tiny

    sd = build_tiny(seed=0).transformer.state_dict()
    bfl = diffusers_to_bfl(sd)
    with pytest.raises(ValueError, match="not part of FLUX.1's layout: double_blocks.0.img_attn.lora_up.weight"):
        bfl_to_diffusers({**bfl, "double_blocks.0.img_attn.lora_up.weight": torch.zeros(1)})
    missing = {k: v for k, v in bfl.items() if k != "single_blocks.0.linear2.bias"}
    with pytest.raises(ValueError, match="has no tensor 'single_blocks.0.linear2.bias'"):
        bfl_to_diffusers(missing)
    with pytest.raises(ValueError, match="not a FLUX.1 transformer in the BFL layout"):
        bfl_to_diffusers(sd)
    with pytest.raises(ValueError, match="no place in the BFL layout: extra.weight"):
        diffusers_to_bfl({**sd, "extra.weight": torch.zeros(1)})
