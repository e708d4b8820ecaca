"""Flux LoRA names: diffusers <-> kohya/BFL with fused q/k/v, checked against diffusers' own converter at
FLUX.1's full size (on the meta device: names and shapes, no weights of the model) and round-tripped
through our reader on the tiny model."""

from __future__ import annotations

import pytest
import torch

from nodes.flux.lora_names import Layer, kohya_tensors, read_kohya, split_transformer

ALPHA = 2.0


@pytest.fixture(scope="module")
def full_size():
    """FLUX.1-dev's transformer (diffusers' default config) with no storage."""
    from diffusers import FluxTransformer2DModel

    with torch.device("meta"):
        return FluxTransformer2DModel()


def adapters_for(transformer, names, rank: int = 1, seed: int = 0) -> dict:
    """A diffusers-named adapter state dict of real (small) tensors for the layers ``names``."""
    g = torch.Generator().manual_seed(seed)
    mods = dict(transformer.named_modules())
    out = {}
    for n in names:
        m = mods[n]
        out[f"transformer.{n}.lora_A.weight"] = torch.randn(rank, m.in_features, generator=g)
        out[f"transformer.{n}.lora_B.weight"] = torch.randn(m.out_features, rank, generator=g)
    return out


def applied(a, b, x):
    return b @ (a @ x)


def test_every_kohya_key_at_full_size_is_consumed_by_diffusers_and_lands_on_its_layer(full_size, capfd):
    from diffusers import FluxPipeline
    from diffusers.utils import logging as dlog

    from nodes.flux.lora_targets import select_targets

    names = select_targets(full_size, "all-linear", None)
    assert len(names) == 19 * 14 + 38 * 6
    ours = adapters_for(full_size, names)
    tensors, left_out = kohya_tensors(ours, ALPHA, full_size.config)
    assert not left_out
    modules = {k.split(".")[0] for k in tensors}
    assert len(modules) == 19 * 10 + 38 * 3 and all(m.startswith(("lora_unet_double_blocks_", "lora_unet_single_blocks_"))
                                                    for m in modules)
    assert tensors["lora_unet_single_blocks_0_linear1.lora_up.weight"].shape == (3 * 3072 + 12288, 4)
    assert float(tensors["lora_unet_single_blocks_0_linear1.alpha"]) == 4 * ALPHA
    assert float(tensors["lora_unet_double_blocks_0_txt_attn_qkv.alpha"]) == 3 * ALPHA
    assert float(tensors["lora_unet_double_blocks_0_img_attn_proj.alpha"]) == ALPHA
    capfd.readouterr()
    dlog.set_verbosity_warning()
    try:
        converted = FluxPipeline.lora_state_dict(dict(tensors))
    finally:
        dlog.set_verbosity_error()
    said = capfd.readouterr().err.lower()
    assert "unsupported" not in said and "incompatible" not in said, said[-2000:]
    assert set(converted) == set(ours)  # every layer back, each on its own diffusers module, nothing else
    mods = dict(full_size.named_modules())
    g = torch.Generator().manual_seed(1)
    for n in names:
        a, b = converted[f"transformer.{n}.lora_A.weight"], converted[f"transformer.{n}.lora_B.weight"]
        layer = mods[n]
        assert isinstance(layer, torch.nn.Linear) and a.shape == (1, layer.in_features) and b.shape == (
            layer.out_features, 1), n
        x = torch.randn(layer.in_features, generator=g)  # the update on a probe: diffusers folds alpha / rank in
        want = applied(ours[f"transformer.{n}.lora_A.weight"], ours[f"transformer.{n}.lora_B.weight"], x) * ALPHA
        assert torch.allclose(applied(a, b, x), want, rtol=1e-4, atol=1e-4), n


