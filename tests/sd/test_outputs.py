"""sd.save_lora (both formats, read back by diffusers) and sd.sample (PNGs with their settings)."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors import safe_open

from nodes.sampling import SCHEDULERS
from nodes.sd.sampler import Sample
from nodes.sd.savers import SaveLora

KOHYA_KEY = re.compile(r"^lora_(unet|te)_[a-z0-9_]+\.(lora_down\.weight|lora_up\.weight|alpha)$")


def read(path):
    with safe_open(path, "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def test_kohya_file_uses_the_names_a1111_and_comfyui_load(trained):
    model, files, _ = trained
    tensors, meta = read(files["kohya"])
    assert all(KOHYA_KEY.match(k) for k in tensors), [k for k in tensors if not KOHYA_KEY.match(k)][:5]
    assert "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight" in tensors
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight" in tensors
    modules = {k.split(".")[0] for k in tensors}
    assert all(f"{m}.alpha" in tensors and f"{m}.lora_up.weight" in tensors for m in modules)
    assert {float(tensors[f"{m}.alpha"]) for m in modules} == {2.0}
    down = tensors["lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight"]
    assert down.shape[0] == 4 and down.dtype == torch.float16
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "2.0"
    assert meta["nodetrainer_steps"] == "4" and meta["ss_base_model_version"] == "sd_v1"
    assert meta["nodetrainer_base_model"] == model.source and meta["nodetrainer_graph"] == "test graph"
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora"


def test_diffusers_file_has_peft_keys_and_the_adapter_config(trained):
    model, files, runner = trained
    tensors, meta = read(files["diffusers"])
    assert all(k.startswith(("unet.", "text_encoder.text_model.")) for k in tensors)
    assert all(".lora_A.weight" in k or ".lora_B.weight" in k for k in tensors)
    config = json.loads(meta["lora_adapter_metadata"])
    assert config["unet.r"] == 4 and config["unet.lora_alpha"] == 2.0 and config["text_encoder.r"] == 4
    saved = runner.events("saved", "save")
    assert {e["format"] for e in saved} == {"kohya_lora", "diffusers_lora"}
    assert all(e["rank"] == 4 and e["steps"] == 4 for e in saved)
    leftovers = [p for p in (runner.workspace / "lora").iterdir() if p.name.startswith(".")]
    assert leftovers == []  # atomic writes leave no temporary files


@pytest.mark.parametrize("fmt", ["kohya", "diffusers"])
def test_diffusers_loads_our_lora_and_it_changes_the_output(trained, tiny_folder, fmt):
    """The real client: StableDiffusionPipeline.load_lora_weights on the same base model."""
    from diffusers import StableDiffusionPipeline

    model, files, _ = trained
    pipe = StableDiffusionPipeline.from_pretrained(tiny_folder, safety_checker=None, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)

    def render():
        return pipe("a red circle", num_inference_steps=2, height=32, width=32, output_type="np",
                    generator=torch.Generator().manual_seed(0)).images

    base = render()
    pipe.load_lora_weights(files[fmt], adapter_name="ours")
    changed = render()
    assert abs(changed - base).max() > 1e-4
    q = pipe.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1.to_q
    assert q.r["ours"] == 4 and q.scaling["ours"] == pytest.approx(0.5)  # alpha / rank survived the file
    te_q = pipe.text_encoder.encoder.layers[0].self_attn.q_proj
    assert "ours" in te_q.lora_A  # the text-encoder adapter loaded too
    ours = model.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1.to_q
    for part in ("lora_A", "lora_B"):  # the weights are the trained ones (up to the float16 of the file)
        torch.testing.assert_close(getattr(q, part)["ours"].weight.float(),
                                   getattr(ours, part)["default"].weight.float(), atol=2e-3, rtol=1e-2)


def test_save_lora_needs_a_lora_model_and_a_plain_name(runner):
    from nodes.sd.build import build_tiny

    with pytest.raises(ValueError, match="no LoRA adapters: train it through sd.lora_setup"):
        runner.run(SaveLora, "save", {"model": build_tiny()})
    with pytest.raises(TypeError, match="needs a Stable Diffusion 1.x/2.x model"):
        runner.run(SaveLora, "save", {"model": object()})


def test_save_lora_single_format_into_a_chosen_folder(trained, runner, tmp_path):
    model, _, _ = trained
    runner.run(SaveLora, "save", {"model": model}, name="only", formats="kohya", dtype="float32",
               folder=str(tmp_path / "out"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["only.safetensors"]
    tensors, _ = read(tmp_path / "out" / "only.safetensors")
    assert all(v.dtype == torch.float32 for v in tensors.values())
    with pytest.raises(ValueError, match="must be a plain file name"):
        runner.run(SaveLora, "save", {"model": model}, name="../escape")


# -- sampler ---------------------------------------------------------------------------

def sample(runner, model, node="sample", **params):
    params = {"width": 32, "height": 32, "steps": 2, "device": "cpu", **params}
    return runner.run(Sample, node, {"model": model}, **params)["images"]


def pixels(path):
    from PIL import Image

    import numpy as np

    return np.asarray(Image.open(path), dtype=np.float32)


def test_sample_writes_pngs_with_prompt_and_settings(trained, runner):
    from PIL import Image

    model, _, _ = trained
    paths = sample(runner, model, prompts=["a red circle", "a blue square"], negative_prompt="blurry",
                   images_per_prompt=2, seed=7, cfg=4.0, scheduler="euler_a")
    assert len(paths) == 4 and all(p.endswith(".png") for p in paths)
    img = Image.open(paths[0])
    assert img.size == (32, 32)
    params = img.text["parameters"]
    assert params.startswith("a red circle\nNegative prompt: blurry\nSteps: 2, Sampler: Euler a, CFG scale: 4.0, "
                             "Seed: 7, Size: 32x32")
    settings = json.loads(img.text["nodetrainer"])
    assert settings["seed"] == 7 and settings["train_step"] == 4 and settings["scheduler"] == "euler_a"
    assert json.loads(Image.open(paths[3]).text["nodetrainer"])["seed"] == 10  # one seed per image
    events = runner.events("sample", "sample")
    assert [e["prompt"] for e in events] == ["a red circle", "a blue square"]
    assert [len(e["paths"]) for e in events] == [2, 2]


def test_every_scheduler_samples_and_seeds_reproduce(trained, runner):
    model, _, _ = trained
    for name in SCHEDULERS:
        paths = sample(runner, model, node=name, scheduler=name, folder=name)
        assert pixels(paths[0]).std() > 0, name
    again = sample(runner, model, node="again", scheduler="unipc", folder="again")
    assert (pixels(again[0]) == pixels(runner.workspace / "unipc" / again[0].split("/")[-1])).all()


def test_sample_with_a_lora_file_on_any_model(trained, runner):
    from nodes.sd.build import build_tiny

    _, files, _ = trained
    base = build_tiny(seed=0)
    plain = sample(runner, base, node="plain", folder="plain", seed=1)
    with_lora = sample(runner, base, node="lora", folder="lora", seed=1, lora=files["kohya"], lora_scale=1.0)
    assert abs(pixels(plain[0]) - pixels(with_lora[0])).max() > 0
    from peft.tuners.tuners_utils import BaseTunerLayer

    for part in (base.unet, base.text_encoder):  # the file's layers are gone, the weights' names are plain again
        assert not getattr(part, "peft_config", None)
        assert not any(isinstance(m, BaseTunerLayer) for m in part.modules())
        assert not any(".base_layer." in k for k in part.state_dict())
    png_text = __import__("PIL.Image", fromlist=["Image"]).open(with_lora[0]).text["parameters"]
    assert "LoRA: tiny.safetensors" in png_text


def test_sample_size_must_be_a_multiple_of_8(trained, runner):
    with pytest.raises(ValueError, match="width 30 must be a multiple of 8"):
        sample(runner, trained[0], width=30)


def test_sample_event_reports_the_seeds_each_prompts_images_used(trained, runner):
    from PIL import Image

    paths = sample(runner, trained[0], prompts=["a red circle", "a blue square"], seed=42, images_per_prompt=2)
    events = runner.events("sample", "sample")
    assert [(e["seed"], e["seeds"]) for e in events] == [(42, [42, 43]), (44, [44, 45])]
    for event in events:  # the event, the file names and the PNG metadata agree
        for seed, path in zip(event["seeds"], event["paths"]):
            assert path.endswith(f"-{seed}.png")
            assert json.loads(Image.open(path).text["nodetrainer"])["seed"] == seed
            assert f"Seed: {seed}," in Image.open(path).text["parameters"]
    assert sorted(paths) == sorted(p for e in events for p in e["paths"])


def test_second_prompt_with_one_image_reports_seed_43(trained, runner):
    sample(runner, trained[0], prompts=["a red circle", "a blue square"], seed=42)
    second = runner.events("sample", "sample")[1]
    assert second["prompt"] == "a blue square" and second["seed"] == 43 and second["seeds"] == [43]
    assert second["paths"][0].endswith("-43.png")


# -- kohya files hold what kohya-format loaders can place ------------------------------------------

#: kohya sd-scripts' LoRA network adapts the Linear/Conv2d layers inside modules of these classes
KOHYA_BLOCKS = {"unet": ("Transformer2DModel", "ResnetBlock2D", "Downsample2D", "Upsample2D"),
                "text_encoder": ("CLIPAttention", "CLIPSdpaAttention", "CLIPMLP")}


def kohya_placeable(model) -> set[str]:
    """Kohya names of the adapted layers that sit inside one of kohya's target blocks (its own rule)."""
    from nodes.sd.lora_check import KOHYA_PREFIX

    names = set()
    for part, classes in KOHYA_BLOCKS.items():
        for block_name, block in getattr(model, part).named_modules():
            if type(block).__name__ not in classes:
                continue
            for child, module in block.named_modules():
                if hasattr(module, "lora_A") and "default" in module.lora_A:
                    full = f"{block_name}.{child}"
                    if part == "text_encoder" and not full.startswith("text_model."):
                        full = "text_model." + full
                    names.add(KOHYA_PREFIX[part] + full.replace(".", "_"))
    return names


