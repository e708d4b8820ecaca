"""sdxl.sample: PNGs with their settings, seeds, every scheduler, the stock SDXL pipeline's image, previews
during training, LoRA files (kohya with original or diffusers block names, wrong ones refused), typing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from nodes.sampling import SCHEDULERS
from nodes.sdxl.sampler import Sample

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def tiny():
    from nodes.sdxl.build import build_tiny

    return build_tiny(seed=0)


def sample(runner, model, node="sample", **params):
    params = {"width": 64, "height": 64, "steps": 2, "device": "cpu", **params}
    return runner.run(Sample, node, {"model": model}, **params)["images"]


def pixels(path):
    from PIL import Image

    return np.asarray(Image.open(path), dtype=np.float32)


def one_line(error) -> str:
    text = str(error)
    assert "\n" not in text and len(text) < 1500 and "Traceback" not in text, text
    return text


def has_peft_layers(module) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(m, BaseTunerLayer) for m in module.modules())


# -- PNGs, seeds, schedulers -------------------------------------------------------------------------

def test_sample_writes_pngs_with_prompt_and_settings(tiny, runner):
    from PIL import Image

    paths = sample(runner, tiny, prompts=["a red circle", "a blue square"], negative_prompt="blurry",
                   images_per_prompt=2, seed=7, cfg=4.0, scheduler="euler_a", width=64, height=48)
    assert len(paths) == 4 and [Path(p).name for p in paths][:2] == ["00-a-red-circle-7.png", "00-a-red-circle-8.png"]
    img = Image.open(paths[0])
    assert img.size == (64, 48)
    assert img.text["parameters"] == ("a red circle\nNegative prompt: blurry\nSteps: 2, Sampler: Euler a, CFG scale: "
                                      "4.0, Seed: 7, Size: 64x48, Model: tiny:sdxl:epsilon:seed=0")
    settings = json.loads(img.text["nodetrainer"])
    assert settings["seed"] == 7 and settings["scheduler"] == "euler_a" and settings["family"] == "sdxl"
    assert json.loads(Image.open(paths[3]).text["nodetrainer"])["seed"] == 10  # one seed per image
    events = runner.events("sample", "sample")
    assert [(e["prompt"], e["seeds"]) for e in events] == [("a red circle", [7, 8]), ("a blue square", [9, 10])]
    assert [e["step"] for e in runner.events("progress", "sample")] == [1, 2]


def test_the_same_seed_gives_the_same_image_and_another_seed_another(tiny, runner):
    state = torch.random.get_rng_state()
    first = sample(runner, tiny, node="a", folder="a", seed=3, cfg=3.0)
    again = sample(runner, tiny, node="b", folder="b", seed=3, cfg=3.0)
    other = sample(runner, tiny, node="c", folder="c", seed=4, cfg=3.0)
    assert (pixels(first[0]) == pixels(again[0])).all()
    assert abs(pixels(first[0]) - pixels(other[0])).max() > 0
    assert torch.equal(state, torch.random.get_rng_state()), "the global generator was drawn from"


def test_every_scheduler_samples(tiny, runner):
    images = {}
    for name in SCHEDULERS:
        [path] = sample(runner, tiny, node=name, scheduler=name, folder=name, cfg=3.0, steps=3)
        images[name] = pixels(path)
        assert np.isfinite(images[name]).all() and images[name].std() > 0, name
    assert len({a.tobytes() for a in images.values()}) == len(SCHEDULERS), "each scheduler samples its own way"


@pytest.mark.parametrize("scheduler, negative", [("euler_a", ""), ("dpmpp_2m", "blurry")])
def test_our_image_is_the_stock_sdxl_pipelines(tiny, runner, scheduler, negative):
    """The stock pipeline, given the prompt as text, encodes it itself (zeros for no negative prompt)."""
    from diffusers import StableDiffusionXLPipeline

    from nodes.sampling import make_scheduler
    from nodes.sdxl.build import build_tiny

    [ours] = sample(runner, tiny, prompts=["a red circle"], negative_prompt=negative, seed=5, steps=3, cfg=5.0,
                    scheduler=scheduler, width=64, height=48)
    stock = build_tiny(seed=0)
    pipe = StableDiffusionXLPipeline(vae=stock.vae, text_encoder=stock.text_encoder,
                                     text_encoder_2=stock.text_encoder_2, tokenizer=stock.tokenizer,
                                     tokenizer_2=stock.tokenizer_2, unet=stock.unet, add_watermarker=False,
                                     scheduler=make_scheduler(scheduler, stock.noise_scheduler.config))
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a red circle", negative_prompt=negative or None, num_inference_steps=3, guidance_scale=5.0,
                 width=64, height=48,
                 generator=torch.Generator("cpu").manual_seed(5)).images[0]
    assert (pixels(ours) == np.asarray(image, dtype=np.float32)).all()


def test_half_precision_weights_sample_and_the_float16_vae_stays_float16(runner):
    """A bfloat16 UNet and encoders sample under autocast; SDXL's VAE overflows in float16, so it decodes
    in float32 (as the pipeline does) and is float16 again afterwards."""
    from nodes.sdxl.build import build_tiny

    model = build_tiny(seed=0)
    for part in ("unet", "text_encoder", "text_encoder_2"):
        getattr(model, part).to(torch.bfloat16)
    model.vae.to(torch.float16)
    [path] = sample(runner, model, cfg=3.0)
    assert np.isfinite(pixels(path)).all() and pixels(path).std() > 0
    assert model.vae.dtype == torch.float16 and model.unet.dtype == torch.bfloat16


def test_size_and_clip_skip_are_checked(tiny, runner, registry):
    from tests.sd.test_bad_inputs import validate_text

    with pytest.raises(ValueError, match="width 60 must be a multiple of 8"):
        sample(runner, tiny, width=60)
    with pytest.raises(ValueError, match="param 'clip_skip': 1 is too large for 2-layer text encoders"):
        sample(runner, tiny, clip_skip=1)
    v = validate_text(registry, "format: nodetrainer.graph/1\nname: x\nnodes:\n  sample:\n    type: sdxl.sample@1\n"
                                "    params: {height: 100}\n")
    [problem] = v.errors
    assert (problem.node, problem.field, problem.message) == ("sample", "param 'height'",
                                                               "height 100 must be a multiple of 8")


def test_an_sd_model_wired_to_sdxl_sample_is_refused_at_validation(registry):
    from tests.sd.test_bad_inputs import validate_text

    v = validate_text(registry, "format: nodetrainer.graph/1\nname: x\nnodes:\n  sd:\n    type: sd.tiny_model@1\n"
                                "  sample:\n    type: sdxl.sample@1\n    in: {model: sd.model}\n")
    [problem] = v.errors
    assert problem.node == "sample" and "SDModel" in problem.message and "SDXLModel" in problem.message
    from nodes.sd.build import build_tiny
    from nodes.sdxl.sampler import SDXLSampler

    # a hook may hand the sampler any model: it refuses another family's too
    with pytest.raises(TypeError, match="sdxl.sample needs a Stable Diffusion XL model, got a 'sd' model"):
        SDXLSampler(prompts=["x"]).sample(None, build_tiny(seed=0))


# -- LoRA files -------------------------------------------------------------------------------------

def lora_weights(model, seed: int = 0, rank: int = 2) -> dict:
    """part -> {module name: (down, up)}: every attention and resnet layer of the UNet, the encoders' attention."""
    from nodes.lora_check import adaptable_layers

    g = torch.Generator().manual_seed(seed)
    out = {}
    for part in ("unet", "text_encoder", "text_encoder_2"):
        for name, layer in adaptable_layers(getattr(model, part)).items():
            if (".attentions." in name or ".resnets." in name) if part == "unet" else "self_attn" in name:
                if isinstance(layer, torch.nn.Linear):
                    shapes = (rank, layer.in_features), (layer.out_features, rank)
                else:
                    shapes = (rank, layer.in_channels, *layer.kernel_size), (layer.out_channels, rank, 1, 1)
                out.setdefault(part, {})[name] = tuple(torch.randn(s, generator=g) * 0.3 for s in shapes)
    return out


