"""Several bucket resolutions in one run (OneTrainer's '512,768,1024'): a seeded draw per item and epoch."""

from __future__ import annotations

import math

import pytest
import torch

from datagraph_helpers import graph_of, items_at, make_dataset, pipeline, run_nodes

RESOLUTIONS = ["32,48", 64]  # entries may hold several, comma-separated


def nodes_for(root, *, resolutions=RESOLUTIONS, **extra) -> dict:
    nodes = pipeline(root, **{
        "bucket": ("data.aspect_bucket", {"resolutions": resolutions, "quantization": 8}, {"size": "source.size"}),
        "crop": ("data.scale_crop", {}, {"image": "load.image", "bucket": "bucket.bucket"}),
        "tensor": ("data.to_tensor", {}, {"image": "crop.image"}),
    })
    nodes["concept"][1]["balancing"] = 4.0  # 36 items: each resolution drawn several times
    nodes.update(extra)
    return nodes


def target(bucket) -> int:
    """The resolution a bucket was made for (its area's square root, to the nearest candidate)."""
    return min((32, 48, 64), key=lambda r: abs(math.sqrt(bucket[0] * bucket[1]) - r))


def buckets(ran, epoch=0, seed=0):
    return [it["bucket"] for it in items_at(ran, "bucket", epoch=epoch, seed=seed)]


def test_items_draw_their_resolution_per_epoch_from_a_seeded_generator(data_registry, tmp_path):
    ds = make_dataset(tmp_path / "images", bad=False)
    ran = run_nodes(graph_of(nodes_for(ds.root)), data_registry, ["bucket"], tmp=tmp_path)
    e0 = buckets(ran, 0, seed=5)
    assert {target(b) for b in e0} == {32, 48, 64}  # every resolution of the list is used
    assert buckets(ran, 0, seed=5) == e0  # same seed: same assignment
    again = run_nodes(graph_of(nodes_for(ds.root)), data_registry, ["bucket"], tmp=tmp_path)
    assert buckets(again, 0, seed=5) == e0  # also in another run
    assert buckets(ran, 1, seed=5) != e0  # a fresh draw each epoch
    assert buckets(ran, 0, seed=6) != e0  # and for another seed
    per_item = {}
    for epoch in range(4):  # one image's repeats draw independently
        for i, b in enumerate(buckets(ran, epoch, seed=5)):
            per_item.setdefault(i % len(ds.good), set()).add(target(b))
    assert any(len(s) > 1 for s in per_item.values())


def test_one_resolution_in_the_list_is_the_resolution_param(data_registry, tmp_path):
    ds = make_dataset(tmp_path / "images", bad=False)
    one = run_nodes(graph_of(nodes_for(ds.root, resolutions=["48"])), data_registry, ["bucket"], tmp=tmp_path)
    nodes = nodes_for(ds.root, resolutions=[])
    nodes["bucket"][1]["resolution"] = 48
    plain = run_nodes(graph_of(nodes), data_registry, ["bucket"], tmp=tmp_path)
    assert buckets(one) == buckets(plain) == buckets(plain, 3, seed=9)


def test_every_batch_has_one_size(data_registry, tmp_path):
    ds = make_dataset(tmp_path / "images", bad=False)
    nodes = nodes_for(ds.root, batches=("data.batches", {"batch_size": 4, "seed": 2},
                                        {"fields": ["tensor.image"], "bucket": "bucket.bucket"}))
    source = run_nodes(graph_of(nodes), data_registry, ["batches"], tmp=tmp_path).out("batches", "batches")
    sizes = set()
    for epoch in (0, 1):
        for batch in source.epoch(epoch):
            assert isinstance(batch["image"], torch.Tensor), "a batch mixed sizes"
            sizes.add(tuple(batch["image"].shape[-2:]))
    assert {target((w, h)) for h, w in sizes} == {32, 48, 64}


def test_a_drawn_bucket_must_come_through_the_cache_that_holds_what_it_sized(data_registry, tmp_path):
    from runtime.errors import NodeFailure

    ds = make_dataset(tmp_path / "images", bad=False)
    extra = {"cache": ("data.ram_cache", {}, {"fields": ["tensor.image", "bucket.bucket"]})}
    past = nodes_for(ds.root, **extra, batches=("data.batches", {"batch_size": 4},
                                                 {"fields": ["cache.image"], "bucket": "bucket.bucket"}))
    with pytest.raises(NodeFailure, match=r"input 'bucket' \(bucket.bucket\) is drawn at random per epoch by "
                                          r"'bucket', but field 'image' comes through cache 'cache'.*connect "
                                          r"cache.bucket to 'bucket'"):
        run_nodes(graph_of(past), data_registry, ["batches"], tmp=tmp_path)
    through = nodes_for(ds.root, **extra, batches=("data.batches", {"batch_size": 4},
                                                    {"fields": ["cache.image"], "bucket": "cache.bucket"}))
    source = run_nodes(graph_of(through), data_registry, ["batches"], tmp=tmp_path).out("batches", "batches")
    for epoch in (0, 1, 2):
        assert all(isinstance(b["image"], torch.Tensor) for b in source.epoch(epoch))
    # a cache of what the bucket does not size (captions) may sit beside a bucket read directly
    beside = nodes_for(ds.root, cache=("data.ram_cache", {}, {"fields": ["source.caption"]}), batches=(
        "data.batches", {"batch_size": 4}, {"fields": ["cache.caption", "tensor.image"], "bucket": "bucket.bucket"}))
    source = run_nodes(graph_of(beside), data_registry, ["batches"], tmp=tmp_path).out("batches", "batches")
    assert all(isinstance(b["image"], torch.Tensor) for b in source.epoch(1))


def test_bad_resolutions_are_errors_naming_the_param(data_registry, tmp_path):
    from runtime.validate import validate

    ds = make_dataset(tmp_path / "images", bad=False)

    def errors(resolutions, quantization=8):
        nodes = nodes_for(ds.root, resolutions=resolutions)
        nodes["bucket"][1]["quantization"] = quantization
        return [(p.node, p.field, p.message) for p in validate(graph_of(nodes), data_registry, []).errors]

    assert errors(["512, 768,1024"]) == []
    (e,) = errors(["512,big"])
    assert e[:2] == ("bucket", "param 'resolutions'") and "not a resolution: 'big'" in e[2]
    (e,) = errors(["512", "99999"])
    assert e[:2] == ("bucket", "param 'resolutions'") and "outside 8..8192" in e[2]
    (e,) = errors(["512", "32"], quantization=64)
    assert e[:2] == ("bucket", "param 'quantization'") and "more than resolutions 32" in e[2]
