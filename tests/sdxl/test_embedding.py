"""SDXL textual inversion: sdxl.embedding_setup adds the placeholder to both tokenizers and encoders, a graph
trains only those rows, sdxl.save_embedding writes clip_l / clip_g, and diffusers' loader reads that file into
both encoders and encodes prompts exactly as our model does."""

from __future__ import annotations

import copy

import pytest
import torch
import yaml

from nodes.sdxl.build import build_tiny
from nodes.sdxl.embedding import EmbeddingSetup
from nodes.sdxl.embedding_files import SaveEmbedding
from runtime.events import EventBus, ListSink
from runtime.executor import execute
from runtime.graph_file import loads_graph
from runtime.paths import ASSETS_DIR
from runtime.registry import default_registry
from runtime.validate import validate

ENCODERS = ("text_encoder", "text_encoder_2")
EMB_KEYS = {"text_encoder": "embeddings.token_embedding.weight",
            "text_encoder_2": "text_model.embeddings.token_embedding.weight"}
PROMPT = "a photo of <shape> on blue"

GRAPH = f"""
format: nodetrainer.graph/1
name: SDXL embedding (test)
nodes:
  model: {{type: sdxl.tiny_model@1}}
  concept: {{type: data.concept@1, params: {{folder: '{ASSETS_DIR / "demo_dataset"}'}}}}
  source: {{type: data.concepts@1, in: {{concepts: [concept.concept]}}}}
  bucket: {{type: data.aspect_bucket@1, in: {{size: source.size}}, params: {{resolution: 32, quantization: 16}}}}
  load: {{type: data.load_image@1, in: {{path: source.path, bucket: bucket.bucket}}}}
  crop: {{type: data.scale_crop@1, in: {{image: load.image, bucket: bucket.bucket}}}}
  tensor: {{type: data.to_tensor@1, in: {{image: crop.image}}}}
  encode_image: {{type: sd.encode_image@1, in: {{image: tensor.image, vae: model.vae}}}}
  sizes:
    type: sdxl.size_conditioning@1
    in: {{size: source.size, crop_offset: crop.crop_offset, bucket: bucket.bucket}}
  embedding:
    type: sdxl.embedding_setup@1
    in: {{model: model.model}}
    params: {{placeholder: <shape>, initial_text: red circle, vectors: 2}}
  trigger:
    type: data.replace_text@1
    in: {{caption: source.caption}}
    params: {{find: '^(?!.*<shape>)', replace: 'a photo of <shape>, ', regex: true}}
  tokenize: {{type: sd.tokenize@1, in: {{caption: trigger.caption, tokenizer: embedding.tokenizer}}}}
  tokenize_2: {{type: sd.tokenize@1, in: {{caption: trigger.caption, tokenizer: embedding.tokenizer_2}}}}
  cache:
    type: data.ram_cache@2
    in: {{fields: [encode_image.latent, sizes.time_ids, tokenize.tokens, tokenize_2.tokens]}}
    params: {{rename: [tokenize_2.tokens=tokens_2]}}
  batches:
    type: data.batches@1
    in: {{fields: [cache.latent, cache.time_ids, cache.tokens, cache.tokens_2], bucket: bucket.bucket}}
    params: {{batch_size: 2, seed: 3}}
  optimizer: {{type: train.optimizer@1, params: {{name: adamw, lr: 0.05, weight_decay: 0.0}}}}
  objective: {{type: train.diffusion_objective@1}}
  periodic: {{type: sdxl.save_embedding@1}}
  save_hook: {{type: train.save_hook@1, in: {{savers: [periodic.saver]}}, params: {{every: 2}}}}
  train:
    type: train.loop@1
    in: {{model: embedding.adapted, batches: batches.batches, optimizer: optimizer.optimizer,
         objective: objective.objective, hooks: [save_hook.hook]}}
    params: {{max_steps: 3, device: cpu, seed: 5}}
  save: {{type: sdxl.save_embedding@1, in: {{model: train.trained}}}}
"""


