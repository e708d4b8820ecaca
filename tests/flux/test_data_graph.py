"""A data graph of generic stages, the shared VAE encoder and tokenizer, and flux.encode_text feeds the tiny Flux
transformer, and a flow-matching loss backprops through it."""

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


def test_data_graph_feeds_the_transformer_and_a_flow_matching_loss_trains_it(tmp_path):
    from nodes.flux.encode import encode_prompts

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
        assert batch["latent"].shape == (n, 16, bh // 8, bw // 8)
        assert batch["t5_embedding"].shape == (n, 32, 48) and batch["pooled_embedding"].shape == (n, 32)
        t5, pooled = encode_prompts(model, batch["caption"], max_length=32)  # what a pipeline gives
        assert torch.allclose(batch["t5_embedding"], t5, atol=1e-5)
        assert torch.allclose(batch["pooled_embedding"], pooled, atol=1e-5)
    batch = batches[0]
    with torch.no_grad():  # the shared VAE encoder applies Flux's latent shift and scale
        mean = model.vae.encode(batch["image"]).latent_dist.mean
    assert torch.allclose(batch["latent"], (mean - 0.1159) * 0.3611, atol=1e-5)
    x0 = model.latents(batch)
    model.transformer.requires_grad_(True)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x0.shape, generator=g)
    sigmas = torch.rand(len(x0), generator=g)
    s = sigmas.view(-1, 1, 1, 1)
    pred = model.predict((1 - s) * x0 + s * noise, sigmas, batch)
    loss = torch.nn.functional.mse_loss(pred.float(), noise - x0)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.transformer.x_embedder.weight.grad.abs().sum() > 0
    assert model.transformer.context_embedder.weight.grad.abs().sum() > 0  # T5's sequence reaches it
    assert model.transformer.time_text_embed.text_embedder.linear_1.weight.grad.abs().sum() > 0  # CLIP's pooled
    assert model.transformer.time_text_embed.guidance_embedder.linear_1.weight.grad.abs().sum() > 0  # dev
    # the generic objective takes the model: dev's resolution-dependent shift from its packed token count
    import math

    from nodes.train.flow_objective import FlowMatchingObjective

    loss, metrics = FlowMatchingObjective(dynamic_shift=True).loss(model, batch, torch.Generator().manual_seed(1))
    tokens = (x0.shape[-2] // 2) * (x0.shape[-1] // 2)
    assert model.image_seq_len(x0) == tokens and torch.isfinite(loss)
    assert metrics["shift"] == pytest.approx(math.exp(0.5 + (1.15 - 0.5) / (4096 - 256) * (tokens - 256)))
