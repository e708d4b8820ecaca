"""The placeholder tokenizer is a plain wrapper (no class posing) that expands everywhere it is called,
and a backup restores the trained vectors: a resumed embedding run equals an uninterrupted one."""

from __future__ import annotations

import copy
import pickle

import torch

from nodes.sd.build import build_tiny
from nodes.sd.embedding import EmbeddingSetup
from nodes.sd.text import tokenize
from nodes.placeholder_tokens import PlaceholderTokenizer, TrainableTokens, plain_tokenizer
from nodes.train.hook_nodes import Backups
from nodes.train.loop import TrainLoop
from tests.sd.conftest import TokenBatches
from tests.train.helpers import NodeRunner, train_inputs


def embed(runner, **params):
    params = {"placeholder": "<shape>", "initial_text": "red circle", "vectors": 3, **params}
    return runner.run(EmbeddingSetup, "emb", {"model": build_tiny()}, **params)["adapted"]


def test_the_tokenizer_wraps_a_plain_tokenizer_and_expands_in_every_call(runner):
    model = embed(runner)
    tok, ids = model.tokenizer, model.embedding.token_ids
    base_class = type(build_tiny().tokenizer)
    assert type(tok) is PlaceholderTokenizer and type(plain_tokenizer(tok)) is base_class  # no posing
    assert type(plain_tokenizer(tok)).__module__.startswith("transformers.")
    assert tok("a <shape>").input_ids[2:5] == ids
    assert tok.encode("a <shape>")[2:5] == ids
    assert tok.tokenize("<shape>") == ["<shape>", "<shape>_1", "<shape>_2"]
    assert tokenize(tok, ["a <shape>"])[0, 2:5].tolist() == ids  # what sd.tokenize and the sampler call
    assert plain_tokenizer(tok)("a <shape>").input_ids[2:3] == ids[:1]  # the plain one knows the tokens only
    assert tok.model_max_length == 77 and tok.decode(ids) == plain_tokenizer(tok).decode(ids)
    for other in (pickle.loads(pickle.dumps(tok)), copy.deepcopy(tok)):  # DataLoader workers, caches
        assert type(other) is PlaceholderTokenizer and other("a <shape>").input_ids == tok("a <shape>").input_ids


def test_the_trainable_embedding_is_a_plain_module_class():
    assert TrainableTokens.__module__ == "nodes.placeholder_tokens" and issubclass(TrainableTokens, torch.nn.Embedding)
    layer = TrainableTokens(torch.nn.Embedding(5, 2), [3], torch.ones(1, 2))
    restored = pickle.loads(pickle.dumps(layer))
    assert torch.equal(restored(torch.tensor([3, 0])), layer(torch.tensor([3, 0])))


def train(runner, model, steps, hooks=()):
    batches = TokenBatches(model)
    batches.tokens = tokenize(model.tokenizer, [f"a photo of <shape> number {i}" for i in range(4)])
    inputs = train_inputs(model, batches, lr=0.05, hooks=hooks)
    return runner.run(TrainLoop, "train", inputs, max_steps=steps, device="cpu")["trained"]


def test_a_backup_restores_the_vectors_and_resuming_equals_one_run(tmp_path):
    straight_runner = NodeRunner(tmp_path / "straight")
    straight = train(straight_runner, embed(straight_runner), 4,
                     [straight_runner.run(Backups, "backups", {}, every=2, keep=5)["hook"]])
    backup = tmp_path / "straight" / "backups" / "step-000002"
    assert backup.is_dir()

    r = NodeRunner(tmp_path / "resumed")
    r.resume = backup
    fresh = embed(r)
    start = fresh.embedding_vectors().detach().clone()
    resumed = train(r, fresh, 4)
    assert [e["step"] for e in r.events("progress", "train")] == [3, 4]
    vectors = resumed.embedding_vectors().detach()
    assert not torch.equal(vectors, start)
    torch.testing.assert_close(vectors, straight.embedding_vectors().detach(), atol=1e-6, rtol=0)
