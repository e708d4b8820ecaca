"""Flux savers checked with the other tools' own code: diffusers' ``load_lora_weights`` (both LoRA formats),
its BFL single-file converter at FLUX.1's full size (meta device), ``FluxPipeline.from_pretrained``."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from nodes.flux.lora import LoraSetup
from nodes.flux.savers import SaveDiffusers, SaveLora, SaveTransformer

PROMPT = "a red circle on a blue background"


def build():
    from nodes.flux.build import build_tiny

    return build_tiny(seed=0)


def randomize_lora(model, seed: int = 1):
    """Non-zero LoRA B weights (a fresh adapter is a no-op), as after training."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_trainable_parameters():
        if "lora_B" in name:
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def adapted(tmp_path_factory, name, **params):
    from tests.train.helpers import NodeRunner

    runner = NodeRunner(tmp_path_factory.mktemp(name))
    model = runner.run(LoraSetup, "lora", {"model": build()}, rank=4, alpha=8.0, **params)["adapted"]
    randomize_lora(model)
    return model


@pytest.fixture(scope="module")
def lora_model(tmp_path_factory):
    return adapted(tmp_path_factory, "lora", targets="attn-mlp", train_clip_l=True)


@pytest.fixture(scope="module")
def double_lora(tmp_path_factory):
    """Adapters on the double blocks and CLIP-L only: diffusers' kohya reader hard-codes FLUX.1's width for
    the single blocks' linear1 alone, so this file of the tiny model goes through it."""
    return adapted(tmp_path_factory, "double", targets="all-linear", single_blocks="none", train_clip_l=True)


def pipeline(model):
    from diffusers import FluxPipeline

    from nodes.placeholder_tokens import plain_tokenizer

    return FluxPipeline(scheduler=model.noise_scheduler, vae=model.vae, text_encoder=model.text_encoder,
                        tokenizer=plain_tokenizer(model.tokenizer), text_encoder_2=model.text_encoder_2,
                        tokenizer_2=plain_tokenizer(model.tokenizer_2), transformer=model.transformer)


def outputs(pipe, seed: int = 0):
    """The transformer's velocity for fixed packed latents with the prompt's conditioning, and the pooled
    CLIP embedding (what a CLIP-L LoRA changes)."""
    from nodes.flux.model import image_ids

    with torch.no_grad():
        t5, pooled, _ = pipe.encode_prompt(PROMPT, prompt_2=None, device="cpu", max_sequence_length=16)
        x = torch.randn(1, 16, pipe.transformer.config.in_channels, generator=torch.Generator().manual_seed(seed))
        pred = pipe.transformer(hidden_states=x, encoder_hidden_states=t5, pooled_projections=pooled,
                                timestep=torch.tensor([0.6]), img_ids=image_ids(4, 4), txt_ids=torch.zeros(16, 3),
                                guidance=torch.tensor([1.0]), return_dict=False)[0]
    return pred, pooled


def keys(path):
    with safe_open(str(path), framework="pt") as f:
        return set(f.keys()), dict(f.metadata())


def adapter_count(modules, adapter):
    return sum(1 for part in modules for n, _ in part.named_modules() if n.endswith(f"lora_A.{adapter}"))


def load_into_base(source):
    """A pipeline of the base model with ``source`` (a file or a state dict) loaded by diffusers, its outputs
    before, and how many layers diffusers read from ``source``; fails on anything diffusers warns about
    (unexpected or unplaced keys), caught from its logger whatever captures stderr."""
    import logging
    import warnings

    from diffusers import FluxPipeline
    from diffusers.utils import logging as dlog

    read = FluxPipeline.lora_state_dict(dict(source) if isinstance(source, dict) else str(source))
    in_file = sum(1 for k in read if k.endswith(("lora_A.weight", ".down.weight")))
    pipe = pipeline(build())
    before = outputs(pipe)
    said: list[str] = []
    keep = logging.Handler(logging.WARNING)
    keep.emit = lambda record: said.append(record.getMessage())
    library = logging.getLogger("diffusers")
    library.addHandler(keep)
    dlog.set_verbosity_warning()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pipe.load_lora_weights(source if isinstance(source, dict) else str(source))
    finally:
        library.removeHandler(keep)
        dlog.set_verbosity_error()
    said += [str(w.message) for w in caught]
    assert not said, said
    return pipe, before, in_file


