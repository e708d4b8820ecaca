"""The sample engine: determinism, fresh augmentation per epoch, bucketing, resume, workers, contracts."""

from __future__ import annotations

import pickle

import pytest
import torch

from datagraph_helpers import EXAMPLE_GRAPH, batches_of, graph_of, pipeline, run_nodes


@pytest.fixture
def example(data_registry, clean_dataset, tmp_path):
    from runtime.graph_file import load_graph

    graph = load_graph(EXAMPLE_GRAPH, data_registry)

    def open_source(*sets):
        ran = run_nodes(graph, data_registry, ["batches"], [f"dataset={clean_dataset.root}", *sets], tmp=tmp_path)
        return ran.out("batches", "batches")

    return open_source


def same_batches(a: list[dict], b: list[dict]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x["_index"] != y["_index"] or x["caption"] != y["caption"] or not torch.equal(x["image"], y["image"]):
            return False
    return True


def test_same_graph_and_seed_give_the_same_batches(example):
    first, second = example(), example()
    assert first.fields == ["image", "caption", "loss_weight"]
    a, b = batches_of(first), batches_of(second)
    assert same_batches(a, b)
    assert sorted(i for x in a for i in x["_index"]) == list(range(first.items))


def test_another_seed_gives_other_batches(example):
    a = batches_of(example())
    b = batches_of(example("batches.seed=8"))
    assert not same_batches(a, b)


def test_each_epoch_gets_fresh_order_and_augmentation(example):
    source = example()
    e0, e1 = batches_of(source, 0), batches_of(source, 1)
    assert [x["_index"] for x in e0] != [x["_index"] for x in e1]
    by_index = [{i: (x["image"][k], x["caption"][k]) for x in e for k, i in enumerate(x["_index"])} for e in (e0, e1)]
    differ = [i for i in by_index[0] if not torch.equal(by_index[0][i][0], by_index[1][i][0])]
    assert differ, "random crop and flip should change some images between epochs"
    assert any(by_index[0][i][1] != by_index[1][i][1] for i in by_index[0]), "tags should be reshuffled"
    # the first tag stays first (keep_first: 1), and the tag set is unchanged
    for i, (_, cap) in by_index[0].items():
        assert cap.split(", ")[0] == by_index[1][i][1].split(", ")[0]
        assert sorted(cap.split(", ")) == sorted(by_index[1][i][1].split(", "))
    assert same_batches(batches_of(source, 1), e1), "an epoch is reproducible"


def test_batches_hold_one_bucket_each(example, data_registry):
    source = example()
    plan = source.plan(0)
    buckets = {}
    for batch in batches_of(source):
        shapes = {tuple(t.shape) for t in batch["image"]}
        assert len(shapes) == 1
        buckets.setdefault(shapes.pop(), []).extend(batch["_index"])
    assert len(buckets) >= 3, "the dataset has several aspect ratios"
    assert sum(len(v) for v in buckets.values()) == source.items
    assert len(source) == len(plan)
    assert all(len(b) <= 2 for b in plan)


def test_resume_starts_at_the_given_batch(example):
    source = example()
    full = batches_of(source, 3)
    assert same_batches(batches_of(source, 3, start=2), full[2:])


def test_workers_give_the_same_batches_and_report_bad_items(data_registry, dataset, tmp_path):
    from runtime.data.batches import BatchJob
    from runtime.data.engine import Eval
    from runtime.graph_file import load_graph

    def open_source(*sets):
        graph = load_graph(EXAMPLE_GRAPH, data_registry)
        return run_nodes(graph, data_registry, ["batches"], [f"dataset={dataset.root}", *sets], tmp=tmp_path)

    serial = batches_of(open_source().out("batches", "batches"), 1)
    ran = open_source("batches.workers=2")
    source = ran.out("batches", "batches")
    assert same_batches(batches_of(source, 1), serial)
    assert sum(len(b["_index"]) for b in serial) == len(dataset.good)
    assert [s.path for s in source.epoch_summary(1).skipped] == [str(dataset.truncated)]
    assert any(e.get("path") == str(dataset.truncated) and e.get("level") == "warning" for e in ran.events)
    job = BatchJob(source.as_fields(), Eval(1, source.seed), source.plan(1))
    clone = pickle.loads(pickle.dumps(job))
    assert torch.equal(clone[0]["image"], serial[0]["image"])


def test_numbers_and_sizes_collate_to_tensors(data_registry, clean_dataset, tmp_path):
    g = graph_of(pipeline(clean_dataset.root,
                          bucket=("data.aspect_bucket", {"resolution": 32, "quantization": 8}, {"size": "source.size"}),
                          batches=("data.batches", {"batch_size": 3, "shuffle": False},
                                   {"fields": ["source.loss_weight", "source.path", "bucket.bucket"]})))
    g.nodes["concept"].params["loss_weight"] = 0.5
    source = run_nodes(g, data_registry, ["batches"], tmp=tmp_path).out("batches", "batches")
    batch = batches_of(source)[0]
    assert batch["loss_weight"].dtype == torch.float32 and batch["loss_weight"].tolist() == [0.5] * 3
    assert isinstance(batch["path"], list) and all(p.endswith((".png", ".jpg", ".webp")) for p in batch["path"])
    assert batch["bucket"].shape == (3, 2)
    assert batch["_index"] == [0, 1, 2]


def test_drop_last_leaves_out_short_batches(data_registry, clean_dataset, tmp_path):
    def plan(drop):
        g = graph_of(pipeline(clean_dataset.root, batches=("data.batches", {"batch_size": 4, "drop_last": drop},
                                                           {"fields": ["source.path"]})))
        return run_nodes(g, data_registry, ["batches"], tmp=tmp_path).out("batches", "batches").plan(0)

    n = len(clean_dataset.good)
    assert [len(b) for b in plan(True)] == [4] * (n // 4)
    assert sorted(len(b) for b in plan(False)) == sorted([4] * (n // 4) + ([n % 4] if n % 4 else []))


def test_two_fields_with_one_name_are_an_error_naming_both_links(data_registry, clean_dataset, tmp_path):
    g = graph_of(pipeline(clean_dataset.root,
                          tensor=("data.to_tensor", {}, {"image": "load.image"}),
                          batches=("data.batches", {}, {"fields": ["tensor.image", "load.image"]})))
    with pytest.raises(Exception) as e:
        run_nodes(g, data_registry, ["batches"], tmp=tmp_path)
    assert "tensor.image" in str(e.value) and "load.image" in str(e.value) and "'batches'" in str(e.value)


def test_fields_of_different_sources_cannot_be_combined(data_registry, clean_dataset, tmp_path):
    nodes = pipeline(clean_dataset.root)
    nodes["other"] = ("data.concepts", {}, {"concepts": ["concept.concept"]})
    nodes["mask"] = ("data.load_mask", {}, {"path": "other.mask_path", "image": "load.image"})
    with pytest.raises(Exception) as e:
        run_nodes(graph_of(nodes), data_registry, ["mask"], tmp=tmp_path)
    assert "different sources" in str(e.value) and "other.mask_path" in str(e.value)


def test_a_shared_upstream_runs_once_per_item(data_registry, clean_dataset, tmp_path):
    import datagraph_nodes

    nodes = pipeline(clean_dataset.root,
                     shared=("testdata.count", {}, {"image": "load.image"}),
                     tensor=("data.to_tensor", {}, {"image": "shared.image"}),
                     mask=("data.load_mask", {}, {"path": "source.mask_path", "image": "shared.image"}),
                     batches=("data.batches", {"batch_size": 2}, {"fields": ["tensor.image", "mask.mask"]}))
    datagraph_nodes.CALLS.clear()
    source = run_nodes(graph_of(nodes), data_registry, ["batches"], tmp=tmp_path).out("batches", "batches")
    assert sum(len(b["_index"]) for b in batches_of(source)) == source.items
    assert datagraph_nodes.CALLS["shared"] == source.items
