"""The tiny SDXL model, its text and size conditioning, and a data graph that feeds its UNet."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from runtime.events import EventBus, ListSink
from runtime.executor import execute
from runtime.graph_file import load_graph
from runtime.registry import default_registry
from runtime.validate import validate

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def tiny():
    from nodes.sdxl.build import build_tiny

    return build_tiny(seed=0)


def test_tiny_model_is_sdxl_shaped_and_deterministic(tiny):
    from nodes.sdxl.build import build_tiny

    again, other = build_tiny(seed=0), build_tiny(seed=1)
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        a, b, c = (getattr(m, name).state_dict() for m in (tiny, again, other))
        assert all(torch.equal(a[k], b[k]) for k in a), name
        assert not all(torch.equal(a[k], c[k]) for k in a), name
    te1, te2 = tiny.text_encoder.config.hidden_size, tiny.text_encoder_2.config.hidden_size
    assert te1 != te2  # diffusers' single-file loader tells the two encoders apart by width
    assert tiny.unet.config.cross_attention_dim == te1 + te2
    add_in = tiny.unet.add_embedding.linear_1.in_features
    assert add_in == 6 * tiny.unet.config.addition_time_embed_dim + tiny.text_encoder_2.config.projection_dim


def test_text_conditioning_matches_the_diffusers_sdxl_pipeline(tiny):
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    from nodes.sd.text import tokenize
    from nodes.sdxl.encode import encode_both

    pipe = StableDiffusionXLPipeline(vae=tiny.vae, text_encoder=tiny.text_encoder,
                                     text_encoder_2=tiny.text_encoder_2, tokenizer=tiny.tokenizer,
                                     tokenizer_2=tiny.tokenizer_2, unet=tiny.unet,
                                     scheduler=EulerDiscreteScheduler.from_config(tiny.noise_scheduler.config))
    prompt = "a red circle on a blue background"
    embeds, _, pooled, _ = pipe.encode_prompt(prompt, device="cpu", num_images_per_prompt=1,
                                              do_classifier_free_guidance=False)
    with torch.no_grad():
        ours, our_pooled = encode_both(tiny.text_encoder, tiny.text_encoder_2, tokenize(tiny.tokenizer, [prompt]),
                                       tokenize(tiny.tokenizer_2, [prompt]))
    assert torch.allclose(ours, embeds, atol=1e-6) and torch.allclose(our_pooled, pooled, atol=1e-6)
    skipped, _ = pipe.encode_prompt(prompt, device="cpu", num_images_per_prompt=1,
                                    do_classifier_free_guidance=False, clip_skip=1)[:2]
    with torch.no_grad():
        ours_skipped, _ = encode_both(tiny.text_encoder, tiny.text_encoder_2, tokenize(tiny.tokenizer, [prompt]),
                                      tokenize(tiny.tokenizer_2, [prompt]), clip_skip=1)
    assert torch.allclose(ours_skipped, skipped, atol=1e-6) and not torch.allclose(ours_skipped, ours)


def test_time_ids_are_in_the_order_sdxl_was_trained_with():
    from nodes.sdxl.encode import time_ids

    # (width, height) of the file, (x, y) of the crop, (width, height) of the bucket
    assert time_ids((640, 480), (10, 20), (512, 384)) == [480.0, 640.0, 20.0, 10.0, 384.0, 512.0]


def test_data_graph_feeds_the_unet_and_the_loss_trains_it(tmp_path):
    from nodes.train.objective import DiffusionObjective

    reg = default_registry()
    v = validate(load_graph(HERE / "data_graph.yaml", reg), reg)
    assert v.ok, [str(p) for p in v.problems]
    r = execute(v, workspace=tmp_path, bus=EventBus([ListSink()]), targets=("batches",), keep=("model", "batches"))
    assert r.ok, r.error
    model, source = r.outputs["model"]["model"], r.outputs["batches"]["batches"]
    batches = list(source.epoch(0))
    assert sum(len(b["latent"]) for b in batches) == 8  # the demo dataset
    for batch in batches:
        n, (bw, bh) = len(batch["latent"]), batch["bucket"][0]
        assert batch["latent"].shape == (n, 4, bh // 2, bw // 2)
        assert batch["embedding"].shape == (n, 77, 80) and batch["pooled_embedding"].shape == (n, 48)
        for i in range(n):
            (w, h), (x, y) = batch["size"][i], batch["crop_offset"][i]
            assert batch["time_ids"][i].tolist() == [h, w, y, x, bh, bw]
    model.unet.requires_grad_(True)
    loss, _ = DiffusionObjective().loss(model, batches[0], torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and model.unet.conv_in.weight.grad.abs().sum() > 0
    assert model.unet.add_embedding.linear_1.weight.grad.abs().sum() > 0  # the pooled + size conditioning reach it


def test_a_batch_without_size_conditioning_says_how_to_feed_it(tiny):
    batch = {"latent": torch.zeros(1, 4, 8, 8), "embedding": torch.zeros(1, 77, 80),
             "pooled_embedding": torch.zeros(1, 48)}
    with pytest.raises(ValueError, match="no field 'time_ids'.*sdxl.size_conditioning"):
        tiny.predict(torch.zeros(1, 4, 8, 8), torch.tensor([1]), batch)


def test_the_shared_lora_presets_select_the_sdxl_attention_and_text_layers(tiny):
    from nodes.lora_targets import TEXT_PRESETS, UNET_PRESETS, target_modules

    attn = target_modules(tiny.unet, "attn", None, UNET_PRESETS)
    blocks = [m for n, m in tiny.unet.named_modules() if n.endswith(("attn1", "attn2"))]
    assert len(attn) == 4 * len(blocks) > 0 and all(n.rsplit(".", 2)[-2] in ("attn1", "attn2")
                                                    or n.endswith("to_out.0") for n in attn)
    wider = target_modules(tiny.unet, "attn-mlp", None, UNET_PRESETS)
    assert set(attn) < set(wider) and any(n.endswith("ff.net.2") for n in wider)
    for encoder in (tiny.text_encoder, tiny.text_encoder_2):
        names = target_modules(encoder, "attn", None, TEXT_PRESETS)
        assert len(names) == 4 * encoder.config.num_hidden_layers
