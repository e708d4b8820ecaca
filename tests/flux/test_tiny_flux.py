"""The tiny Flux model, its text encoding (as FluxPipeline.encode_prompt) and predict (as FluxPipeline feeds
the transformer), and the assets it is built from."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import torch

PROMPT = "a red circle on a blue background"


@pytest.fixture(scope="module")
def dev():
    from nodes.flux.build import build_tiny

    return build_tiny(seed=0, variant="dev", guidance=3.5)


@pytest.fixture(scope="module")
def schnell():
    from nodes.flux.build import build_tiny

    return build_tiny(seed=0, variant="schnell")


def pipeline(model):
    from diffusers import FluxPipeline

    return FluxPipeline(scheduler=model.noise_scheduler, vae=model.vae, text_encoder=model.text_encoder,
                        tokenizer=model.tokenizer, text_encoder_2=model.text_encoder_2, tokenizer_2=model.tokenizer_2,
                        transformer=model.transformer)


def test_tiny_model_is_flux_shaped_deterministic_and_fast(dev, schnell):
    from nodes.flux.build import build_tiny

    start = time.perf_counter()
    again = build_tiny(seed=0, variant="dev")
    assert time.perf_counter() - start < 1.0
    other = build_tiny(seed=1, variant="dev")
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        a, b, c = (getattr(m, name).state_dict() for m in (dev, again, other))
        assert all(torch.equal(a[k], b[k]) for k in a), name
        assert not all(torch.equal(a[k], c[k]) for k in a), name
    t, vae = dev.transformer.config, dev.vae.config
    assert vae.latent_channels == 16 and (vae.scaling_factor, vae.shift_factor) == (0.3611, 0.1159)
    assert t.in_channels == 4 * vae.latent_channels and t.patch_size == 1
    assert t.joint_attention_dim == dev.text_encoder_2.config.d_model
    assert t.pooled_projection_dim == dev.text_encoder.config.hidden_size != t.joint_attention_dim
    assert sum(t.axes_dims_rope) == t.attention_head_dim
    assert len(dev.tokenizer_2) <= dev.text_encoder_2.config.vocab_size
    assert dev.variant == "dev" and dev.guidance_embeds and dev.version == "flux1-dev"
    assert schnell.variant == "schnell" and not schnell.guidance_embeds
    assert hasattr(dev.transformer.time_text_embed, "guidance_embedder")
    assert not hasattr(schnell.transformer.time_text_embed, "guidance_embedder")
    assert dev.noise_scheduler.config.use_dynamic_shifting and not schnell.noise_scheduler.config.use_dynamic_shifting


def test_the_tiny_model_node_gives_the_model_and_its_parts(runner):
    from nodes.flux.loaders import TinyModel

    out = runner.run(TinyModel, variant="schnell", seed=2, guidance=2.5)
    model = out["model"]
    assert model.variant == "schnell" and model.guidance == 2.5 and model.source == "tiny:flux:schnell:seed=2"
    assert out["vae"].module is model.vae and (out["vae"].scaling_factor, out["vae"].shift_factor) == (0.3611, 0.1159)
    assert out["text_encoder"].module is model.text_encoder and out["text_encoder_2"].module is model.text_encoder_2
    assert out["tokenizer_2"].tokenizer is model.tokenizer_2 and out["tokenizer_2"].max_length == 512
    assert len({out[k].fingerprint for k in ("vae", "text_encoder", "text_encoder_2", "tokenizer")}) == 4
    again = runner.run(TinyModel, variant="schnell", seed=2, guidance=2.5)
    assert again["vae"].fingerprint == out["vae"].fingerprint  # caches stay valid across runs
    assert runner.run(TinyModel, variant="dev", seed=2)["vae"].fingerprint != out["vae"].fingerprint


def test_assets_are_what_make_tiny_flux_writes(tmp_path):
    from nodes.flux.build import TINY_DIR

    subprocess.run([sys.executable, str(TINY_DIR / "make_tiny_flux.py"), str(tmp_path)], check=True, timeout=60)
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert len(written) == 11 and all((TINY_DIR / p).read_bytes() == (tmp_path / p).read_bytes() for p in written)
    assert json.loads((TINY_DIR / "model_index.json").read_text())["_class_name"] == "FluxPipeline"


def test_tokenizers_are_built_offline_in_t5_and_clip_ids(dev):
    t5 = dev.tokenizer_2
    assert (t5.pad_token_id, t5.eos_token_id, t5.unk_token_id) == (0, 1, 2)
    ids = t5("A cat, 12!").input_ids
    assert ids[-1] == 1 and 2 not in ids  # every printable character has a piece
    assert t5.decode(ids, skip_special_tokens=True) == "A cat, 12!"
    assert dev.tokenizer.model_max_length == 77 and t5.model_max_length == 512


@pytest.mark.parametrize("max_length", [512, 7])
def test_encode_text_equals_flux_pipeline_encode_prompt(dev, runner, max_length):
    from nodes.flux.encode import EncodeText, tokenize_both

    prompt = PROMPT if max_length == 512 else "abcdefghijklmnop"  # cut: T5's end mark must stay last
    embeds, pooled, text_ids = pipeline(dev).encode_prompt(prompt, device="cpu", max_sequence_length=max_length)
    clip_ids, t5_ids = tokenize_both(dev.tokenizer, dev.tokenizer_2, [prompt], 512)  # sd.tokenize's lengths
    stage = EncodeText()
    stage.max_length = max_length
    te1, te2 = dev.text_encoder_parts()
    stage.setup(None, te1, te2)
    out = stage.process(None, clip_ids[0], t5_ids[0], te1, te2)
    assert out["t5_embedding"].shape == (max_length, 48) and out["pooled_embedding"].shape == (32,)
    assert torch.allclose(out["t5_embedding"], embeds[0], atol=1e-6)
    assert torch.allclose(out["pooled_embedding"], pooled[0], atol=1e-6)
    assert text_ids.shape == (max_length, 3) and not text_ids.any()


def test_encode_text_refuses_swapped_encoders(dev):
    from nodes.flux.encode import EncodeText

    te1, te2 = dev.text_encoder_parts()
    with pytest.raises(TypeError, match="'text_encoder' must be CLIP-L and 'text_encoder_2' T5"):
        EncodeText().setup(None, te2, te1)


def pipeline_transformer_call(model, noisy, sigmas, t5, pooled, guidance):
    """What FluxPipeline does with latents at a step: pack, ids, timestep = sigma, guidance for dev, unpack."""
    from diffusers import FluxPipeline

    b, c, h, w = noisy.shape
    packed = FluxPipeline._pack_latents(noisy, b, c, h, w)
    img_ids = FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, noisy.device, noisy.dtype)
    txt_ids = torch.zeros(t5.shape[1], 3)
    g = None if guidance is None else torch.full((b,), guidance)
    with torch.no_grad():
        out = model.transformer(hidden_states=packed, timestep=sigmas, guidance=g, pooled_projections=pooled,
                                encoder_hidden_states=t5, txt_ids=txt_ids, img_ids=img_ids, return_dict=False)[0]
    scale = 2 ** (len(model.vae.config.block_out_channels) - 1)
    return FluxPipeline._unpack_latents(out, h * scale, w * scale, scale)


@pytest.mark.parametrize("variant", ["dev", "schnell"])
def test_predict_is_the_transformer_on_flux_pipelines_packed_latents(dev, schnell, variant):
    model = dev if variant == "dev" else schnell
    g = torch.Generator().manual_seed(0)
    noisy = torch.randn(2, 16, 6, 4, generator=g)  # not square: rows and columns must not swap
    sigmas = torch.tensor([0.25, 0.9])
    batch = {"t5_embedding": torch.randn(2, 5, 48, generator=g), "pooled_embedding": torch.randn(2, 32, generator=g)}
    with torch.no_grad():
        ours = model.predict(noisy, sigmas, batch)
    theirs = pipeline_transformer_call(model, noisy, sigmas, batch["t5_embedding"], batch["pooled_embedding"],
                                       model.guidance if variant == "dev" else None)
    assert ours.shape == noisy.shape and torch.allclose(ours, theirs, atol=1e-6)
    if variant == "dev":  # the guidance value reaches the transformer
        other = pipeline_transformer_call(model, noisy, sigmas, batch["t5_embedding"], batch["pooled_embedding"], 1.0)
        assert not torch.allclose(ours, other, atol=1e-4)


def test_packing_round_trips_and_matches_the_pipeline():
    from diffusers import FluxPipeline

    from nodes.flux.model import image_ids, pack_latents, unpack_latents

    x = torch.randn(2, 16, 6, 4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(pack_latents(x), FluxPipeline._pack_latents(x, 2, 16, 6, 4))
    assert torch.equal(unpack_latents(pack_latents(x), 6, 4), x)
    assert torch.equal(image_ids(3, 2), FluxPipeline._prepare_latent_image_ids(2, 3, 2, "cpu", torch.float32))


def test_a_batch_without_t5_or_pooled_or_odd_latents_says_how_to_feed_it(dev):
    batch = {"latent": torch.zeros(1, 16, 4, 4), "pooled_embedding": torch.zeros(1, 32)}
    with pytest.raises(ValueError, match="no field 't5_embedding'.*flux.encode_text"):
        dev.predict(torch.zeros(1, 16, 4, 4), torch.tensor([0.5]), batch)
    batch = {"latent": torch.zeros(1, 16, 4, 4), "t5_embedding": torch.zeros(1, 3, 48)}
    with pytest.raises(ValueError, match="no field 'pooled_embedding'.*flux.encode_text"):
        dev.predict(torch.zeros(1, 16, 4, 4), torch.tensor([0.5]), batch)
    with pytest.raises(ValueError, match="even height and width.*quantization to 16"):
        dev.latents({"latent": torch.zeros(1, 16, 5, 4)})


def test_another_familys_model_is_refused_in_one_line(dev):
    from nodes.flux.model import check_flux_model
    from nodes.sdxl.build import build_tiny

    assert check_flux_model(dev, "flux.x") is dev
    with pytest.raises(TypeError, match="flux.x needs a FLUX.1 model, got a 'sdxl' model"):
        check_flux_model(build_tiny(0), "flux.x")
