"""Bad data: unreadable files and missing captions are skipped with warnings and counted; empty concepts fail."""

from __future__ import annotations

import pytest

from datagraph_helpers import batches_of, graph_of, pipeline, run_nodes


def graph(folder, **params):
    nodes = pipeline(folder,
                     bucket=("data.aspect_bucket", {"resolution": 32, "quantization": 8}, {"size": "source.size"}),
                     crop=("data.scale_crop", {}, {"image": "load.image", "bucket": "bucket.bucket"}),
                     tensor=("data.to_tensor", {}, {"image": "crop.image"}),
                     batches=("data.batches", {"batch_size": 3, **params},
                              {"fields": ["tensor.image", "source.caption"], "bucket": "bucket.bucket"}))
    return graph_of(nodes)


def test_bad_files_are_skipped_with_warnings_and_counted(data_registry, dataset, tmp_path):
    ran = run_nodes(graph(dataset.root), data_registry, ["batches"], tmp=tmp_path)
    scan_warnings = ran.warnings()
    assert any(str(dataset.corrupt) in w and "unreadable image" in w for w in scan_warnings)
    assert any(str(dataset.uncaptioned) in w and "no caption" in w for w in scan_warnings)
    assert not any(str(dataset.truncated) in w for w in scan_warnings), "its header is fine: found while loading"

    source = ran.out("batches", "batches")
    assert source.items == len(dataset.good) + 1  # the truncated file is in the index space
    delivered = [i for b in batches_of(source, 0) for i in b["_index"]]
    assert len(delivered) == len(dataset.good)
    load_warnings = [e for e in ran.events if e["event"] == "log" and e.get("level") == "warning"
                     and e.get("path") == str(dataset.truncated)]
    assert len(load_warnings) == 1 and "unreadable image" in load_warnings[0]["message"]
    summary = source.epoch_summary(0)
    assert summary.complete and summary.items == len(dataset.good)
    assert {s.path for s in summary.scan_skipped} == {str(dataset.corrupt), str(dataset.uncaptioned)}
    assert [s.path for s in summary.skipped] == [str(dataset.truncated)] and summary.skipped[0].node == "load"
    end = [m for m in ran.logs() if m.startswith("epoch 0:")]
    assert end and "skipped 3 (2 at scan, 1 while loading)" in end[-1]

    # the next epoch leaves the known-bad item out without warning again, and still counts it
    delivered = [i for b in batches_of(source, 1) for i in b["_index"]]
    assert len(delivered) == len(dataset.good)
    assert len([e for e in ran.events if e.get("path") == str(dataset.truncated)]) == 1
    assert source.epoch_summary(1).skipped_count == 3


def test_a_caption_deleted_after_the_scan_skips_its_item(data_registry, clean_dataset, tmp_path):
    ran = run_nodes(graph(clean_dataset.root, shuffle=False), data_registry, ["batches"], tmp=tmp_path)
    victim = clean_dataset.good[2]
    victim.with_suffix(".txt").unlink()
    source = ran.out("batches", "batches")
    assert sum(len(b["_index"]) for b in batches_of(source)) == len(clean_dataset.good) - 1
    (skipped,) = source.epoch_summary(0).skipped
    assert skipped.path == str(victim) and skipped.reason.startswith("no caption")


def test_a_concept_without_readable_images_names_its_folder(data_registry, tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"garbage")
    (folder / "a.txt").write_text("a")
    with pytest.raises(Exception) as e:
        run_nodes(graph(folder), data_registry, ["batches"], tmp=tmp_path)
    assert "no readable images" in str(e.value) and str(folder) in str(e.value) and "'concept'" in str(e.value)

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(Exception) as e:
        run_nodes(graph(empty), data_registry, ["batches"], tmp=tmp_path)
    assert "no images with extensions" in str(e.value) and str(empty) in str(e.value)


def test_a_failing_stage_is_an_error_not_a_skip(data_registry, clean_dataset, tmp_path):
    nodes = pipeline(clean_dataset.root,
                     tensor=("data.to_tensor", {}, {"image": "load.image"}),
                     rot=("data.random_rotate", {"probability": 1.0}, {"image": "tensor.image"}),
                     batches=("data.batches", {"batch_size": 1}, {"fields": ["rot.image"]}))
    source = run_nodes(graph_of(nodes), data_registry, ["batches"], tmp=tmp_path).out("batches", "batches")
    from runtime.data import DataStageError

    with pytest.raises(DataStageError) as e:
        batches_of(source)
    assert "node 'rot' (data.random_rotate)" in str(e.value) and "before To tensor" in str(e.value)
    assert str(clean_dataset.root) in str(e.value), "the message names the item's file"
