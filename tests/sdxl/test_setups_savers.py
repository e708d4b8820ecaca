"""SDXL LoRA and fine-tune setups, and the savers, checked with diffusers' own loaders."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from nodes.sdxl.finetune import FinetuneSetup
from nodes.sdxl.lora import LoraSetup
from nodes.sdxl.savers import SaveCheckpoint, SaveDiffusers, SaveLora

PROMPT = "a red circle on a blue background"


def build():
    from nodes.sdxl.build import build_tiny

    return build_tiny(seed=0)


def randomize_lora(model, seed: int = 1):
    """Non-zero LoRA B weights (a fresh adapter is a no-op), as after training."""
    g = torch.Generator().manual_seed(seed)
    for part in model.lora.parts:
        for name, p in getattr(model, part).named_parameters():
            if "lora_B" in name:
                with torch.no_grad():
                    p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def pipeline(model):
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    from nodes.placeholder_tokens import plain_tokenizer

    return StableDiffusionXLPipeline(vae=model.vae, text_encoder=model.text_encoder,
                                     text_encoder_2=model.text_encoder_2, tokenizer=plain_tokenizer(model.tokenizer),
                                     tokenizer_2=plain_tokenizer(model.tokenizer_2), unet=model.unet,
                                     scheduler=EulerDiscreteScheduler.from_config(model.noise_scheduler.config))


def outputs(pipe, seed: int = 0):
    """The UNet's prediction for a fixed noisy latent, the prompt's conditioning and pooled embedding."""
    with torch.no_grad():
        cond, _, pooled, _ = pipe.encode_prompt(PROMPT, device="cpu", num_images_per_prompt=1,
                                                do_classifier_free_guidance=False)
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(1, 4, 8, 8, generator=g)
        time_ids = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]])
        pred = pipe.unet(x, torch.tensor([500]), encoder_hidden_states=cond,
                         added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample
    return pred, cond, pooled


def keys(path):
    with safe_open(str(path), framework="pt") as f:
        return set(f.keys()), dict(f.metadata())


@pytest.fixture(scope="module")
def lora_model(tmp_path_factory):
    from tests.train.helpers import NodeRunner

    runner = NodeRunner(tmp_path_factory.mktemp("lora"))
    adapted = runner.run(LoraSetup, "lora", {"model": build()}, rank=4, alpha=8.0, targets="attn-mlp",
                         text_encoders="both")["adapted"]
    randomize_lora(adapted)
    return adapted


def test_lora_setup_adapts_the_unet_and_both_text_encoders_and_only_adapters_train(lora_model):
    assert lora_model.lora.parts == ("unet", "text_encoder", "text_encoder_2") and lora_model.train_text_encoder
    trained = dict(lora_model.named_trainable_parameters())
    assert trained and all(".lora_" in n for n in trained)
    assert {n.split(".", 1)[0] for n in trained} == {"unet", "text_encoder", "text_encoder_2"}
    assert all(p.dtype == torch.float32 for p in trained.values())


def test_lora_setup_with_a_text_encoder_trains_from_tokens_of_both_tokenizers(lora_model):
    from nodes.sd.text import tokenize
    from nodes.train.objective import DiffusionObjective

    m = lora_model
    latent = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    batch = {"latent": latent, "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]] * 2),
             "tokens": tokenize(m.tokenizer, [PROMPT] * 2), "tokens_2": tokenize(m.tokenizer_2, [PROMPT] * 2)}
    loss, _ = DiffusionObjective().loss(m, batch, torch.Generator().manual_seed(0))
    loss.backward()
    grads = {n.split(".", 1)[0] for n, p in m.named_trainable_parameters() if p.grad is not None and p.grad.abs().sum()}
    assert grads == {"unet", "text_encoder", "text_encoder_2"}
    m.unet.zero_grad(), m.text_encoder.zero_grad(), m.text_encoder_2.zero_grad()
    with pytest.raises(ValueError, match="no field 'tokens_2'.*tokenizer_2"):
        m.predict(torch.zeros(1, 4, 8, 8), torch.tensor([1]), {k: v[:1] for k, v in batch.items() if k != "tokens_2"})


def configured(cls, **params):
    """A node instance with its params' defaults and ``params`` set, as the executor makes it."""
    node = cls()
    for name, param in cls.__node_spec__.params.items():
        setattr(node, name, params.get(name, param.default))
    return node


def test_the_setup_asks_the_batches_for_what_it_trains_on():
    assert set(configured(LoraSetup).needed_batch_fields()) == {"embedding", "pooled_embedding"}
    assert set(configured(LoraSetup, text_encoders="second").needed_batch_fields()) == {"tokens", "tokens_2"}
    assert set(configured(FinetuneSetup).needed_batch_fields()) == {"embedding", "pooled_embedding"}
    assert set(configured(FinetuneSetup, train_text_encoder_2=True).needed_batch_fields()) == {"tokens", "tokens_2"}


