"""benchmarks/bench_train.py --family sdxl: its graph run and its plain diffusers + peft loop do the same
work (same trainable weights, same batch shapes every step) and both train (finite losses). No timing."""

from __future__ import annotations

import math


def test_graph_and_plain_loop_do_the_same_work(bench, tmp_path):
    graph, data = bench.graph_sdxl(2, tmp_path / "graph")
    plain = bench.plain_sdxl(2, data)
    assert graph.trainable == plain.trainable > 0
    assert len(graph.shapes) == len(plain.shapes) == 2
    assert graph.shapes == plain.shapes
    first = graph.shapes[0]
    assert set(first) == {"latent", "embedding", "pooled_embedding", "time_ids"}
    assert first["time_ids"][1:] == (6,) and first["latent"][1] == 4
    assert len(graph.losses) == len(plain.losses) == 2 == len(graph.times) == len(plain.times)
    assert len(graph.cpu) == len(plain.cpu) == 2 and all(t > 0 for t in graph.cpu + plain.cpu)
    assert all(math.isfinite(x) and x > 0 for x in graph.losses + plain.losses)
