"""flux.sample: PNGs with their settings, seeds, the stock FluxPipeline's image, dev and schnell, previews
during training, typing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nodes.flux.sampler import Sample

PROMPT = "a red circle on a blue background"


@pytest.fixture(scope="module")
def dev():
    from nodes.flux.build import build_tiny

    return build_tiny(seed=0, variant="dev")


def sample(runner, model, node="sample", **params):
    params = {"width": 32, "height": 32, "steps": 2, "device": "cpu", "max_length": 32, **params}
    return runner.run(Sample, node, {"model": model}, **params)["images"]


def pixels(path):
    from PIL import Image

    return np.asarray(Image.open(path), dtype=np.float32)


def test_sample_writes_pngs_with_prompt_guidance_and_settings(dev, runner):
    from PIL import Image

    paths = sample(runner, dev, prompts=["a red circle", "a blue square"], images_per_prompt=2, seed=7,
                   guidance=4.0, width=48, height=32)
    assert [Path(p).name for p in paths] == ["00-a-red-circle-7.png", "00-a-red-circle-8.png",
                                             "01-a-blue-square-9.png", "01-a-blue-square-10.png"]
    img = Image.open(paths[0])
    assert img.size == (48, 32)
    text = img.text["parameters"]
    assert text.startswith("a red circle\nSteps: 2, Sampler: flow_euler, CFG scale: 1.0, Distilled CFG Scale: 4.0, "
                           "Seed: 7, Size: 48x32")
    events = runner.events("sample", "sample")
    assert [(e["seed"], e["seeds"]) for e in events] == [(7, [7, 8]), (9, [9, 10])]


def test_same_seed_same_image_other_seed_other_image(dev, runner):
    a = sample(runner, dev, node="a", folder="a", seed=1)
    b = sample(runner, dev, node="b", folder="b", seed=1)
    c = sample(runner, dev, node="c", folder="c", seed=2)
    assert (pixels(a[0]) == pixels(b[0])).all() and not (pixels(a[0]) == pixels(c[0])).all()


@pytest.mark.parametrize("variant", ["dev", "schnell"])
def test_our_image_equals_the_stock_flux_pipeline(runner, variant):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    from nodes.flux.build import build_tiny

    model = build_tiny(seed=0, variant=variant)
    ours = sample(runner, model, node=variant, folder=variant, prompts=[PROMPT], seed=3, guidance=3.5)
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler.from_config(model.noise_scheduler.config),
                        vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer,
                        text_encoder_2=model.text_encoder_2, tokenizer_2=model.tokenizer_2,
                        transformer=model.transformer)
    pipe.set_progress_bar_config(disable=True)
    extra = {"guidance_scale": 3.5} if variant == "dev" else {}
    with torch.no_grad():
        image = pipe(PROMPT, num_inference_steps=2, width=32, height=32, max_sequence_length=32,
                     generator=torch.Generator("cpu").manual_seed(3), **extra).images[0]
    assert (pixels(ours[0]) == np.asarray(image, dtype=np.float32)).all()


def test_guidance_changes_a_dev_image(dev, runner):
    low = sample(runner, dev, node="low", folder="low", seed=1, guidance=1.0)
    high = sample(runner, dev, node="high", folder="high", seed=1, guidance=8.0)
    assert not (pixels(low[0]) == pixels(high[0])).all()


def test_sizes_must_be_multiples_of_16(dev, runner):
    with pytest.raises(ValueError, match="width 40 must be a multiple of 16"):
        sample(runner, dev, width=40)


def test_previews_during_training_through_the_sample_hook(dev, runner):
    sampler = runner.run(Sample, "previews", {}, width=32, height=32, steps=2, max_length=32, device="cpu")["sampler"]
    paths = sampler.sample(runner.ctx("hook"), dev, step=5)
    assert [Path(p).name for p in paths] == ["step000005-00-a-red-circle-on-a-blue-background-0.png"]
    assert not runner.events("progress", "hook")


def test_sdxl_model_is_refused_at_validation_naming_both_types():
    from runtime.graph_file import loads_graph
    from runtime.registry import default_registry
    from runtime.validate import validate

    reg = default_registry()
    graph = loads_graph("nodes:\n  m: {type: sdxl.tiny_model}\n  s: {type: flux.sample, in: {model: m.model}}\n", reg)
    [problem] = [p for p in validate(graph, reg).problems if p.node == "s" and p.severity == "error"]
    assert "m.model is SDXLModel" in problem.message and "takes FluxModel" in problem.message


@pytest.mark.parametrize("formats,suffix", [("kohya", ".safetensors"), ("diffusers", ".diffusers.safetensors")])
def test_a_lora_file_of_either_format_applies_like_the_trained_adapters_and_is_removed(runner, formats, suffix):
    from peft.tuners.tuners_utils import BaseTunerLayer

    from nodes.flux.build import build_tiny
    from nodes.flux.lora import LoraSetup
    from nodes.flux.savers import SaveLora

    trained = runner.run(LoraSetup, "lora", {"model": build_tiny(seed=0)}, rank=4, alpha=8.0,
                         targets="attn-mlp")["adapted"]
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in trained.transformer.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    runner.run(SaveLora, "save", {"model": trained}, name="l", formats=formats, dtype="float32")
    base = build_tiny(seed=0)
    plain = sample(runner, base, node="plain", folder="plain", seed=1)
    lora = str(runner.workspace / "lora" / f"l{suffix}")
    with_file = sample(runner, base, node="file", folder="file", seed=1, lora=lora)
    live = sample(runner, trained, node="live", folder="live", seed=1)
    assert not (pixels(plain[0]) == pixels(with_file[0])).all()
    assert np.abs(pixels(with_file[0]) - pixels(live[0])).max() <= 1  # the file applies as the trained adapters
    assert not any(isinstance(m, BaseTunerLayer) for m in base.transformer.modules())  # and is gone again
    again = sample(runner, base, node="again", folder="again", seed=1)
    assert (pixels(again[0]) == pixels(plain[0])).all()
