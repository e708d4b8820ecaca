"""data.merge: per-concept branches (own source, stages, buckets) joined into one item stream."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from datagraph_helpers import graph_of, items_at, make_dataset, run_nodes


@pytest.fixture
def folders(tmp_path):
    a = make_dataset(tmp_path / "a", bad=False)
    b = make_dataset(tmp_path / "b", bad=False)
    return a, b


def two_branches(a, b, *, flip=1.0, b_extra=None, **extra) -> dict:
    """Branch A: flips and tag shuffling at 32 px; branch B (prior, loss weight 0.25): plain, at 48 px."""
    nodes = {
        "concept_a": ("data.concept", {"folder": str(a.root), "recursive": True}, {}),
        "source_a": ("data.concepts", {}, {"concepts": ["concept_a.concept"]}),
        "bucket_a": ("data.aspect_bucket", {"resolution": 32, "quantization": 8}, {"size": "source_a.size"}),
        "load_a": ("data.load_image", {}, {"path": "source_a.path"}),
        "crop_a": ("data.scale_crop", {}, {"image": "load_a.image", "bucket": "bucket_a.bucket"}),
        "flip_a": ("data.random_flip", {"probability": flip}, {"image": "crop_a.image"}),
        "shuffle_a": ("data.shuffle_tags", {"keep_first": 1}, {"caption": "source_a.caption"}),
        "concept_b": ("data.concept", {"folder": str(b.root), "recursive": True, "role": "prior",
                                       "loss_weight": 0.25}, {}),
        "source_b": ("data.concepts", {}, {"concepts": ["concept_b.concept"]}),
        "bucket_b": ("data.aspect_bucket", {"resolution": 48, "quantization": 8}, {"size": "source_b.size"}),
        "load_b": ("data.load_image", {}, {"path": "source_b.path"}),
        "crop_b": ("data.scale_crop", {}, {"image": "load_b.image", "bucket": "bucket_b.bucket"}),
        "merge": ("data.merge", {}, {
            "fields": ["flip_a.image", "shuffle_a.caption", "bucket_a.bucket", "source_a.loss_weight",
                       "source_a.role"],
            "more": b_extra if b_extra is not None else ["crop_b.image", "source_b.caption", "bucket_b.bucket",
                                                         "source_b.loss_weight", "source_b.role"]}),
        "tensor": ("data.to_tensor", {}, {"image": "merge.image"}),
    }
    nodes.update(extra)
    return nodes


def area(b) -> int:
    return b[0] * b[1]


def test_merge_joins_branches_each_with_its_own_stages(data_registry, folders, tmp_path):
    a, b = folders
    ran = run_nodes(graph_of(two_branches(a, b)), data_registry, ["merge", "crop_a", "crop_b", "source_a",
                                                                   "source_b"], tmp=tmp_path)
    merged = items_at(ran, "merge")
    na, nb = len(a.good), len(b.good)
    assert len(merged) == na + nb
    first, second = merged[:na], merged[na:]
    assert [it["role"] for it in merged] == ["standard"] * na + ["prior"] * nb
    assert [it["loss_weight"] for it in merged] == [1.0] * na + [0.25] * nb
    crops_a, crops_b = items_at(ran, "crop_a"), items_at(ran, "crop_b")
    for it, crop in zip(first, crops_a):  # A's items flipped, at A's resolution
        assert it["image"].tobytes() == crop["image"].transpose(Image.Transpose.FLIP_LEFT_RIGHT).tobytes()
        assert abs(area(it["bucket"]) - 32 * 32) <= 32 * 32 * 0.35
    for it, crop in zip(second, crops_b):  # B's as B's crop made them, at B's resolution
        assert it["image"].tobytes() == crop["image"].tobytes()
        assert abs(area(it["bucket"]) - 48 * 48) <= 48 * 48 * 0.35
    captions_a = [it["caption"] for it in items_at(ran, "source_a")]
    captions_b = [it["caption"] for it in items_at(ran, "source_b")]
    assert [it["caption"] for it in second] == captions_b  # B: no tag shuffling
    shuffled = [it["caption"] for it in first]
    assert shuffled != captions_a  # A: shuffled, the first tag kept, the same tags
    for got, want in zip(shuffled, captions_a):
        assert got.split(", ")[0] == want.split(", ")[0] and sorted(got.split(", ")) == sorted(want.split(", "))


def test_branch_stages_are_seeded_by_their_own_index_and_each_epoch(data_registry, folders, tmp_path):
    a, b = folders
    ran = run_nodes(graph_of(two_branches(a, b, flip=0.5)), data_registry, ["merge", "flip_a", "shuffle_a"],
                    tmp=tmp_path)
    na = len(a.good)
    for epoch in (0, 1):
        merged = items_at(ran, "merge", epoch=epoch, seed=7)
        alone = items_at(ran, "flip_a", epoch=epoch, seed=7)  # branch A evaluated on its own
        assert [it["image"].tobytes() for it in merged[:na]] == [it["image"].tobytes() for it in alone]
        assert [it["caption"] for it in merged[:na]] == [it["caption"] for it in items_at(ran, "shuffle_a",
                                                                                           epoch=epoch, seed=7)]
    e0 = [it["caption"] for it in items_at(ran, "merge", epoch=0, seed=7)[:na]]
    e1 = [it["caption"] for it in items_at(ran, "merge", epoch=1, seed=7)[:na]]
    assert e0 != e1  # fresh augmentation every epoch


def test_batches_after_a_merge_are_one_size_and_carry_role_and_loss_weight(data_registry, folders, tmp_path):
    a, b = folders
    nodes = two_branches(a, b, batches=("data.batches", {"batch_size": 3, "seed": 3}, {
        "fields": ["tensor.image", "merge.loss_weight", "merge.role", "merge.caption"], "bucket": "merge.bucket"}))
    source = run_nodes(graph_of(nodes), data_registry, ["batches"], tmp=tmp_path).out("batches", "batches")
    na, nb = len(a.good), len(b.good)
    seen = []
    for batch in source.epoch(0):
        assert isinstance(batch["image"], torch.Tensor)  # stacked: one size per batch
        assert isinstance(batch["role"], list) and all(isinstance(r, str) for r in batch["role"])
        for i, role, w in zip(batch["_index"], batch["role"], batch["loss_weight"].tolist()):
            assert (role, w) == (("standard", 1.0) if i < na else ("prior", 0.25))
        seen += batch["_index"]
    assert sorted(seen) == list(range(na + nb))
    assert source.epoch_summary(0).items == na + nb


def test_a_cache_after_the_merge_recomputes_only_the_changed_branch(data_registry, folders, tmp_path):
    a, b = folders

    def fill(b_resolution):
        nodes = two_branches(a, b, cache=("data.disk_cache", {"folder": str(tmp_path / "cache")},
                                          {"fields": ["tensor.image", "merge.caption"]}),
                             sink=("testdata.consume", {}, {"batches": "batches.batches"}),
                             batches=("data.batches", {"batch_size": 2}, {
                                 "fields": ["cache.image", "cache.caption"], "bucket": "merge.bucket"}))
        nodes["bucket_b"][1]["resolution"] = b_resolution
        ran = run_nodes(graph_of(nodes), data_registry, ["sink"], tmp=tmp_path)
        return [m for m in ran.logs() if m.startswith("cache ready")]

    total = len(a.good) + len(b.good)
    assert fill(48) == [f"cache ready for epoch 0 (variation 0): 0 of {total} item(s) found, {total} computed, "
                        f"0 skipped"]
    # B's images change size; A's entries (and every caption) are still valid
    assert fill(40) == [f"cache ready for epoch 0 (variation 0): {len(a.good)} of {total} item(s) found, "
                        f"{len(b.good)} computed, 0 skipped"]


def test_a_bad_file_in_a_branch_is_skipped_under_its_merged_index(data_registry, tmp_path):
    a = make_dataset(tmp_path / "a", bad=False)
    b = make_dataset(tmp_path / "b", bad=True)  # a truncated jpg, found bad while loading
    nodes = two_branches(a, b, batches=("data.batches", {"batch_size": 2}, {
        "fields": ["tensor.image", "merge.role"], "bucket": "merge.bucket"}))
    source = run_nodes(graph_of(nodes), data_registry, ["batches"], tmp=tmp_path).out("batches", "batches")
    batches = list(source.epoch(0))
    summary = source.epoch_summary(0)
    assert [s.path for s in summary.skipped] == [str(b.truncated)]
    (bad,) = summary.skipped
    assert bad.index >= len(a.good)  # the merged index, in B's part
    assert str(b.corrupt) in [s.path for s in summary.scan_skipped]  # B's scan counts too
    kept = sorted(i for batch in batches for i in batch["_index"])
    assert bad.index not in kept and len(kept) == source.items - 1


def problems_of(data_registry, nodes):
    from runtime.validate import validate

    v = validate(graph_of(nodes), data_registry, [])
    return [(p.node, p.field, p.message) for p in v.errors]


def test_branches_that_differ_are_an_error_naming_the_merge_and_its_port(data_registry, folders):
    a, b = folders
    lacks = problems_of(data_registry, two_branches(a, b, b_extra=[
        "crop_b.image", "source_b.caption", "bucket_b.bucket", "source_b.loss_weight"]))
    assert len(lacks) == 1 and lacks[0][:2] == ("merge", "input 'more'")
    assert "branch 2 (source 'source_b') lacks 'role'" in lacks[0][2]
    # A hands on PIL images, B tensors: a tensor is an image (a subtype), the other way round is not
    nodes = two_branches(a, b, tensor_b=("data.to_tensor", {}, {"image": "crop_b.image"}), b_extra=[
        "tensor_b.image", "source_b.caption", "bucket_b.bucket", "source_b.loss_weight", "source_b.role"])
    assert problems_of(data_registry, nodes) == []
    nodes["tensor_a"] = ("data.to_tensor", {}, {"image": "flip_a.image"})
    nodes["merge"][2]["fields"][0] = "tensor_a.image"
    nodes["merge"][2]["more"][0] = "crop_b.image"
    typed = problems_of(data_registry, nodes)
    assert [p[:2] for p in typed] == [("merge", "input 'more'")]
    assert "field 'image' of branch 2 (crop_b.image) is Image, but the first branch's (tensor_a.image) is " \
           "ImageTensor" in typed[0][2]
    mixed = two_branches(a, b)
    mixed["merge"][2]["fields"][1] = "source_b.caption"
    (p,) = problems_of(data_registry, mixed)
    assert p[:2] == ("merge", "input 'fields'") and "come from several sources" in p[2]


def test_the_engine_refuses_differing_branches_too(data_registry, folders, tmp_path):
    """A merge built without the validator's check (a graph built in code) fails with the same words."""
    from runtime.data.engine import merge_branches

    a, b = folders
    nodes = two_branches(a, b, tensor_a=("data.to_tensor", {}, {"image": "crop_a.image"}))
    ran = run_nodes(graph_of(nodes), data_registry, ["source_a", "source_b", "tensor_a", "crop_b"], tmp=tmp_path)
    first = [ran.out("source_a", "caption"), ran.out("source_a", "role")]
    with pytest.raises(ValueError, match=r"branch 2 \(source 'source_b'\) lacks 'role'"):
        merge_branches(first, [ran.out("source_b", "caption")])
    with pytest.raises(ValueError, match=r"field 'image' of branch 2 \(crop_b.image\) is Image, but"):
        merge_branches([ran.out("tensor_a", "image")], [ran.out("crop_b", "image")])
    merged = merge_branches([ran.out("crop_b", "image")], [ran.out("tensor_a", "image")])  # a tensor is an image
    assert [list(b) for b in merged] == [["image"], ["image"]]


