"""sd.finetune_setup and sd.embedding_setup: what trains, optimizer groups, the placeholder's tokens;
and the fine-tune and embedding presets run end to end with the tiny model."""

from __future__ import annotations

import pickle

import pytest
import torch

from nodes.sd.build import build_tiny
from nodes.sd.embedding import EmbeddingSetup
from nodes.sd.finetune import FinetuneSetup
from nodes.sd.text import tokenize
from nodes.placeholder_tokens import plain_tokenizer
from nodes.train.loop import TrainLoop
from nodes.train.optimizer import OptimizerConfig
from runtime.paths import GRAPHS_DIR
from tests.conftest import run_cli, run_preset as shared_run_preset
from tests.sd.conftest import TokenBatches
from tests.train.helpers import train_inputs

EMB_KEY = "embeddings.token_embedding.weight"


def snapshot(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def train(runner, model, batches, steps=2, lr=1e-3, node="train"):
    return runner.run(TrainLoop, node, train_inputs(model, batches, lr=lr), max_steps=steps, device="cpu")["trained"]


# -- fine-tune ----------------------------------------------------------------------------

def test_finetune_trains_each_part_with_its_own_learning_rate(runner):
    model = build_tiny()
    vae, te = snapshot(model.vae), snapshot(model.text_encoder)
    unet = snapshot(model.unet)
    out = runner.run(FinetuneSetup, "ft", {"model": model}, unet_lr=0.002, train_text_encoder=True)["adapted"]
    assert out.train_text_encoder and out.learning_rates == {"unet": 0.002}
    groups = out.param_groups()
    assert [g["name"] for g in groups] == ["unet", "text_encoder"]
    assert groups[0]["lr"] == 0.002 and "lr" not in groups[1]  # the text encoder takes the optimizer's
    assert sum(len(g["params"]) for g in groups) == len(list(model.unet.parameters())) + len(
        list(model.text_encoder.parameters()))
    optimizer = OptimizerConfig("adamw", 1e-3).build(groups)
    assert [g["lr"] for g in optimizer.param_groups] == [0.002, 1e-3]
    assert not any(p.requires_grad for p in model.vae.parameters())

    trained = train(runner, out, TokenBatches(model))
    assert runner.events("progress", "train")[0]["lr"] == 0.002  # group 0 (the UNet) ran at its own rate
    assert not same(snapshot(trained.unet), unet) and not same(snapshot(trained.text_encoder), te)
    assert same(snapshot(trained.vae), vae)


def test_finetune_unet_only_in_one_group_and_float32_master_weights(runner):
    model = build_tiny()
    model.unet.half()
    te = snapshot(model.text_encoder)
    out = runner.run(FinetuneSetup, "ft", {"model": model})["adapted"]
    assert model.unet.dtype == torch.float32 and out.dtypes["unet"] == "float32"
    [group] = out.param_groups()
    assert "lr" not in group and len(group["params"]) == len(list(model.unet.parameters()))
    assert not out.train_text_encoder
    trained = train(runner, out, TokenBatches(model), steps=1)  # tokens encoded without gradients
    assert same(snapshot(trained.text_encoder), te)

    keep = build_tiny()
    keep.unet.to(torch.bfloat16)
    runner.run(FinetuneSetup, "keep", {"model": keep}, weight_dtype="keep")
    assert keep.unet.dtype == torch.bfloat16


def test_finetune_setup_errors(runner):
    from nodes.sd.lora import LoraSetup

    with pytest.raises(ValueError, match="both off: nothing would train"):
        runner.run(FinetuneSetup, "ft", {"model": build_tiny()}, train_unet=False)
    lora = runner.run(LoraSetup, "lora", {"model": build_tiny()})["adapted"]
    with pytest.raises(ValueError, match="already has LoRA adapters: connect sd.finetune_setup to a base model"):
        runner.run(FinetuneSetup, "ft", {"model": lora})
    with pytest.raises(ValueError, match="clip_skip.*too large for a 2-layer"):
        runner.run(FinetuneSetup, "ft", {"model": build_tiny()}, clip_skip=2)


# -- embedding ------------------------------------------------------------------------------

def embed(runner, model=None, **params):
    params = {"placeholder": "<shape>", "initial_text": "red circle", "vectors": 3, **params}
    return runner.run(EmbeddingSetup, "emb", {"model": model or build_tiny()}, **params)


def test_embedding_setup_adds_tokens_that_the_tokenizer_expands(runner):
    from nodes.sd.encode import Tokenize

    base = build_tiny()
    reference = build_tiny().text_encoder.get_input_embeddings().weight.detach()
    out = embed(runner, base)
    model, part = out["adapted"], out["tokenizer"]
    info, tok = model.embedding, model.tokenizer
    assert info.tokens == ["<shape>", "<shape>_1", "<shape>_2"]
    assert tok.convert_tokens_to_ids(info.tokens) == info.token_ids
    ids = tok("a <shape> on blue").input_ids
    assert ids[2:5] == info.token_ids and len(ids) == 1 + 1 + 3 + 2 + 1
    assert tok("a <shape> <shape>_1 <shape>_2 on blue").input_ids == ids  # already expanded: left alone
    assert tok(["<SHAPE>"]).input_ids[0][1:4] == info.token_ids  # as case-insensitive as CLIP itself
    assert "<shape>" not in base.tokenizer.get_vocab()  # the input model's tokenizer is not changed
    assert isinstance(plain_tokenizer(tok), type(base.tokenizer))
    restored = pickle.loads(pickle.dumps(tok))  # DataLoader workers get a tokenizer that still expands
    assert restored("a <shape>").input_ids == tok("a <shape>").input_ids

    # the data graph's tokenize stage, given the setup's tokenizer output, writes the placeholder's ids
    assert part.tokenizer is tok and part.fingerprint != base.tokenizer_part().fingerprint
    stage = runner.make(Tokenize)
    tokens = stage.process(None, "a <shape>", part)["tokens"]
    assert tokens[2:5].tolist() == info.token_ids and tokens.shape == (77,)

    # vectors start from the initial text, spread as A1111 does: red, red, circle
    red, circle = base.tokenizer("red circle", add_special_tokens=False).input_ids
    assert torch.equal(model.embedding_vectors().detach(), reference[[red, red, circle]])
    assert [n for n, _ in model.named_trainable_parameters()] == ["text_encoder.embeddings.token_embedding.vectors"]
    assert model.train_text_encoder


def test_only_the_new_rows_train_and_the_rest_stays_bit_identical(runner):
    base = build_tiny()
    before = {name: snapshot(getattr(base, name)) for name in ("unet", "vae", "text_encoder")}
    model = embed(runner, base)["adapted"]
    ids = model.embedding.token_ids
    start = model.embedding_vectors().detach().clone()
    batches = TokenBatches(model)
    batches.tokens = tokenize(model.tokenizer, [f"a photo of <shape> number {i}" for i in range(4)])
    trained = train(runner, model, batches, steps=3, lr=0.05)

    vectors = trained.embedding_vectors().detach()
    assert all(not torch.equal(vectors[i], start[i]) for i in range(3))  # every vector learned
    after = snapshot(trained.text_encoder)  # a plain CLIP state dict, the trained rows filled in
    assert after.keys() == before["text_encoder"].keys()
    assert torch.equal(after[EMB_KEY][ids], vectors)
    others = [i for i in range(after[EMB_KEY].shape[0]) if i not in ids]
    assert torch.equal(after[EMB_KEY][others], before["text_encoder"][EMB_KEY][others])
    assert all(torch.equal(after[k], before["text_encoder"][k]) for k in after if k != EMB_KEY)
    assert same(snapshot(trained.unet), before["unet"]) and same(snapshot(trained.vae), before["vae"])

    # the state dict loads back: the vectors follow the rows
    fresh = embed(runner, build_tiny())["adapted"]
    fresh.text_encoder.load_state_dict(after)
    assert torch.equal(fresh.embedding_vectors().detach(), vectors)


def test_embedding_setup_errors(runner):
    with pytest.raises(ValueError, match="must be one word without spaces"):
        embed(runner, placeholder="my shape")
    with pytest.raises(ValueError, match="'<|endoftext|>' is already a token|already a token of the tokenizer"):
        embed(runner, placeholder="<|endoftext|>")
    once = embed(runner)["adapted"]
    with pytest.raises(ValueError, match="already has the embedding '<shape>'"):
        embed(runner, once, placeholder="<other>")
    with pytest.raises(TypeError, match="needs a Stable Diffusion 1.x/2.x model"):
        runner.run(EmbeddingSetup, "emb", {"model": object()})


def test_one_vector_embedding_is_the_bare_placeholder_and_empty_text_starts_at_zero(runner):
    model = embed(runner, vectors=1, initial_text="")["adapted"]
    assert model.embedding.tokens == ["<shape>"]
    assert torch.count_nonzero(model.embedding_vectors()) == 0
    assert model.tokenizer("<shape>").input_ids[1:-1] == model.embedding.token_ids


# -- presets --------------------------------------------------------------------------------

PRESETS = ["sd15-finetune.yaml", "sd15-embedding.yaml"]


@pytest.mark.parametrize("name", PRESETS)
def test_presets_validate(name):
    from runtime.graph_file import dumps_graph, load_graph

    path = GRAPHS_DIR / name
    assert dumps_graph(load_graph(path)) == path.read_text()  # canonical: the editor saves it unchanged
    r = run_cli("validate", path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "valid" in r.stdout


def run_preset(tmp_path, name, *sets):
    from nodes.sd.build import save_diffusers

    folder = save_diffusers(build_tiny(seed=0), tmp_path / "base")
    ws, own, events = shared_run_preset(tmp_path, name, folder, *sets)
    return ws, folder, own, events


@pytest.mark.slow
def test_finetune_preset_runs_with_the_tiny_model(tmp_path):
    from nodes.sd.build import load_sd

    ws, base, saved, events = run_preset(tmp_path, "sd15-finetune.yaml", "finetune.train_text_encoder=true",
                                         "sample_every=2", "previews.steps=2")
    previews = [(e["step"], e["tag"]) for e in events if e["event"] == "sample" and e["node"] == "train"]
    assert previews == [(2, ""), (2, "ema")], "the preset's EMA hook adds EMA previews next to the live ones"
    assert saved == {"diffusers": str(ws / "models" / "model"), "checkpoint": str(ws / "models" / "model.safetensors")}
    tuned, original = load_sd(saved["diffusers"]), load_sd(base)
    assert not same(snapshot(tuned.unet), snapshot(original.unet))  # the UNet trained ...
    assert not same(snapshot(tuned.text_encoder), snapshot(original.text_encoder))  # ... and the text encoder
    assert same(snapshot(tuned.vae), snapshot(original.vae))
    from_file = load_sd(saved["checkpoint"], config=base)
    for name in ("unet", "text_encoder"):
        a, b = snapshot(getattr(from_file, name)), snapshot(getattr(tuned, name))
        assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k].half().float(), atol=1e-3) for k in a)


@pytest.mark.slow
def test_embedding_preset_runs_with_the_tiny_model(tmp_path):
    from safetensors import safe_open

    ws, _, saved, events = run_preset(tmp_path, "sd15-embedding.yaml", "placeholder=<red-thing>", "vectors=3",
                                      "save_every=1")
    periodic = [e["path"] for e in events if e["event"] == "saved" and e["node"] == "train"]
    assert str(ws / "embeddings" / "red-thing-step000001.safetensors") in periodic
    assert sorted(p.name for p in (ws / "backups").iterdir()) == ["step-000001", "step-000002"]
    assert saved == {"a1111_embedding": str(ws / "embeddings" / "red-thing.safetensors")}
    with safe_open(saved["a1111_embedding"], "pt") as f:
        assert list(f.keys()) == ["emb_params"] and f.get_tensor("emb_params").shape == (3, 32)
        assert f.metadata()["nodetrainer_placeholder"] == "<red-thing>"
    assert any((tmp_path / "cache").rglob("*")), "the latent cache was not written"
