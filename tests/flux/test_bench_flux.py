"""benchmarks/bench_train.py --family flux: its graph run and its plain diffusers + peft flow-matching loop do
the same work (same trainable weights on the same adapted layers, same batch shapes every step) and both train
(finite losses). No timing."""

from __future__ import annotations

import math


def test_graph_and_plain_loop_do_the_same_work(bench, tmp_path):
    graph, data = bench.graph_flux(2, tmp_path / "graph")
    plain = bench.plain_flux(2, data)
    assert graph.trainable == plain.trainable > 0
    assert graph.adapted == plain.adapted
    # the attn preset on the tiny model's one double and one single block: both streams' projections, then q/k/v
    assert len(graph.adapted) == 11
    assert "transformer.transformer_blocks.0.attn.to_add_out" in graph.adapted
    assert not any(name.endswith("proj_out") or ".ff" in name for name in graph.adapted)
    assert len(graph.shapes) == len(plain.shapes) == 2
    assert graph.shapes == plain.shapes
    first = graph.shapes[0]
    assert set(first) == {"latent", "t5_embedding", "pooled_embedding"}
    assert first["latent"][1] == 16 and first["latent"][2] % 2 == first["latent"][3] % 2 == 0
    assert first["t5_embedding"][0] == first["pooled_embedding"][0] == first["latent"][0]
    assert len(graph.losses) == len(plain.losses) == 2 == len(graph.times) == len(plain.times)
    assert len(graph.cpu) == len(plain.cpu) == 2 and all(t > 0 for t in graph.cpu + plain.cpu)
    assert all(math.isfinite(x) and x > 0 for x in graph.losses + plain.losses)