def check_same(pipe, before, in_file, model):
    ours = outputs(pipeline(model))
    for a, b, c in zip(before, outputs(pipe), ours):
        assert not torch.allclose(a, b, atol=1e-5)  # the LoRA changes the outputs ...
        assert torch.allclose(b, c, atol=1e-5)  # ... exactly as trained
    trained = adapter_count((model.transformer, model.text_encoder), "default")
    placed = adapter_count((pipe.transformer, pipe.text_encoder), "default_0")
    assert placed == in_file == trained  # every layer of the file found its place


def test_diffusers_lora_loads_with_load_lora_weights_every_layer_placed(lora_model, runner):
    runner.run(SaveLora, "save", {"model": lora_model}, name="lora", formats="diffusers", dtype="float32")
    path = runner.workspace / "lora" / "lora.diffusers.safetensors"
    names, meta = keys(path)
    assert {k.split(".", 1)[0] for k in names} == {"transformer", "text_encoder"}
    assert not any(k.startswith("transformer.proj_out") for k in names)
    assert meta["modelspec.architecture"] == "flux-1-dev/lora" and meta["ss_network_dim"] == "4"
    pipe, before, in_file = load_into_base(path)
    check_same(pipe, before, in_file, lora_model)


def test_kohya_lora_of_double_blocks_and_clip_l_loads_with_load_lora_weights(double_lora, runner):
    runner.run(SaveLora, "save", {"model": double_lora}, name="lora", formats="kohya", dtype="float32")
    path = runner.workspace / "lora" / "lora.safetensors"
    names, meta = keys(path)
    assert {k.split(".")[0].rsplit("_", 1)[0] for k in names if "img_attn_qkv" in k} == {
        "lora_unet_double_blocks_0_img_attn"}
    assert any(k.startswith("lora_te1_text_model_encoder_layers_") for k in names)
    assert not any("transformer_blocks" in k or "single_blocks" in k for k in names)
    alphas = load_file(str(path))
    assert float(alphas["lora_unet_double_blocks_0_img_attn_qkv.alpha"]) == 3 * 8.0
    assert float(alphas["lora_unet_double_blocks_0_img_mod_lin.alpha"]) == 8.0
    assert meta["ss_base_model_version"] == "flux1" and meta["nodetrainer_format"] == "kohya"
    pipe, before, in_file = load_into_base(path)
    check_same(pipe, before, in_file, double_lora)


def test_whole_kohya_lora_of_the_tiny_model_loads_through_our_reader(lora_model, runner):
    from nodes.flux.lora_names import diffusers_state_dict, read_kohya

    runner.run(SaveLora, "save", {"model": lora_model}, name="lora", formats="kohya", dtype="float32")
    tensors = load_file(str(runner.workspace / "lora" / "lora.safetensors"))
    assert "lora_unet_single_blocks_0_linear1.lora_up.weight" in tensors
    pipe, before, in_file = load_into_base(diffusers_state_dict(read_kohya(tensors, lora_model)))
    check_same(pipe, before, in_file, lora_model)


def test_layers_outside_the_blocks_are_left_out_of_the_kohya_file_with_a_warning(runner):
    model = runner.run(LoraSetup, "lora", {"model": build()}, rank=2, target_regex=r"x_embedder|.*attn\.to_q")["adapted"]
    runner.run(SaveLora, "save", {"model": model}, name="wide", formats="both")
    [warning] = [e for e in runner.events("log") if e.get("level") == "warning"]
    assert "transformer.x_embedder" in warning["message"] and "diffusers file has them" in warning["message"]
    kohya, _ = keys(runner.workspace / "lora" / "wide.safetensors")
    diffusers, _ = keys(runner.workspace / "lora" / "wide.diffusers.safetensors")
    assert not any("img_in" in k or "x_embedder" in k for k in kohya)
    assert "lora_unet_single_blocks_0_linear1.lora_up.weight" in kohya
    assert "transformer.x_embedder.lora_A.weight" in diffusers


