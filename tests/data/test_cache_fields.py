"""The generic caches hand on any named fields: names, values and types reach data.batches unchanged,
a disk cache is read back by a second run, and a version-1 cache with a renamed slot still runs."""

from __future__ import annotations

import pytest
import torch

from datagraph_helpers import graph_of, run_nodes
from runtime import Input, Output, node
from runtime.data import PerSampleStage
from runtime.port_types import Caption, TextEmbedding, sample_type

# Field types no SD cache slot ever had.
PooledThing = sample_type("CacheTestPooled", doc="a pooled vector (tests)")
SizeThing = sample_type("CacheTestSizes", doc="six size numbers (tests)")
CALLS = {"encode": 0}


@node("cachetest.encode", title="Encode (cache test)", category="Test")
class FakeEncode(PerSampleStage):
    """Per item: a pooled vector and six numbers, both made from the index and the caption."""

    caption = Input(Caption)
    pooled_embedding = Output(PooledThing)
    time_ids = Output(SizeThing)
    random = False

    def process(self, item, caption):
        CALLS["encode"] += 1
        return {"pooled_embedding": torch.full((3,), float(item.index)),
                "time_ids": torch.tensor([float(len(caption)), float(item.index), 0, 0, 64, 64])}


@node("cachetest.hidden", title="Hidden (cache test)", category="Test")
class FakeHidden(PerSampleStage):
    """A text embedding on a port not named 'embedding'."""

    caption = Input(Caption)
    hidden = Output(TextEmbedding)
    random = False

    def process(self, item, caption):
        return {"hidden": torch.full((2, 4), float(item.index))}


@pytest.fixture(scope="module")
def reg():
    import sys

    from runtime.registry import Registry

    r = Registry.discover(builtin=True, entry_points=False)
    r.register_module(sys.modules[__name__], "tests")
    assert not r.load_errors, r.load_errors
    return r


def fields_graph(folder, cache: str, cache_dir=None):
    params = {"folder": str(cache_dir)} if cache == "data.disk_cache" else {}
    return graph_of({
        "concept": ("data.concept", {"folder": str(folder), "recursive": True}, {}),
        "source": ("data.concepts", {}, {"concepts": ["concept.concept"]}),
        "enc": ("cachetest.encode", {}, {"caption": "source.caption"}),
        "cache": (cache, params, {"fields": ["enc.pooled_embedding", "enc.time_ids", "source.caption"]}),
        "batches": ("data.batches", {"batch_size": 3, "seed": 5},
                    {"fields": ["cache.pooled_embedding", "cache.time_ids", "cache.caption"]}),
    })


def check_batches(batches, n):
    seen = set()
    for b in batches:
        assert set(b) == {"pooled_embedding", "time_ids", "caption", "_index", "_epoch"}
        for k, i in enumerate(b["_index"]):
            seen.add(i)
            assert b["pooled_embedding"][k].tolist() == [float(i)] * 3
            assert b["time_ids"][k].tolist() == [float(len(b["caption"][k])), float(i), 0, 0, 64, 64]
    assert seen == set(range(n))


@pytest.mark.parametrize("cache", ["data.ram_cache", "data.disk_cache"])
def test_fields_with_any_names_pass_through_under_their_names(reg, clean_dataset, tmp_path, cache):
    from runtime.topology import GraphTypes

    g = fields_graph(clean_dataset.root, cache, tmp_path / "cache")
    types = GraphTypes(g, lambda n: reg.get(g.nodes[n].type))
    assert types.output_type("cache", "pooled_embedding") is PooledThing
    assert types.output_type("cache", "time_ids") is SizeThing
    CALLS["encode"] = 0
    ran = run_nodes(g, reg, ["batches"], tmp=tmp_path)
    n = len(clean_dataset.good)
    source = ran.out("batches", "batches")
    check_batches(list(source.epoch(0)), n)
    assert CALLS["encode"] == n
    check_batches(list(source.epoch(1)), n)
    assert CALLS["encode"] == n, "the second epoch reads the cache"


