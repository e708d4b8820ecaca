"""Caches: hits on later epochs and runs, and invalidation by params, files and model fingerprints."""

from __future__ import annotations

import os

import pytest
import torch

import datagraph_nodes
from datagraph_helpers import batches_of, graph_of, pipeline, run_nodes


def cached_graph(folder, cache: str, cache_dir=None, flip=0.5, tags=1, variations=1, **extra):
    cache_params = {"variations": variations}
    if cache == "data.disk_cache":
        cache_params["folder"] = str(cache_dir)
    nodes = pipeline(folder,
                     count=("testdata.count", {}, {"image": "load.image"}),
                     bucket=("data.aspect_bucket", {"resolution": 32, "quantization": 8}, {"size": "source.size"}),
                     crop=("data.scale_crop", {}, {"image": "count.image", "bucket": "bucket.bucket"}),
                     flip=("data.random_flip", {"probability": flip}, {"image": "crop.image"}),
                     tensor=("data.to_tensor", {}, {"image": "flip.image"}),
                     tags=("data.shuffle_tags", {"keep_first": tags}, {"caption": "source.caption"}),
                     cache=(cache, cache_params, {"fields": ["tensor.image", "tags.caption"]}),
                     batches=("data.batches", {"batch_size": 2},
                              {"fields": ["cache.image", "cache.caption"], "bucket": "bucket.bucket"}))
    nodes.update(extra)
    return graph_of(nodes)


def calls() -> int:
    return datagraph_nodes.CALLS.get("count", 0)


def by_index(batches):
    return {i: (b["image"][k], b["caption"][k]) for b in batches for k, i in enumerate(b["_index"])}


def test_ram_cache_is_hit_on_the_second_epoch(data_registry, clean_dataset, tmp_path):
    datagraph_nodes.CALLS.clear()
    ran = run_nodes(cached_graph(clean_dataset.root, "data.ram_cache"), data_registry, ["batches"], tmp=tmp_path)
    source = ran.out("batches", "batches")
    e0 = by_index(batches_of(source, 0))
    n = len(clean_dataset.good)
    assert calls() == n
    e1 = by_index(batches_of(source, 1))
    assert calls() == n, "upstream stages did not run again"
    assert all(torch.equal(e0[i][0], e1[i][0]) and e0[i][1] == e1[i][1] for i in e0), "one variation is reused"
    assert any("cache ready for epoch 0" in m and f"0 of {n} item(s) found, {n} computed" in m for m in ran.logs())


def test_ram_cache_variations_cycle(data_registry, clean_dataset, tmp_path):
    datagraph_nodes.CALLS.clear()
    g = cached_graph(clean_dataset.root, "data.ram_cache", variations=2)
    source = run_nodes(g, data_registry, ["batches"], tmp=tmp_path).out("batches", "batches")
    e = [by_index(batches_of(source, k)) for k in range(3)]
    n = len(clean_dataset.good)
    assert calls() == 2 * n, "two variations computed, the third epoch reuses the first"
    assert all(torch.equal(e[0][i][0], e[2][i][0]) for i in e[0])
    assert any(not torch.equal(e[0][i][0], e[1][i][0]) for i in e[0])


