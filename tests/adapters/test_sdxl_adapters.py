"""SDXL: the kohya files of the new kinds use kohya's original (SGM) block names, also for LoCon's resnet
and sampler convolutions; diffusers' SDXL reader places a LoCon file on every layer with our weights, and
a LoHa file holds the same layers under the same names as a LoRA file of the same targets."""

from __future__ import annotations

from tests.adapters.helpers import base_weights, file_layers, peft_merged, randomise, reference_merge
from tests.adapters.test_sd_adapters import TOL


def _setup(runner, kind, **extra):
    from nodes.sdxl.build import build_tiny
    from nodes.sdxl.lora import LoraSetup

    adapted = runner.run(LoraSetup, f"lora_{kind}", {"model": build_tiny(seed=0)}, rank=2, alpha=1.0, adapter=kind,
                         text_encoders="both", **extra)["adapted"]
    for i, part in enumerate(("unet", "text_encoder", "text_encoder_2")):
        randomise(getattr(adapted, part), 10 + i)
    return adapted


def _kohya(runner, model, name):
    from safetensors.torch import load_file

    from nodes.sdxl.savers import SaveLora

    runner.run(SaveLora, f"save_{name}", {"model": model}, name=name, formats="kohya", dtype="float32")
    (path,) = [e["path"] for e in runner.events("saved", f"save_{name}")]
    return path, load_file(path)


def test_locon_file_in_sgm_names_loads_in_diffusers_with_our_weights(runner):
    from diffusers import StableDiffusionXLPipeline

    from nodes.placeholder_tokens import plain_tokenizer
    from nodes.sdxl.build import build_tiny

    model = _setup(runner, "locon", conv_rank=3, conv_alpha=3.0)
    path, tensors = _kohya(runner, model, "locon")
    assert any(k.startswith("lora_unet_input_blocks_1_0_in_layers_2.") for k in tensors)  # resnet conv1, SGM name
    assert not any("down_blocks" in k or "resnets" in k for k in tensors)
    fresh = build_tiny(seed=0)
    pipe = StableDiffusionXLPipeline(vae=fresh.vae, text_encoder=fresh.text_encoder, text_encoder_2=fresh.text_encoder_2,
                                     tokenizer=plain_tokenizer(fresh.tokenizer), tokenizer_2=plain_tokenizer(fresh.tokenizer_2),
                                     unet=fresh.unet, scheduler=fresh.noise_scheduler)
    pipe.load_lora_weights(path)
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    for part in ("unet", "text_encoder", "text_encoder_2"):
        ours = peft_merged(getattr(model, part))
        theirs = base_weights(getattr(pipe, part), ours)
        assert ours
        for name, weight in ours.items():
            assert theirs[name].allclose(weight, **TOL), f"{part} {name}"


def test_loha_file_has_the_lora_files_names_and_merges_as_defined(runner):
    from nodes.sdxl.build import build_tiny

    model = _setup(runner, "loha")
    loha = file_layers(_kohya(runner, model, "loha")[1])
    lora = file_layers(_kohya(runner, _setup(runner, "lora"), "lora")[1])
    assert loha.keys() == lora.keys() and len(loha) > 20
    assert all(set(t) == {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "alpha"} for t in loha.values())
    # LoRA's names are checked against diffusers' reader (test_locon_... and tests/sdxl); place LoHa's by them
    plain = build_tiny(seed=0)
    ours = peft_merged(model.unet)
    by_shape = {}
    for name in ours:
        by_shape.setdefault(tuple(ours[name].shape), []).append(name)
    # each file layer merges onto exactly one of our layers of its shape, the one peft merged the same
    base = base_weights(plain.unet, ours)
    matched = set()
    for key, t in loha.items():
        if not key.startswith("lora_unet_"):
            continue
        shape = (t["hada_w1_a"].shape[0], t["hada_w1_b"].shape[1])
        hits = [n for n in by_shape[shape] if reference_merge(base[n], t).allclose(ours[n], **TOL)]
        assert len(hits) == 1, key
        matched.add(hits[0])
    assert matched == set(ours)