def test_partly_adapted_fused_layers_and_layers_outside_the_blocks(full_size):
    names = ["transformer_blocks.3.attn.to_k", "single_transformer_blocks.5.proj_mlp", "x_embedder"]
    ours = adapters_for(full_size, names, rank=2)
    tensors, left_out = kohya_tensors(ours, ALPHA, full_size.config)
    assert left_out == ["x_embedder"]
    up = tensors["lora_unet_single_blocks_5_linear1.lora_up.weight"]
    assert up.shape == (21504, 8) and not up[:9216].any()  # q, k, v have zero blocks, the MLP rows its own
    back = split_transformer(tensors, full_size.config)
    assert set(back) == {f"transformer_blocks.3.attn.to_{p}" for p in "qkv"} | {
        f"single_transformer_blocks.5.{p}" for p in ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")}
    for n in names[:2]:
        assert back[n].down.shape[0] == 2 and back[n].alpha == ALPHA
        assert torch.equal(back[n].down, ours[f"transformer.{n}.lora_A.weight"])
        assert torch.equal(back[n].up, ours[f"transformer.{n}.lora_B.weight"])
    assert not back["transformer_blocks.3.attn.to_q"].up.any()


@pytest.fixture(scope="module")
def tiny_lora(tmp_path_factory):
    """The tiny model with adapters on every block linear and on CLIP-L, B weights random (as trained)."""
    from nodes.flux.build import build_tiny
    from nodes.flux.lora import LoraSetup
    from tests.train.helpers import NodeRunner

    runner = NodeRunner(tmp_path_factory.mktemp("lora"))
    model = runner.run(LoraSetup, "lora", {"model": build_tiny(seed=0)}, rank=3, alpha=ALPHA, targets="all-linear",
                       train_clip_l=True)["adapted"]
    g = torch.Generator().manual_seed(3)
    for name, p in model.named_trainable_parameters():
        if "lora_B" in name:
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def peft_deltas(model) -> dict:
    """Each adapted layer's weight update, by diffusers-file name (``transformer.<module>``, ...)."""
    out = {}
    for part, prefix in (("transformer", "transformer."), ("text_encoder", "text_encoder.")):
        for name, module in getattr(model, part).named_modules():
            if hasattr(module, "get_delta_weight") and "default" in getattr(module, "lora_A", {}):
                full = name if part == "transformer" or name.startswith("text_model.") else f"text_model.{name}"
                out[prefix + full] = module.get_delta_weight("default").detach()
    return out


def test_tiny_round_trip_through_our_reader_gives_the_same_updates(tiny_lora):
    from nodes.lora_files import peft_state_dict

    tensors, left_out = kohya_tensors(peft_state_dict(tiny_lora), ALPHA, tiny_lora.transformer.config)
    assert not left_out and any(k.startswith("lora_te1_text_model_encoder_layers_") for k in tensors)
    assert "lora_unet_single_blocks_0_linear1.lora_down.weight" in tensors
    layers = read_kohya(tensors, tiny_lora)
    want = peft_deltas(tiny_lora)
    assert set(layers) == set(want)
    for name, delta in want.items():
        assert torch.allclose(layers[name].delta(), delta, atol=1e-6), name
        assert layers[name].down.shape[0] == 3  # block-diagonal fused layers split back to rank 3 each


def test_a_dense_fused_layer_splits_by_rows_each_part_keeping_the_whole_down(tiny_lora):
    g = torch.Generator().manual_seed(0)
    inner = 32
    down, up = torch.randn(4, inner, generator=g), torch.randn(7 * inner, 4, generator=g)
    layers = split_transformer({"lora_unet_single_blocks_0_linear1.lora_down.weight": down,
                                "lora_unet_single_blocks_0_linear1.lora_up.weight": up,
                                "lora_unet_single_blocks_0_linear1.alpha": torch.tensor(8.0)},
                               tiny_lora.transformer.config)
    fused = Layer(down, up, 8.0).delta()
    rows = {"attn.to_q": (0, 32), "attn.to_k": (32, 64), "attn.to_v": (64, 96), "proj_mlp": (96, 224)}
    for leaf, (a, b) in rows.items():
        assert torch.allclose(layers[f"single_transformer_blocks.0.{leaf}"].delta(), fused[a:b], atol=1e-6)


def test_our_reader_refuses_t5_keys_and_another_model_size(tiny_lora, full_size):
    from nodes.lora_files import peft_state_dict

    tensors, _ = kohya_tensors(peft_state_dict(tiny_lora), ALPHA, tiny_lora.transformer.config)
    with pytest.raises(ValueError, match="neither transformer .* nor CLIP-L .* e.g. lora_te3_"):
        read_kohya({**tensors, "lora_te3_encoder_block_0_layer_0_SelfAttention_q.lora_down.weight": torch.zeros(1)},
                   tiny_lora)
    with pytest.raises(ValueError, match="its up weight has 96 rows, the transformer.s img_attn.qkv has 9216: .* another model size"):
        split_transformer(tensors, full_size.config)


def test_the_fit_check_splits_kohya_files_and_names_what_does_not_fit(tiny_lora, full_size):
    from nodes.flux.lora_names import check_lora_fits
    from nodes.lora_files import peft_state_dict

    ours = peft_state_dict(tiny_lora)
    tensors, _ = kohya_tensors(ours, ALPHA, tiny_lora.transformer.config)
    check_lora_fits(tensors, tiny_lora, "mine.safetensors")
    check_lora_fits(ours, tiny_lora, "mine.diffusers.safetensors")
    big = adapters_for(full_size, ["transformer_blocks.0.attn.to_out.0"])
    with pytest.raises(ValueError, match="big.safetensors does not fit .*attn.to_out.0 down: file \\[1, 3072\\]"):
        check_lora_fits(kohya_tensors(big, ALPHA, full_size.config)[0], tiny_lora, "big.safetensors")
    with pytest.raises(ValueError, match="t5.safetensors does not fit this Flux model: .* lora_te3_"):
        check_lora_fits({**tensors, "lora_te3_x.lora_down.weight": torch.zeros(1, 1)}, tiny_lora, "t5.safetensors")