def test_disk_cache_survives_runs_and_invalidates_exactly(data_registry, clean_dataset, tmp_path):
    cache_dir = tmp_path / "cache"
    n = len(clean_dataset.good)

    def epoch(**kw):
        datagraph_nodes.CALLS.clear()
        g = cached_graph(clean_dataset.root, "data.disk_cache", cache_dir, **kw)
        source = run_nodes(g, data_registry, ["batches"], tmp=tmp_path).out("batches", "batches")
        return by_index(batches_of(source, 0)), calls()

    first, c = epoch()
    assert c == n
    entries = sum(len(files) for _, _, files in os.walk(cache_dir))
    assert entries == 2 * n  # one image and one caption entry per item
    again, c = epoch()
    assert c == 0, "a new run reads everything from disk"
    assert all(torch.equal(first[i][0], again[i][0]) and first[i][1] == again[i][1] for i in first)

    _, c = epoch(tags=2)
    assert c == 0, "a caption param does not touch cached images"
    flipped, c = epoch(flip=1.0)
    assert c == n, "an image param recomputes every image"

    victim = clean_dataset.good[1]
    from PIL import Image

    Image.new("RGB", (64, 64), (1, 2, 3)).save(victim)
    changed, c = epoch(flip=1.0)
    assert c == 1, "an edited file recomputes only its item"
    assert sum(not torch.equal(flipped[i][0], changed[i][0]) for i in flipped) == 1

    victim.with_suffix(".txt").write_text("a brand new caption")
    captions, c = epoch(flip=1.0)
    assert c == 0 and sum(cap == "a brand new caption" for _, cap in captions.values()) == 1


def test_value_inputs_key_the_cache_by_fingerprint(data_registry, clean_dataset, tmp_path):
    cache_dir = tmp_path / "cache"
    extra = dict(
        model=("testdata.model", {"fingerprint": "vae-1"}, {}),
        count=("testdata.use_model", {}, {"image": "load.image", "model": "model.model"}),
        counted=("testdata.count", {}, {"image": "count.image"}),
        crop=("data.scale_crop", {}, {"image": "counted.image", "bucket": "bucket.bucket"}),
    )

    def run(fp):
        extra["model"] = ("testdata.model", {"fingerprint": fp}, {})
        g = cached_graph(clean_dataset.root, "data.disk_cache", cache_dir, **extra)
        datagraph_nodes.CALLS.clear()
        source = run_nodes(g, data_registry, ["batches"], tmp=tmp_path).out("batches", "batches")
        batches_of(source)
        return datagraph_nodes.CALLS.get("counted", 0)

    n = len(clean_dataset.good)
    assert run("vae-1") == n
    assert run("vae-1") == 0
    assert run("vae-2") == n, "another model fingerprint misses"
    from runtime.data import DataStageError

    with pytest.raises(DataStageError) as e:
        run("")
    msg = str(e.value)
    assert "node 'count' (testdata.use_model)" in msg and "value input 'model'" in msg and "fingerprint" in msg


def test_the_batch_plan_reads_only_the_bucket_from_a_cache(data_registry, clean_dataset, tmp_path, monkeypatch):
    """A bucket that comes through a cache (several resolutions) is read alone: the plan loads no images."""
    from runtime.data.cache import DiskStore

    def graph():
        return graph_of(pipeline(
            clean_dataset.root,
            bucket=("data.aspect_bucket", {"resolutions": [24, 32], "quantization": 8}, {"size": "source.size"}),
            crop=("data.scale_crop", {}, {"image": "load.image", "bucket": "bucket.bucket"}),
            tensor=("data.to_tensor", {}, {"image": "crop.image"}),
            cache=("data.disk_cache", {"folder": str(tmp_path / "cache")},
                   {"fields": ["tensor.image", "source.caption", "bucket.bucket"]}),
            batches=("data.batches", {"batch_size": 2},
                     {"fields": ["cache.image", "cache.caption"], "bucket": "cache.bucket"})))

    batches_of(run_nodes(graph(), data_registry, ["batches"], tmp=tmp_path).out("batches", "batches"), 0)
    reads = []
    real_get = DiskStore.get
    monkeypatch.setattr(DiskStore, "get", lambda self, key: reads.append(key) or real_get(self, key))
    source = run_nodes(graph(), data_registry, ["batches"], tmp=tmp_path).out("batches", "batches")
    n = len(clean_dataset.good)
    assert len(source) >= n // 2
    assert len(reads) == n, "the plan read more than each item's bucket"
    batches = batches_of(source, 0)
    assert sum(len(b["_index"]) for b in batches) == n and len(reads) == 3 * n  # then each image and caption