@pytest.mark.parametrize("guidance", [True, False], ids=["dev", "schnell"])
def test_the_bfl_transformer_file_at_full_size_is_what_diffusers_single_file_reader_consumes(guidance):
    from diffusers import FluxTransformer2DModel
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    from nodes.flux.files import transformer_tensors

    with torch.device("meta"):
        full = FluxTransformer2DModel(guidance_embeds=guidance)
    ours = full.state_dict()
    bfl = transformer_tensors(ours)
    assert "double_blocks.18.img_attn.qkv.weight" in bfl and bfl["single_blocks.37.linear1.weight"].shape == (
        21504, 3072)
    assert ("guidance_in.in_layer.weight" in bfl) == guidance
    left = dict(bfl)
    converted = convert_flux_transformer_checkpoint_to_diffusers(left)
    assert not left  # every tensor of our file consumed ...
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(v.shape) for k, v in ours.items()}


def test_tiny_transformer_file_round_trips_with_the_lora_fused(lora_model, runner):
    from diffusers import FluxTransformer2DModel

    from nodes.flux.bfl_layout import bfl_to_diffusers

    runner.run(SaveTransformer, "save", {"model": lora_model}, name="t", dtype="float32")
    path = runner.workspace / "models" / "t.safetensors"
    names, meta = keys(path)
    assert "double_blocks.0.img_attn.qkv.weight" in names and meta["modelspec.architecture"] == "flux-1-dev"
    assert meta["nodetrainer_lora_fused"] == "rank 4, alpha 8.0"
    [saved] = runner.events("saved")
    assert saved["format"] == "bfl_transformer" and saved["lora_fused"]
    fresh = FluxTransformer2DModel.from_config(lora_model.transformer.config)
    fresh.load_state_dict(bfl_to_diffusers(load_file(str(path))), strict=True)
    model = pipeline(lora_model)
    ours = outputs(model)[0]
    model.transformer = fresh
    assert torch.allclose(outputs(model)[0], ours, atol=1e-5)
    runner.run(SaveTransformer, "half", {"model": lora_model}, name="half")
    assert {v.dtype for v in load_file(str(runner.workspace / "models" / "half.safetensors")).values()} == {
        torch.bfloat16}


def test_diffusers_folder_loads_with_from_pretrained_and_gives_the_same_outputs(lora_model, runner):
    from diffusers import FluxPipeline

    from nodes.flux.finetune import FinetuneSetup

    finetuned = runner.run(FinetuneSetup, "ft", {"model": build()}, train_text_encoder=True,
                           weight_dtype="float32")["adapted"]
    with torch.no_grad():
        for part in (finetuned.transformer, finetuned.text_encoder):
            for p in part.parameters():
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.01)
    for model, name in ((finetuned, "ft"), (lora_model, "fused")):
        runner.run(SaveDiffusers, f"folder_{name}", {"model": model}, name=name, dtype="float32")
        folder = FluxPipeline.from_pretrained(str(runner.workspace / "models" / name), local_files_only=True)
        for a, b in zip(outputs(folder), outputs(pipeline(model))):
            assert torch.allclose(a, b, atol=1e-5), name
    assert any(".lora_" in n for n, _ in lora_model.transformer.named_parameters())  # the live model keeps them


def test_flux_savers_refuse_another_familys_model(runner):
    from tests.train.helpers import make_toy

    for cls, node in ((SaveLora, "flux.save_lora"), (SaveDiffusers, "flux.save_diffusers"),
                      (SaveTransformer, "flux.save_transformer")):
        with pytest.raises(TypeError, match=f"{node} needs a FLUX.1 model, got a 'toy' model"):
            runner.run(cls, "save", {"model": make_toy()}, name="x")
    with pytest.raises(ValueError, match="no LoRA adapters: train it through flux.lora_setup"):
        runner.run(SaveLora, "save", {"model": build()}, name="x")