def kohya_file(path, model, weights, unet_names: str = "sgm") -> str:
    from nodes.sdxl.lora_names import kohya_module_name

    tensors = {}
    for part, layers in weights.items():
        for name, (down, up) in layers.items():
            if part == "unet" and unet_names == "diffusers":
                key = "lora_unet_" + name.replace(".", "_")
            else:
                key = kohya_module_name(part, name, model.unet.config)
            tensors.update({f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up,
                            f"{key}.alpha": torch.tensor(float(down.shape[0]))})
    save_file(tensors, str(path))
    return str(path)


def unet_state(model) -> dict:
    return {k: v.clone() for k, v in model.unet.state_dict().items()}


def test_a_kohya_file_with_original_block_names_applies_and_is_removed_afterwards(tiny, runner, tmp_path):
    from nodes.sdxl.build import build_tiny

    base = build_tiny(seed=0)
    before = unet_state(base)
    weights = lora_weights(base)
    sgm = kohya_file(tmp_path / "sgm.safetensors", base, weights)
    assert any(k.startswith("lora_unet_input_blocks_") for k in load_file(sgm))
    plain = sample(runner, base, node="plain", folder="plain", seed=1, cfg=3.0)
    with_sgm = sample(runner, base, node="sgm", folder="sgm", seed=1, cfg=3.0, lora=sgm)
    with_diffusers_names = sample(runner, base, node="dn", folder="dn", seed=1, cfg=3.0,
                                  lora=kohya_file(tmp_path / "dn.safetensors", base, weights, "diffusers"))
    assert abs(pixels(plain[0]) - pixels(with_sgm[0])).max() > 0
    assert (pixels(with_sgm[0]) == pixels(with_diffusers_names[0])).all(), "both block namings place the same layers"
    from PIL import Image

    assert "LoRA: sgm.safetensors" in Image.open(with_sgm[0]).text["parameters"]
    for part in ("unet", "text_encoder", "text_encoder_2"):  # the model is as it was
        assert not has_peft_layers(getattr(base, part)) and not getattr(getattr(base, part), "peft_config", None), part
    after = unet_state(base)
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    again = sample(runner, base, node="again", folder="again", seed=1, cfg=3.0)
    assert (pixels(again[0]) == pixels(plain[0])).all()