def test_preview_of_a_merge_shows_each_branch_with_its_files(data_registry, folders, tmp_path):
    from runtime.data.preview import preview

    a, b = folders
    na = len(a.good)
    records = preview(graph_of(two_branches(a, b)), "merge", na + 2, data_registry)
    assert len(records) == na + 2 and not any(r.error for r in records)
    assert all(r.path.startswith(str(a.root)) for r in records[:na])
    assert all(r.path.startswith(str(b.root)) for r in records[na:])
    assert all(r.kind == "image" and r.caption for r in records)
    assert records[na].fields["role"] == "prior"


def test_merged_batches_are_the_same_from_worker_processes(data_registry, folders, tmp_path):
    a, b = folders

    def batches(workers):
        nodes = two_branches(a, b, flip=0.5, batches=("data.batches", {"batch_size": 4, "workers": workers}, {
            "fields": ["tensor.image", "merge.caption", "merge.role"], "bucket": "merge.bucket"}))
        source = run_nodes(graph_of(nodes), data_registry, ["batches"], tmp=tmp_path).out("batches", "batches")
        return list(source.epoch(1))

    inline, forked = batches(0), batches(2)
    assert [x["_index"] for x in inline] == [x["_index"] for x in forked]
    for x, y in zip(inline, forked):
        assert x["caption"] == y["caption"] and x["role"] == y["role"] and torch.equal(x["image"], y["image"])
