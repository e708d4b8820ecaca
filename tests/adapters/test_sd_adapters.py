"""Every adapter kind on SD 1.x: set up, randomised, saved as kohya/LyCORIS and diffusers/peft files, and
each file reloaded by a loader that is not ours; the merged weights must equal peft's merge of the live
adapters. Also: a preview per kind with the adapters active, the full-model fusion, the param checks."""

from __future__ import annotations

import json
import re

import pytest

from tests.adapters.helpers import (base_weights, file_layers, peft_merged, randomise, reference_merge,
                                    save_lora)

KINDS = {"lora": {}, "dora": {}, "locon": {"conv_rank": 3, "conv_alpha": 1.5}, "loha": {}, "lokr": {},
         "oft": {"oft_block_size": 4}}
TOL = dict(rtol=1e-4, atol=1e-5)


def _setup(runner, kind, node_id=None, **extra):
    from nodes.sd.build import build_tiny
    from nodes.sd.lora import LoraSetup

    params = dict(rank=4, alpha=2.0, adapter=kind, train_text_encoder=True, **KINDS[kind], **extra)
    adapted = runner.run(LoraSetup, node_id or f"lora_{kind}", {"model": build_tiny(seed=0)}, **params)["adapted"]
    randomise(adapted.unet, 1)
    randomise(adapted.text_encoder, 2)
    return adapted


def _save(runner, model, name, formats="both"):
    from nodes.sd.savers import SaveLora

    return save_lora(runner, SaveLora, model, name, formats)


def _kohya_name(part, module):
    prefix = {"unet": "lora_unet_", "text_encoder": "lora_te_"}[part]
    if part == "text_encoder" and not module.startswith("text_model."):
        module = "text_model." + module
    return prefix + module.replace(".", "_")


@pytest.mark.parametrize("kind", ["dora", "loha", "lokr", "oft"])
def test_lycoris_kinds_kohya_file_merges_as_the_format_defines(runner, kind):
    """DoRA (diffusers' reader drops dora_scale without a word, so it is no judge), LoHa and LoKr (which
    diffusers does not read for SD), OFT (written as LyCORIS' full-weight diff: no oft_blocks equal peft's
    input-side rotation): the file merged by the format's definition (lycoris-lora's code for LoHa/LoKr)
    equals peft's merge of the live adapters, layer by layer, and every layer is placed."""
    from safetensors.torch import load_file

    model = _setup(runner, kind)
    files = _save(runner, model, kind)
    layers = file_layers(load_file(files["kohya"]))
    suffix = {"dora": "dora_scale", "loha": "hada_w1_a", "lokr": "lokr_w", "oft": "diff"}[kind]
    assert all(any(s.startswith(suffix) for s in t) for t in layers.values())
    checked = 0
    for part in ("unet", "text_encoder"):
        module = getattr(model, part)
        ours = peft_merged(module)
        base = base_weights(_plain(part), ours)
        for name, weight in ours.items():
            merged = reference_merge(base[name], layers.pop(_kohya_name(part, name)))
            assert merged.shape == weight.shape
            assert (merged - base[name]).abs().max() > 1e-3  # the adapter does change the layer
            assert merged.allclose(weight, **TOL), name
            checked += 1
    assert checked > 10 and not layers  # every layer of the file was placed


def _plain(part):
    from nodes.sd.build import build_tiny

    return getattr(build_tiny(seed=0), part)