def test_all_linear_kohya_file_leaves_out_what_kohya_cannot_place_with_one_warning(runner):
    from nodes.sd.build import build_tiny
    from nodes.sd.lora import LoraSetup

    model = runner.run(LoraSetup, "lora", {"model": build_tiny(seed=0)}, rank=2, targets="all-linear",
                       train_text_encoder=True)["adapted"]
    saver = runner.run(SaveLora, "save", {"model": model}, name="all")["saver"]
    kohya, _ = read(runner.workspace / "lora" / "all.safetensors")
    diffusers, _ = read(runner.workspace / "lora" / "all.diffusers.safetensors")
    modules = {k.split(".")[0] for k in kohya}
    assert modules == kohya_placeable(model)  # exactly what kohya's network can hold
    assert not any("time_embedding" in k for k in kohya)
    assert "lora_unet_down_blocks_0_resnets_0_time_emb_proj" in modules  # resnet layers are kept
    time_embedding = {"unet.time_embedding.linear_1.lora_A.weight", "unet.time_embedding.linear_2.lora_B.weight"}
    assert time_embedding <= set(diffusers)
    [warning] = [e for e in runner.events("log", "save") if e["level"] == "warning"]
    assert "leaves out 2 adapted layer(s)" in warning["message"]
    assert "unet.time_embedding.linear_1, unet.time_embedding.linear_2" in warning["message"]
    saver.save(runner.ctx("save"), model, step=5)  # a periodic save does not repeat the warning
    assert len([e for e in runner.events("log", "save") if e["level"] == "warning"]) == 1


def test_a_lora_with_no_layer_kohya_can_hold_is_refused_for_the_kohya_format(runner):
    from nodes.sd.build import build_tiny
    from nodes.sd.lora import LoraSetup

    model = runner.run(LoraSetup, "lora", {"model": build_tiny(seed=0)}, rank=2,
                       target_regex=r"time_embedding\..*")["adapted"]
    with pytest.raises(ValueError, match="has a place in a kohya file: save with formats 'diffusers'"):
        runner.run(SaveLora, "save", {"model": model}, formats="kohya")
    runner.run(SaveLora, "save2", {"model": model}, formats="diffusers")  # the diffusers file holds them