@pytest.mark.parametrize("formats,suffix", [("kohya", ".safetensors"), ("diffusers", ".diffusers.safetensors")])
def test_both_lora_formats_load_with_load_lora_weights_every_key_consumed(lora_model, runner, formats, suffix, capfd):
    from diffusers.utils import logging as dlog

    runner.run(SaveLora, "save", {"model": lora_model}, name="lora", formats=formats, dtype="float32")
    path = runner.workspace / "lora" / f"lora{suffix}"
    names, meta = keys(path)
    if formats == "kohya":  # kohya's sd-scripts names: SGM blocks, two text encoders
        assert any(k.startswith("lora_unet_input_blocks_") for k in names)
        assert not any("down_blocks" in k or "up_blocks" in k for k in names)
        assert any(k.startswith("lora_te1_text_model_encoder_layers_") for k in names)
        assert any(k.startswith("lora_te2_text_model_encoder_layers_") for k in names)
        alphas = {k for k in names if k.endswith(".alpha")}
        with safe_open(str(path), framework="pt") as f:
            assert {float(f.get_tensor(k)) for k in alphas} == {8.0}
    else:
        assert {k.split(".", 1)[0] for k in names} == {"unet", "text_encoder", "text_encoder_2"}
    assert meta["ss_network_dim"] == "4" and meta["modelspec.architecture"].startswith("stable-diffusion-xl")

    ours = outputs(pipeline(lora_model))
    base = build()
    pipe = pipeline(base)
    before = outputs(pipe)
    in_file = sum(1 for k in names if k.endswith((".lora_down.weight", ".lora_A.weight")))
    capfd.readouterr()
    dlog.set_verbosity_warning()
    try:
        pipe.load_lora_weights(str(path))
    finally:
        dlog.set_verbosity_error()
    said = capfd.readouterr().err.lower()
    assert "unexpected" not in said and "not found" not in said and "missing" not in said, said[-2000:]

    def adapted(parts, adapter):
        return sum(1 for part in parts for n, _ in part.named_modules() if n.endswith(f"lora_A.{adapter}"))

    parts = (pipe.unet, pipe.text_encoder, pipe.text_encoder_2)
    trained = adapted((lora_model.unet, lora_model.text_encoder, lora_model.text_encoder_2), "default")
    assert adapted(parts, "default_0") == in_file == trained  # every layer of the file found its place
    after = outputs(pipe)
    for a, b, c in zip(before, after, ours):
        assert not torch.allclose(a, b, atol=1e-5)  # the LoRA changes the outputs ...
        assert torch.allclose(b, c, atol=1e-4)  # ... exactly as trained


def test_lora_outside_the_unet_blocks_is_left_out_of_the_kohya_file_with_a_warning(runner):
    adapted = runner.run(LoraSetup, "lora", {"model": build()}, rank=2, targets="all-linear")["adapted"]
    runner.run(SaveLora, "save", {"model": adapted}, name="wide", formats="both")
    [warning] = [e for e in runner.events("log") if e.get("level") == "warning"]
    assert "time_embedding" in warning["message"] and "add_embedding" in warning["message"]
    kohya, _ = keys(runner.workspace / "lora" / "wide.safetensors")
    diffusers, _ = keys(runner.workspace / "lora" / "wide.diffusers.safetensors")
    assert not any("time_embed" in k or "label_emb" in k for k in kohya)
    assert any(k.startswith("unet.add_embedding.") for k in diffusers)


def test_sdxl_savers_refuse_another_familys_model(runner):
    from nodes.sd.build import build_tiny

    with pytest.raises(TypeError, match="sdxl.save_lora needs a Stable Diffusion XL model, got a 'sd' model"):
        runner.run(SaveLora, "save", {"model": build_tiny(seed=0)}, name="x")


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    from tests.train.helpers import NodeRunner

    runner = NodeRunner(tmp_path_factory.mktemp("ft"))
    model = runner.run(FinetuneSetup, "ft", {"model": build()}, train_text_encoder_2=True, unet_lr=1e-5,
                       text_encoder_2_lr=1e-6)["adapted"]
    with torch.no_grad():
        for part in (model.unet, model.text_encoder_2):
            for p in part.parameters():
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.01)
    return model


def test_finetune_trains_the_chosen_parts_each_with_its_learning_rate(finetuned):
    groups = {g["name"]: g.get("lr") for g in finetuned.param_groups()}
    assert groups == {"unet": 1e-5, "text_encoder_2": 1e-6}
    assert not any(p.requires_grad for p in finetuned.text_encoder.parameters())
    assert not any(p.requires_grad for p in finetuned.vae.parameters())


def test_diffusers_folder_and_single_file_load_and_give_the_same_outputs(finetuned, lora_model, runner):
    from diffusers import StableDiffusionXLPipeline

    from nodes.sdxl.build import TINY_DIR

    for model, name in ((finetuned, "ft"), (lora_model, "fused")):
        runner.run(SaveDiffusers, f"folder_{name}", {"model": model}, name=name, dtype="float32")
        runner.run(SaveCheckpoint, f"file_{name}", {"model": model}, name=name, dtype="float32")
        folder = StableDiffusionXLPipeline.from_pretrained(str(runner.workspace / "models" / name),
                                                           local_files_only=True)
        single = StableDiffusionXLPipeline.from_single_file(str(runner.workspace / "models" / f"{name}.safetensors"),
                                                            config=str(TINY_DIR), local_files_only=True)
        ours = outputs(pipeline(model))
        for a, b, c in zip(outputs(folder), outputs(single), ours):
            assert torch.allclose(a, b, atol=1e-5) and torch.allclose(a, c, atol=1e-4), name
    assert lora_model.lora is not None and any(".lora_" in n for n, _ in lora_model.unet.named_parameters())