@pytest.mark.parametrize("kind,fmt", [("lora", "kohya"), ("locon", "kohya"), ("locon", "diffusers")])
def test_lora_kinds_kohya_file_loads_in_diffusers_with_our_weights(runner, kind, fmt):
    """diffusers' own reader (load_lora_weights) puts the file into a fresh base model; fused, its
    weights equal peft's merge of our adapters (LoCon: also the 3x3 convs, with their own rank/alpha)."""
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    from nodes.sd.build import build_tiny

    model = _setup(runner, kind)
    files = _save(runner, model, kind)
    tensors = load_file(files["kohya"])
    if kind == "locon":
        conv = tensors["lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight"]
        assert conv.shape[0] == 3 and conv.shape[2:] == (3, 3)
        assert float(tensors["lora_unet_down_blocks_0_resnets_0_conv1.alpha"]) == 1.5
    fresh = build_tiny(seed=0)
    pipe = StableDiffusionPipeline(vae=fresh.vae, text_encoder=fresh.text_encoder, tokenizer=fresh.tokenizer,
                                   unet=fresh.unet, scheduler=fresh.noise_scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.load_lora_weights(files[fmt])
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    for part in ("unet", "text_encoder"):
        ours = peft_merged(getattr(model, part))
        theirs = base_weights(getattr(pipe, part), ours)
        base = base_weights(_plain(part), ours)
        for name, weight in ours.items():
            assert (weight - base[name]).abs().max() > 1e-3
            assert theirs[name].allclose(weight, **TOL), f"{part} {name}"


@pytest.mark.parametrize("kind", list(KINDS))
def test_diffusers_file_reloads_through_peft(runner, kind):
    """The diffusers/peft file holds peft's keys and, in its header, each part's adapter config: peft
    rebuilds the adapters on a fresh model from them alone, and its merge equals ours."""
    import peft
    from peft.utils import set_peft_model_state_dict
    from safetensors import safe_open
    from safetensors.torch import load_file

    model = _setup(runner, kind)
    path = _save(runner, model, kind, formats="diffusers")["diffusers"]
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    assert meta["nodetrainer_adapter"] == kind
    configs = json.loads(meta["lora_adapter_metadata"])
    tensors = load_file(path)
    for part, prefix in (("unet", "unet."), ("text_encoder", "text_encoder.text_model.")):
        cfg = {k.split(".", 1)[1]: v for k, v in configs.items() if k.startswith(part + ".")}
        config = peft.PeftConfig.from_peft_type(**cfg) if hasattr(peft.PeftConfig, "from_peft_type") else None
        config = config or peft.PEFT_TYPE_TO_CONFIG_MAPPING[cfg["peft_type"]](**{
            k: v for k, v in cfg.items() if k != "peft_type"})
        fresh = _plain(part)
        peft.inject_adapter_in_model(config, fresh)
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        result = set_peft_model_state_dict(fresh, state)
        assert not [k for k in result.unexpected_keys]
        ours, theirs = peft_merged(getattr(model, part)), peft_merged(fresh)
        assert ours.keys() == theirs.keys() and ours
        for name, weight in ours.items():
            assert theirs[name].allclose(weight, **TOL), f"{part} {name}"


@pytest.mark.parametrize("kind", list(KINDS))
def test_full_model_fusion_equals_peft_merge(runner, kind):
    """The full-model savers' plain weights (lora_fusion) are peft's merge, for every kind."""
    from nodes.lora_fusion import plain_state_dict

    model = _setup(runner, kind)
    plain = plain_state_dict(model.unet)
    ours = peft_merged(model.unet)
    assert not any(k for k in plain if ".base_layer." in k or "hada_" in k or "lokr_" in k or "oft_R" in k)
    for name, weight in ours.items():
        assert plain[f"{name}.weight"].float().allclose(weight, **TOL), name


@pytest.mark.parametrize("kind", list(KINDS))
def test_preview_samples_with_the_adapters_active(runner, kind):
    """The sampler runs the adapted model as it is (what train.sample_hook calls): the image differs from
    the base model's."""
    import numpy as np
    from PIL import Image

    from nodes.sd.sampler import Sample

    from nodes.sd.build import build_tiny

    model = _setup(runner, kind)
    args = dict(prompts=["a red circle"], width=32, height=32, steps=2, device="cpu")
    images = runner.run(Sample, f"sample_{kind}", {"model": model}, folder=f"s_{kind}", **args)["images"]
    plain = runner.run(Sample, f"plain_{kind}", {"model": build_tiny(seed=0)}, folder=f"p_{kind}", **args)["images"]
    assert len(images) == 1
    ours, base = (np.asarray(Image.open(p[0]), dtype=float) for p in (images, plain))
    assert np.isfinite(ours).all() and np.abs(ours - base).max() > 2  # the adapters are active


def test_params_of_another_kind_are_refused(runner):
    from nodes.sd.lora import LoraSetup

    from nodes.sd.build import build_tiny

    with pytest.raises(ValueError, match="param 'conv_rank' is for adapter locon only"):
        runner.run(LoraSetup, "bad", {"model": build_tiny(seed=0)}, adapter="lora", conv_rank=2)
    with pytest.raises(ValueError, match="param 'oft_block_size': 5 does not divide"):
        runner.run(LoraSetup, "bad2", {"model": build_tiny(seed=0)}, adapter="oft", oft_block_size=5)
    with pytest.raises(ValueError, match="param 'init': gaussian is for adapter lora/dora/locon only"):
        runner.run(LoraSetup, "bad3", {"model": build_tiny(seed=0)}, adapter="loha", init="gaussian")


def test_locon_adapts_the_3x3_convs_with_their_own_rank(runner):
    import torch

    model = _setup(runner, "locon")
    convs = {n: m for n, m in model.unet.named_modules() if hasattr(m, "lora_A")
             and isinstance(m.get_base_layer(), torch.nn.Conv2d) and m.get_base_layer().kernel_size == (3, 3)}
    assert convs and all(m.r["default"] == 3 and m.scaling["default"] == 0.5 for m in convs.values())
    assert all(".resnets." in n or "samplers." in n for n in convs)
    linear = [m for m in model.unet.modules() if hasattr(m, "lora_A") and isinstance(m.get_base_layer(), torch.nn.Linear)]
    assert linear and all(m.r["default"] == 4 for m in linear)


@pytest.mark.parametrize("kind", ["dora", "loha", "lokr", "oft"])
def test_sampler_refuses_a_file_of_a_kind_diffusers_cannot_apply(runner, kind):
    """A LoHa/LoKr file, or a kohya DoRA file (whose magnitudes diffusers would drop silently), given to the
    sampler's lora param: one line naming the file and its kind, not a wrong image."""
    from nodes.sd.build import build_tiny
    from nodes.sd.sampler import Sample

    from safetensors.torch import load_file

    from nodes.sd.lora_check import check_lora_fits

    files = _save(runner, _setup(runner, kind), kind, formats="kohya")
    name = {"dora": "DoRA", "loha": "LoHa", "lokr": "LoKr", "oft": "full-weight difference"}[kind]
    message = f"{kind}.safetensors is a {re.escape(name)}.* file: the sampler applies LoRA and LoCon"
    with pytest.raises(ValueError, match=message):
        check_lora_fits(load_file(files["kohya"]), build_tiny(seed=0), f"{kind}.safetensors")
    with pytest.raises(ValueError, match=message):  # the same through the sampler node
        runner.run(Sample, f"s_{kind}", {"model": build_tiny(seed=0)}, prompts=["x"], width=32, height=32,
                   steps=1, lora=files["kohya"], device="cpu")


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_trains_through_the_loop(runner, kind):
    """Two steps of train.loop change each kind's adapter weights and nothing else of the model."""
    import torch

    from nodes.sd.build import build_tiny
    from nodes.sd.lora import LoraSetup
    from nodes.train.loop import TrainLoop
    from tests.sd.conftest import TokenBatches
    from tests.train.helpers import train_inputs

    model = build_tiny(seed=0)
    adapted = runner.run(LoraSetup, f"t_{kind}", {"model": model}, rank=2, alpha=2.0, adapter=kind,
                         **KINDS[kind])["adapted"]
    randomise(adapted.unet, 5)  # from a no-op start some kinds get no gradient in their first step
    before = {n: p.detach().clone() for n, p in adapted.unet.named_parameters()}
    trained = runner.run(TrainLoop, f"train_{kind}", train_inputs(adapted, TokenBatches(model), lr=0.01),
                         max_steps=2, device="cpu")["trained"]
    after = dict(trained.unet.named_parameters())
    changed = {n for n, p in after.items() if not torch.equal(p.detach(), before[n])}
    trainable = {n for n, p in after.items() if p.requires_grad}
    assert changed and changed <= trainable


def test_sampler_applies_a_locon_file_like_the_trained_adapters(runner):
    """A LoCon kohya file given to the sampler's lora param (diffusers applies it, 3x3 convs included): the
    image equals the one sampled from the live adapters."""
    import numpy as np
    from PIL import Image

    from nodes.sd.build import build_tiny
    from nodes.sd.sampler import Sample

    model = _setup(runner, "locon")
    path = _save(runner, model, "locon_s", formats="kohya")["kohya"]
    args = dict(prompts=["a red circle"], width=32, height=32, steps=2, device="cpu")
    live = runner.run(Sample, "live", {"model": model}, folder="live", **args)["images"][0]
    filed = runner.run(Sample, "filed", {"model": build_tiny(seed=0)}, lora=path, folder="filed", **args)["images"][0]
    plain = runner.run(Sample, "plain", {"model": build_tiny(seed=0)}, folder="plain", **args)["images"][0]
    a, b, c = (np.asarray(Image.open(p), dtype=float) for p in (live, filed, plain))
    assert np.abs(a - b).max() <= 2 and np.abs(a - c).max() > 2