def test_a_second_run_reads_the_disk_cache(reg, clean_dataset, tmp_path):
    n = len(clean_dataset.good)
    CALLS["encode"] = 0
    first = run_nodes(fields_graph(clean_dataset.root, "data.disk_cache", tmp_path / "cache"), reg, ["batches"],
                      tmp=tmp_path)
    check_batches(list(first.out("batches", "batches").epoch(0)), n)
    assert CALLS["encode"] == n
    second = run_nodes(fields_graph(clean_dataset.root, "data.disk_cache", tmp_path / "cache"), reg, ["batches"],
                       tmp=tmp_path)
    check_batches(list(second.out("batches", "batches").epoch(0)), n)
    assert CALLS["encode"] == n, "nothing recomputed"
    assert any(f"{n} of {n} item(s) found, 0 computed" in m for m in second.logs()), second.logs()


V1_RENAMED = """format: nodetrainer.graph/1
name: v1 cache with a renamed slot
nodes:
  concept:
    type: data.concept@1
    params: {{folder: '{folder}'}}
  source:
    type: data.concepts@1
    in: {{concepts: [concept.concept]}}
  te:
    type: cachetest.hidden@1
    in: {{caption: source.caption}}
  cache:
    type: data.ram_cache@1
    in:
      caption: source.caption
      embedding: te.hidden
  batches:
    type: data.batches@1
    in: {{fields: [cache.embedding, cache.caption]}}
    params: {{batch_size: 4}}
"""


def test_a_version_1_cache_with_a_renamed_slot_keeps_the_batch_key(reg, clean_dataset, tmp_path):
    from runtime.graph_file import loads_graph

    g = loads_graph(V1_RENAMED.format(folder=clean_dataset.root), reg)
    assert g.nodes["cache"].version == 2 and g.nodes["cache"].params == {"rename": ["hidden=embedding"]}
    ran = run_nodes(g, reg, ["batches"], tmp=tmp_path)
    batches = list(ran.out("batches", "batches").epoch(0))
    assert all(set(b) == {"embedding", "caption", "_index", "_epoch"} for b in batches)
    for b in batches:
        for k, i in enumerate(b["_index"]):
            assert torch.equal(b["embedding"][k], torch.full((2, 4), float(i)))


def test_the_sdxl_encoders_fields_go_through_a_disk_cache(tmp_path):
    """sdxl.encode_text's pooled embedding and sdxl.size_conditioning's time ids, cached with the latents,
    reach the batches under their names with the values the uncached graph gives."""
    from pathlib import Path

    from runtime.events import EventBus, ListSink
    from runtime.executor import execute
    from runtime.graph import Link
    from runtime.graph_file import load_graph
    from runtime.registry import default_registry
    from runtime.validate import validate

    torch.set_num_threads(1)
    reg = default_registry()
    names = ["latent", "embedding", "pooled_embedding", "time_ids"]
    feeds = [Link("encode_image", "latent"), Link("encode_text", "embedding"),
             Link("encode_text", "pooled_embedding"), Link("sizes", "time_ids")]

    def run(cached: bool):
        g = load_graph(Path(__file__).parents[1] / "sdxl" / "data_graph.yaml", reg)
        if cached:
            g.add_node("cache", "data.disk_cache", 2, {"folder": str(tmp_path / "cache")})
            g.nodes["cache"].inputs["fields"] = list(feeds)
            g.nodes["batches"].inputs["fields"] = [Link("cache", n) for n in names]
        v = validate(g, reg)
        assert v.ok, [str(p) for p in v.errors]
        sink = ListSink()
        r = execute(v, workspace=tmp_path, bus=EventBus([sink]), targets=("batches",), keep=("batches",))
        assert r.ok, r.error
        batches = list(r.outputs["batches"]["batches"].epoch(0))
        logs = [e["message"] for e in sink.events if e["event"] == "log"]
        return {i: {k: b[k][j] for k in names} for b in batches for j, i in enumerate(b["_index"])}, logs

    plain, _ = run(False)
    first, logs = run(True)
    assert any("0 of 8 item(s) found, 8 computed" in m for m in logs), logs
    again, logs = run(True)
    assert any("8 of 8 item(s) found, 0 computed" in m for m in logs), logs
    assert set(plain) == set(first) == set(again) and len(plain) == 8
    for i in plain:
        for k in names:
            assert torch.allclose(first[i][k], plain[i][k], atol=1e-6), (i, k)
            assert torch.equal(again[i][k], first[i][k]), (i, k)