def snapshot(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def validated(graph: dict):
    registry = default_registry()
    return validate(loads_graph(yaml.safe_dump(graph, sort_keys=False), registry), registry, for_run=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The test graph run once: ``(trained model, workspace, events sink)``."""
    ws = tmp_path_factory.mktemp("sdxl-embedding")
    v = validated(yaml.safe_load(GRAPH))
    assert v.ok, [str(p) for p in v.problems]
    sink = ListSink()
    result = execute(v, workspace=ws, bus=EventBus([sink]), graph_name="SDXL embedding (test)", keep=("train",))
    assert result.ok, result.error
    return result.outputs["train"]["trained"], ws, sink


def read(path):
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


# -- the graph ------------------------------------------------------------------------------------

def test_the_graph_trains_only_the_placeholder_rows_of_both_encoders(trained):
    model, _, sink = trained
    base = build_tiny(seed=0)
    info = model.embedding
    assert info.tokens == ["<shape>", "<shape>_1"]
    losses = [e["loss"] for e in sink.of("progress") if e.get("node") == "train"]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(x)) for x in losses)
    for name, ids in (("text_encoder", info.token_ids), ("text_encoder_2", info.token_ids_2)):
        before, after, key = snapshot(getattr(base, name)), snapshot(getattr(model, name)), EMB_KEYS[name]
        assert after.keys() == before.keys(), name  # a plain CLIP state dict, the trained rows filled in
        vectors = getattr(model, name).get_input_embeddings().vectors.detach()
        assert torch.equal(after[key][ids], vectors), name
        assert all(not torch.equal(vectors[i], before[key][ids[i]]) for i in range(2)), name  # each vector learned
        others = [i for i in range(after[key].shape[0]) if i not in ids]
        assert torch.equal(after[key][others], before[key][others]), name
        assert all(torch.equal(after[k], before[k]) for k in after if k != key), name
    assert same(snapshot(model.unet), snapshot(base.unet)) and same(snapshot(model.vae), snapshot(base.vae))


def test_the_file_holds_exactly_clip_l_and_clip_g_and_periodic_saves_work(trained):
    model, ws, sink = trained
    path = ws / "embeddings" / "shape.safetensors"  # named after the placeholder, as A1111 wants
    tensors, meta = read(path)
    assert sorted(tensors) == ["clip_g", "clip_l"]
    assert tensors["clip_l"].shape == (2, 32) and tensors["clip_g"].shape == (2, 48)  # CLIP-L and CLIP-G widths
    assert tensors["clip_l"].dtype == torch.float32
    assert torch.equal(tensors["clip_l"], model.text_encoder.get_input_embeddings().vectors.detach())
    assert torch.equal(tensors["clip_g"], model.text_encoder_2.get_input_embeddings().vectors.detach())
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/textual-inversion"
    assert meta["nodetrainer_placeholder"] == "<shape>" and meta["nodetrainer_tokens"] == "<shape> <shape>_1"
    assert meta["nodetrainer_initial_text"] == "red circle" and meta["nodetrainer_steps"] == "3"
    saved = {e["node"]: e for e in sink.of("saved")}
    assert saved["save"]["path"] == str(path) and saved["save"]["format"] == "sdxl_embedding"
    assert saved["save"]["vectors"] == 2
    periodic = ws / "embeddings" / "shape-step000002.safetensors"
    assert saved["train"]["path"] == str(periodic) and saved["train"]["steps"] == 2  # the save hook's file
    assert sorted(read(periodic)[0]) == ["clip_g", "clip_l"] and read(periodic)[1]["nodetrainer_steps"] == "2"


def test_the_loop_refuses_batches_without_the_second_tokens():
    graph = yaml.safe_load(GRAPH)
    graph["nodes"]["batches"]["in"]["fields"].remove("cache.tokens_2")
    problems = [str(p) for p in validated(graph).problems]
    assert any("'embedding' (sdxl.embedding_setup) needs the batch field 'tokens_2'" in p and "tokenizer_2" in p
               for p in problems), problems


# -- interop with diffusers ---------------------------------------------------------------------------

def test_diffusers_loads_the_file_into_both_encoders_and_encodes_prompts_as_we_do(trained):
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from safetensors.torch import load_file

    from nodes.sd.text import tokenize
    from nodes.sdxl.encode import encode_both

    model, ws, _ = trained
    fresh = build_tiny(seed=0)
    pipe = StableDiffusionXLPipeline(vae=fresh.vae, text_encoder=fresh.text_encoder,
                                     text_encoder_2=fresh.text_encoder_2, tokenizer=fresh.tokenizer,
                                     tokenizer_2=fresh.tokenizer_2, unet=fresh.unet,
                                     scheduler=EulerDiscreteScheduler.from_config(fresh.noise_scheduler.config))
    file = load_file(str(ws / "embeddings" / "shape.safetensors"))
    # as diffusers' docs load SDXL embeddings: one tensor per encoder, the same token
    pipe.load_textual_inversion(file["clip_l"], token="<shape>", text_encoder=pipe.text_encoder,
                                tokenizer=pipe.tokenizer)
    pipe.load_textual_inversion(file["clip_g"], token="<shape>", text_encoder=pipe.text_encoder_2,
                                tokenizer=pipe.tokenizer_2)
    info = model.embedding
    for name, encoder, tokenizer, ids in (("text_encoder", pipe.text_encoder, pipe.tokenizer, info.token_ids),
                                          ("text_encoder_2", pipe.text_encoder_2, pipe.tokenizer_2, info.token_ids_2)):
        assert tokenizer.convert_tokens_to_ids(info.tokens) == ids  # same tokens, same ids as ours
        ours = getattr(model, name).get_input_embeddings().vectors.detach()
        assert torch.equal(encoder.get_input_embeddings().weight[ids].detach(), ours), name

    theirs, _, pooled, _ = pipe.encode_prompt(PROMPT, device="cpu", num_images_per_prompt=1,
                                              do_classifier_free_guidance=False)
    with torch.no_grad():
        ours, our_pooled = encode_both(model.text_encoder, model.text_encoder_2, tokenize(model.tokenizer, [PROMPT]),
                                       tokenize(model.tokenizer_2, [PROMPT]))
    torch.testing.assert_close(theirs, ours)
    torch.testing.assert_close(pooled, our_pooled)
    plain, _, _, _ = pipe.encode_prompt("a photo of on blue", device="cpu", num_images_per_prompt=1,
                                        do_classifier_free_guidance=False)
    assert not torch.allclose(plain, theirs)  # the placeholder's vectors are in the conditioning



def test_the_sampler_expands_the_placeholder_in_prompts(trained, runner):
    import numpy as np
    from PIL import Image

    from nodes.sdxl.sampler import Sample

    def image(prompt: str, node: str):
        [path] = runner.run(Sample, node, {"model": trained[0]}, width=32, height=32, steps=2, device="cpu", seed=3,
                            cfg=1.0, prompts=[prompt])["images"]
        return np.asarray(Image.open(path), dtype=np.float32)

    short, expanded = image("a photo of <shape>", "short"), image("a photo of <shape> <shape>_1", "expanded")
    without = image("a photo of", "without")
    assert np.array_equal(short, expanded)  # <shape> became both of its tokens, as in training
    assert not np.array_equal(short, without)


# -- the setup ---------------------------------------------------------------------------------------

def setup_ctx(runner, users: dict):
    """The setup's context, whose ``users_of`` answers from ``users`` (object id -> node ids)."""
    from runtime.context import RunContext

    return RunContext("emb", "sdxl.embedding_setup", runner.bus, runner.cancel, runner.inbox, runner.workspace,
                      users=lambda obj: users.get(id(obj), []))


def embed(runner, model, users=None, **params):
    params = {"placeholder": "<shape>", "initial_text": "red circle", "vectors": 3, **params}
    return runner.make(EmbeddingSetup, **params).run(setup_ctx(runner, users or {}), model=model)


def test_the_setup_adds_the_tokens_to_copies_and_starts_each_encoder_from_the_initial_text(runner):
    from nodes.sd.encode import Tokenize

    base = build_tiny()
    before = {name: snapshot(getattr(base, name)) for name in ENCODERS}
    vocabs = (base.tokenizer.get_vocab(), base.tokenizer_2.get_vocab())
    parts = base.tokenizer_parts()
    out = embed(runner, base, {id(base.text_encoder): ["encode_text"], id(base.text_encoder_2): ["encode_text"]})
    model, info = out["adapted"], out["adapted"].embedding
    assert "copied the text_encoder" in " ".join(e["message"] for e in runner.events("log"))

    # the input model never changes: its tokenizers, and its encoders that other nodes use
    assert (base.tokenizer.get_vocab(), base.tokenizer_2.get_vocab()) == vocabs
    assert "<shape>" not in base.tokenizer.get_vocab() and "<shape>" not in base.tokenizer_2.get_vocab()
    for name in ENCODERS:
        assert getattr(model, name) is not getattr(base, name)
        assert type(getattr(base, name).get_input_embeddings()).__name__ == "Embedding"
        assert same(snapshot(getattr(base, name)), before[name]), name
        assert type(getattr(model, name).get_input_embeddings()).__name__ == "TrainableTokens"
    assert model.unet is base.unet and model.vae is base.vae

    # both tokenizers expand the placeholder to its tokens, and the tokenize stage writes their ids
    assert info.tokens == ["<shape>", "<shape>_1", "<shape>_2"]
    for tok, ids, part, old in ((model.tokenizer, info.token_ids, out["tokenizer"], parts[0]),
                                (model.tokenizer_2, info.token_ids_2, out["tokenizer_2"], parts[1])):
        assert tok.convert_tokens_to_ids(info.tokens) == ids
        assert tok("a <shape> on blue").input_ids[2:5] == ids
        assert part.tokenizer is tok and part.fingerprint != old.fingerprint  # caches of tokens recompute
        assert runner.make(Tokenize).process(None, "a <shape>", part)["tokens"][2:5].tolist() == ids
    assert model.fingerprint != base.fingerprint and model.train_text_encoder

    # vectors start from each encoder's own embeddings of the initial text, spread as A1111 does
    for name, tok, width in (("text_encoder", base.tokenizer, 32), ("text_encoder_2", base.tokenizer_2, 48)):
        red, circle = tok("red circle", add_special_tokens=False).input_ids
        vectors = getattr(model, name).get_input_embeddings().vectors.detach()
        assert vectors.shape == (3, width)
        assert torch.equal(vectors, before[name][EMB_KEYS[name]][[red, red, circle]]), name
    assert [n for n, _ in model.named_trainable_parameters()] == [
        "text_encoder.embeddings.token_embedding.vectors",
        "text_encoder_2.text_model.embeddings.token_embedding.vectors"]

    alone = build_tiny()
    kept = embed(runner, alone)["adapted"]  # nobody else uses the encoders: changed in place
    assert kept.text_encoder is alone.text_encoder and kept.text_encoder_2 is alone.text_encoder_2
    assert kept.tokenizer is not alone.tokenizer and "<shape>" not in alone.tokenizer_2.get_vocab()


def test_a_legacy_eos_config_pools_at_the_end_token_not_at_the_placeholder(runner):
    from nodes.sd.text import tokenize

    base = build_tiny()
    te2 = base.text_encoder_2
    te2.config.eos_token_id = te2.text_model.eos_token_id = 2  # as in SDXL's CLIP-G config.json
    model = embed(runner, base, vectors=1)["adapted"]
    assert model.text_encoder_2.text_model.eos_token_id == model.tokenizer_2.eos_token_id
    assert model.text_encoder_2.config.eos_token_id == model.tokenizer_2.eos_token_id
    ids = tokenize(model.tokenizer_2, ["a <shape> on blue"])
    end = ids[0].tolist().index(model.tokenizer_2.eos_token_id)
    with torch.no_grad():
        out = model.text_encoder_2(ids)
        at_end = model.text_encoder_2.text_projection(out.last_hidden_state[0, end])
    torch.testing.assert_close(out.text_embeds[0], at_end)


def test_setup_and_saver_errors_name_the_param(runner):
    from nodes.sd.build import build_tiny as build_sd

    def error(exc, match, *args, **params):
        with pytest.raises(exc, match=match) as e:
            embed(runner, *args, **params) if args else runner.run(SaveEmbedding, "save", **params)
        assert "\n" not in str(e.value)

    error(ValueError, r"param 'placeholder': 'my shape' must be one word", build_tiny(), placeholder="my shape")
    error(ValueError, r"param 'placeholder': <\|endoftext\|> is already a token of tokenizer;", build_tiny(),
          placeholder="<|endoftext|>")
    tiny = build_tiny()
    tiny.tokenizer_2 = copy.deepcopy(tiny.tokenizer_2)
    tiny.tokenizer_2.add_tokens(["<shape>_1"])
    error(ValueError, r"param 'placeholder': <shape>_1 is already a token of tokenizer_2;", tiny)
    error(ValueError, r"param 'clip_skip': 1 is too large for 2-layer text encoders", build_tiny(), clip_skip=1)
    once = embed(runner, build_tiny())["adapted"]
    error(ValueError, "already has the embedding '<shape>'", once, placeholder="<other>")
    error(TypeError, "sdxl.embedding_setup needs a Stable Diffusion XL model, got a .sd. model", build_sd())
    with_lora = build_tiny()
    with_lora.lora = object()
    error(ValueError, "has LoRA adapters .*connect sdxl.embedding_setup to a base model", with_lora)

    with pytest.raises(ValueError, match="no trained embedding: train it through sdxl.embedding_setup"):
        runner.run(SaveEmbedding, "save", {"model": build_tiny()})
    with pytest.raises(TypeError, match="sdxl.save_embedding needs a Stable Diffusion XL model, got a .sd. model"):
        runner.run(SaveEmbedding, "save", {"model": build_sd()})
    error(ValueError, "must be a plain file name", name="../up")


def test_encoders_as_large_as_their_tokenizers_grow_by_the_new_rows(runner):
    from nodes.sd.text import tokenize
    from nodes.sdxl.encode import encode_both

    base = build_tiny()  # made like SDXL's, whose tables have exactly one row per tokenizer entry
    for name, tok in zip(ENCODERS, (base.tokenizer, base.tokenizer_2)):
        getattr(base, name).resize_token_embeddings(len(tok))
    sizes = (len(base.tokenizer), len(base.tokenizer_2))
    model = embed(runner, base, vectors=2)["adapted"]
    info = model.embedding
    assert info.base_vocab_sizes == sizes
    assert info.token_ids == [sizes[0], sizes[0] + 1] and info.token_ids_2 == [sizes[1], sizes[1] + 1]
    for name, size in zip(ENCODERS, sizes):
        assert getattr(model, name).get_input_embeddings().num_embeddings == size + 2
    hidden, pooled = encode_both(model.text_encoder, model.text_encoder_2, tokenize(model.tokenizer, [PROMPT]),
                                 tokenize(model.tokenizer_2, [PROMPT]))
    hidden.sum().backward()  # the new rows are in the forward and get gradients
    assert all(getattr(model, n).get_input_embeddings().vectors.grad.abs().sum() > 0 for n in ENCODERS)
