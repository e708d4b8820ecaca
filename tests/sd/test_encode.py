"""sd.encode_image, sd.tokenize and sd.encode_text on the data engine, with and without a cache."""

from __future__ import annotations

import pytest
import torch

from runtime.paths import ASSETS_DIR

GRAPH = """format: nodetrainer.graph/1
name: encode test
nodes:
  model:
    type: sd.tiny_model@1
  concept:
    type: data.concept@1
    params: {{folder: {dataset}}}
  source:
    type: data.concepts@1
    in: {{concepts: [concept.concept]}}
  bucket:
    type: data.aspect_bucket@1
    in: {{size: source.size}}
    params: {{resolution: 32, quantization: 16}}
  load:
    type: data.load_image@1
    in: {{path: source.path}}
  crop:
    type: data.scale_crop@1
    in: {{image: load.image, bucket: bucket.bucket}}
  tensor:
    type: data.to_tensor@1
    in: {{image: crop.image}}
  encode_image:
    type: sd.encode_image@1
    in: {{image: tensor.image, vae: model.vae}}
    params: {{mode: {mode}}}
  tokenize:
    type: sd.tokenize@1
    in: {{caption: source.caption, tokenizer: model.tokenizer}}
  encode_text:
    type: sd.encode_text@1
    in: {{tokens: tokenize.tokens, text_encoder: model.text_encoder}}
    params: {{clip_skip: {clip_skip}}}
{cache}  batches:
    type: data.batches@1
    in: {{fields: {fields}, bucket: bucket.bucket}}
    params: {{batch_size: 4, seed: 1}}
"""
CACHE = """  cache:
    type: data.ram_cache@2
    in: {fields: [encode_image.latent, encode_text.embedding, tokenize.tokens]}
"""


def data_graph(registry, tmp_path, cached=True, mode="mean", clip_skip=0):
    """Run the graph up to the batches node; return (batch source, tiny model)."""
    from runtime.executor import execute
    from runtime.graph_file import loads_graph
    from runtime.validate import validate

    fields = "[cache.latent, cache.embedding, cache.tokens]" if cached else \
        "[encode_image.latent, encode_text.embedding, tokenize.tokens]"
    text = GRAPH.format(dataset=ASSETS_DIR / "demo_dataset", cache=CACHE if cached else "", fields=fields, mode=mode,
                        clip_skip=clip_skip)
    v = validate(loads_graph(text, registry), registry)  # no sink: runs a target, not the whole graph
    assert v.ok, v.problems
    r = execute(v, workspace=tmp_path, targets=("batches",), keep=("batches", "model"))
    assert r.ok, r.error
    return r.outputs["batches"]["batches"], r.outputs["model"]["model"]


def count_calls(module) -> list:
    calls = []
    module.register_forward_hook(lambda *a: calls.append(1))
    return calls


def test_cache_runs_the_vae_and_text_encoder_once(registry, tmp_path):
    source, model = data_graph(registry, tmp_path)
    vae_calls, te_calls = count_calls(model.vae.encoder), count_calls(model.text_encoder)
    first = list(source.epoch(0))
    assert len(vae_calls) == 8 and len(te_calls) == 8  # once per image and caption
    second = list(source.epoch(1))
    assert len(vae_calls) == 8 and len(te_calls) == 8  # epoch 2 reads the cache: no VAE, no text encoder
    assert sum(len(b["_index"]) for b in second) == 8
    by_index = {i: b["latent"][k] for b in first for k, i in enumerate(b["_index"])}
    for b in second:
        for k, i in enumerate(b["_index"]):
            assert torch.equal(b["latent"][k], by_index[i])
    assert set(first[0]) >= {"latent", "embedding", "tokens", "_index"}


def test_without_a_cache_the_vae_runs_every_epoch(registry, tmp_path):
    source, model = data_graph(registry, tmp_path, cached=False)
    vae_calls = count_calls(model.vae.encoder)
    list(source.epoch(0))
    list(source.epoch(1))
    assert len(vae_calls) == 16


def test_encoded_fields_match_the_models_own_encoding(registry, tmp_path):
    from nodes.sd.text import encode_tokens

    source, model = data_graph(registry, tmp_path, cached=False)
    batch = next(iter(source.epoch(0)))
    n, c, h, w = batch["latent"].shape
    assert c == 4 and batch["embedding"].shape == (n, 77, 32) and batch["tokens"].shape == (n, 77)
    assert batch["tokens"].dtype == torch.long and (batch["tokens"][:, 0] == model.tokenizer.bos_token_id).all()
    with torch.no_grad():
        emb = encode_tokens(model.text_encoder, batch["tokens"])
    torch.testing.assert_close(batch["embedding"], emb)
    # the latent is the VAE mean times the scaling factor: decoding it gives an image of the bucket size
    with torch.no_grad():
        image = model.vae.decode(batch["latent"] / model.vae.config.scaling_factor).sample
    assert image.shape[-2:] == (h * 2, w * 2)  # the tiny VAE downsamples by 2


def test_clip_skip_uses_an_earlier_layer_and_sample_mode_draws(registry, tmp_path):
    plain, _ = data_graph(registry, tmp_path / "a", cached=False)
    skipped, model = data_graph(registry, tmp_path / "b", cached=False, clip_skip=1, mode="sample")
    a, b = next(iter(plain.epoch(0))), next(iter(skipped.epoch(0)))
    assert a["_index"] == b["_index"]
    with torch.no_grad():
        hidden = model.text_encoder(b["tokens"], output_hidden_states=True).hidden_states[-2]
        expected = model.text_encoder.final_layer_norm(hidden)
    torch.testing.assert_close(b["embedding"], expected)
    assert not torch.allclose(a["embedding"], b["embedding"])
    assert not torch.allclose(a["latent"], b["latent"])  # a sample of the distribution, not its mean
    again = next(iter(skipped.epoch(0)))
    torch.testing.assert_close(again["latent"], b["latent"])  # seeded per (epoch, item): reproducible


def test_wrong_value_inputs_and_missing_fields_are_explained(registry, tmp_path):
    from nodes.sd.build import build_tiny
    from nodes.sd.encode import EncodeImage

    with pytest.raises(TypeError, match="input 'vae' must come from an SD model loader's 'vae' output"):
        EncodeImage().setup(None, vae=object())
    model = build_tiny()
    with pytest.raises(ValueError, match=r"no field 'embedding' \(they have: latent\); connect sd.encode_text"):
        model.conditioning({"latent": torch.zeros(1, 4, 8, 8)})
    model.train_text_encoder = True
    with pytest.raises(ValueError, match="the text encoder is trained, so connect sd.tokenize's 'tokens'"):
        model.conditioning({"latent": torch.zeros(1, 4, 8, 8), "embedding": torch.zeros(1, 77, 32)})