def test_a_lora_file_on_a_model_with_its_own_adapters_keeps_them(runner, tmp_path):
    from peft import LoraConfig

    from nodes.sdxl.build import build_tiny

    model = build_tiny(seed=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model.unet.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_v"], init_lora_weights="gaussian"))
    trained = {n: p.detach().clone() for n, p in model.unet.named_parameters() if p.requires_grad}
    assert trained
    own = sample(runner, model, node="own", folder="own", seed=2, cfg=3.0)
    with_file = sample(runner, model, node="file", folder="file", seed=2, cfg=3.0,
                       lora=kohya_file(tmp_path / "k.safetensors", model, lora_weights(model)))
    assert abs(pixels(own[0]) - pixels(with_file[0])).max() > 0
    assert list(model.unet.peft_config) == ["default"]
    assert not has_peft_layers(model.text_encoder) and not has_peft_layers(model.text_encoder_2)
    now = {n: p.detach() for n, p in model.unet.named_parameters() if p.requires_grad}
    assert now.keys() == trained.keys() and all(torch.equal(now[k], trained[k]) for k in trained)
    again = sample(runner, model, node="again", folder="again", seed=2, cfg=3.0)
    assert (pixels(again[0]) == pixels(own[0])).all(), "the model's own adapter is active as before"


def sd_lora_file(path) -> str:
    """A kohya LoRA of the tiny SD 1.x model (``lora_te_`` text encoder, SD's widths)."""
    from nodes.sd.build import build_tiny

    sd = build_tiny(seed=0)
    tensors = {}
    for part, prefix in (("unet", "lora_unet_"), ("text_encoder", "lora_te_")):
        for name, module in getattr(sd, part).named_modules():
            if isinstance(module, torch.nn.Linear) and name.endswith(("to_q", "q_proj")):
                full = name if part == "unet" or name.startswith("text_model.") else f"text_model.{name}"
                key = prefix + full.replace(".", "_")
                tensors[f"{key}.lora_down.weight"] = torch.zeros(2, module.in_features)
                tensors[f"{key}.lora_up.weight"] = torch.zeros(module.out_features, 2)
    save_file(tensors, str(path))
    return str(path)


def wrong_shapes_file(path, model) -> str:
    weights = lora_weights(model)
    name, (down, up) = next(iter(weights["unet"].items()))
    weights["unet"] = {name: (torch.zeros(2, down.shape[1] + 1, *down.shape[2:]), up)}
    del weights["text_encoder"], weights["text_encoder_2"]
    return kohya_file(path, model, weights)


def mixed_names_file(path, model) -> str:
    weights = lora_weights(model)
    sgm = load_file(kohya_file(path, model, {"unet": weights["unet"]}))
    ours = load_file(kohya_file(path, model, {"unet": weights["unet"]}, "diffusers"))
    half = sorted({k.split(".")[0] for k in sgm})[:3]
    mixed = {k: v for k, v in sgm.items() if k.split(".")[0] in half}
    mixed.update({k: v for k, v in ours.items() if "down_blocks" in k or "up_blocks" in k})
    save_file(mixed, str(path))
    return str(path)


@pytest.mark.parametrize("stem, make, message", [
    ("sd1", lambda p, m: sd_lora_file(p),
     r"^sd1\.safetensors: \d+ of its \d+ weights are not LoRA weights this SDXL model can place "
     r"\(.*lora_te_text_model.*\); is it for another model"),
    ("wrong", wrong_shapes_file,
     r"^wrong\.safetensors does not fit this model \(1 problem: .* down: file \[2, \d+.*the layer needs"),
    ("mixed", mixed_names_file,
     r"^mixed\.safetensors mixes the original SDXL block names \(lora_unet_(input|middle|output)_blo.*\) and "
     r"diffusers' \(lora_unet_(down|mid|up)_blocks.*: diffusers would leave the \d+ original-named weights out"),
], ids=["sd1-file", "wrong-shapes", "mixed-block-names"])
def test_a_lora_file_that_does_not_fit_is_one_clear_error_before_sampling(runner, tmp_path, stem, make, message):
    import re

    from nodes.sdxl.build import build_tiny

    model = build_tiny(seed=0)
    path = make(tmp_path / f"{stem}.safetensors", model)
    with pytest.raises(ValueError) as info:
        sample(runner, model, lora=path)
    assert re.search(message, one_line(info.value)), str(info.value)
    assert not (runner.workspace / "samples").exists(), "nothing was sampled"
    assert not any(has_peft_layers(getattr(model, p)) for p in ("unet", "text_encoder", "text_encoder_2"))


def test_a_pickled_or_broken_lora_is_refused_at_validation_and_when_the_node_runs(registry, runner, tmp_path):
    from tests.sd.test_bad_inputs import validate_text

    pickled = tmp_path / "pickled.safetensors"
    torch.save({"lora_unet_x.lora_down.weight": torch.zeros(2, 2)}, pickled)
    v = validate_text(registry, "format: nodetrainer.graph/1\nname: x\nnodes:\n  sample:\n    type: sdxl.sample@1\n"
                                f"    params: {{lora: {pickled}}}\n")
    [problem] = v.errors
    assert (problem.node, problem.field) == ("sample", "param 'lora'")
    assert problem.message.startswith("pickled.safetensors is not a safe weights file (safetensors): it is a pickle")
    broken = tmp_path / "broken.safetensors"
    broken.write_text("hello")
    with pytest.raises(ValueError, match="broken.safetensors is not a safe weights file"):
        runner.run(Sample, "sample", {"model": None}, lora=str(broken))  # settings only, for train.sample_hook


# -- during training ----------------------------------------------------------------------------------

def test_previews_during_training_with_a_lora_file_leave_the_trained_adapter_alone(runner, tmp_path):
    """A tiny SDXL LoRA trains on the data graph's batches; train.sample_hook samples it with sdxl.sample's
    settings (and a LoRA file) every 2 steps."""
    from peft import LoraConfig
    from PIL import Image

    from runtime.events import EventBus, ListSink
    from runtime.executor import execute
    from runtime.graph_file import load_graph
    from runtime.registry import default_registry
    from runtime.validate import validate

    from nodes.train.hook_nodes import SamplePreviews
    from nodes.train.loop import TrainLoop
    from tests.train.helpers import train_inputs

    reg = default_registry()
    v = validate(load_graph(HERE / "data_graph.yaml", reg), reg)
    r = execute(v, workspace=tmp_path / "data", bus=EventBus([ListSink()]), targets=("batches",),
                keep=("model", "batches"))
    assert r.ok, r.error
    model, batches = r.outputs["model"]["model"], r.outputs["batches"]["batches"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model.unet.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    trained_names = sorted(n for n, p in model.unet.named_parameters() if p.requires_grad)
    lora = kohya_file(tmp_path / "file.safetensors", model, lora_weights(model))
    settings = runner.run(Sample, "sample", {"model": None}, prompts=["a red circle"], width=64, height=64,
                          steps=2, device="cpu", lora=lora)
    assert settings["images"] == [], "without a model the node only hands its settings on"
    previews = runner.run(SamplePreviews, "previews", {"samplers": [settings["sampler"]]}, every=2)["hook"]
    runner.run(TrainLoop, "train", train_inputs(model, batches, lr=0.05, hooks=[previews]), max_steps=4,
               device="cpu")
    folder = runner.workspace / "samples"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["step000002-00-a-red-circle-0.png", "step000004-00-a-red-circle-0.png"]
    meta = json.loads(Image.open(folder / names[1]).text["nodetrainer"])
    assert meta["train_step"] == 4 and meta["weights"] == "live" and meta["lora"] == lora
    assert [e["step"] for e in runner.events("sample", "train")] == [2, 4]
    assert {e["total"] for e in runner.events("progress", "train")} == {4}, "sampling sent no progress of its own"
    assert abs(pixels(folder / names[0]) - pixels(folder / names[1])).max() > 0, "the LoRA trained between previews"
    assert list(model.unet.peft_config) == ["default"]
    assert sorted(n for n, p in model.unet.named_parameters() if p.requires_grad) == trained_names
    assert not has_peft_layers(model.text_encoder) and not has_peft_layers(model.text_encoder_2)
