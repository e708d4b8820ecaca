"""Batches per rank: disjoint shards of every epoch's bucketed plan, one bucket per step, equal counts,
resume positions, and (two gloo processes) a disk cache filled once for both ranks."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from datagraph_helpers import graph_of, items_at, pipeline, run_nodes, write_image
from runtime.data.batches import split_steps

#: (size, count): three buckets with counts that leave uneven ends for batch 2 on 2 and 3 ranks
SHAPES = [((48, 32), 9), ((32, 48), 7), ((32, 32), 5)]


def make_images(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    k = 0
    for size, count in SHAPES:
        for _ in range(count):
            write_image(root / f"img{k:02d}.png", size, (20 * k % 255, 90, 160), f"item {k}, flat")
            k += 1
    return root


def graph(folder, batch_size=2, drop_last=False, seed=42, cache_dir=None, workers=0):
    nodes = pipeline(folder,
                     bucket=("data.aspect_bucket", {"resolution": 32, "quantization": 8}, {"size": "source.size"}),
                     crop=("data.scale_crop", {}, {"image": "load.image", "bucket": "bucket.bucket"}),
                     tensor=("data.to_tensor", {}, {"image": "crop.image"}),
                     batches=("data.batches", {"batch_size": batch_size, "drop_last": drop_last, "seed": seed,
                                               "workers": workers},
                              {"fields": ["tensor.image", "source.caption"], "bucket": "bucket.bucket"}))
    if cache_dir is not None:
        nodes["count"] = ("testdata.count", {}, {"image": "tensor.image"})
        nodes["cache"] = ("data.disk_cache", {"folder": str(cache_dir)},
                          {"fields": ["count.image", "source.caption", "bucket.bucket"]})
        nodes["batches"][2].update({"fields": ["cache.image", "cache.caption"], "bucket": "cache.bucket"})
    return graph_of(nodes)


@pytest.fixture
def images(tmp_path):
    return make_images(tmp_path / "shards")


def ran(images, registry, tmp_path, **kw):
    return run_nodes(graph(images, **kw), registry, ["batches", "bucket"], tmp=tmp_path)


def buckets_of(r) -> dict[int, tuple]:
    return {i: tuple(it["bucket"]) for i, it in enumerate(items_at(r, "bucket"))}


def shards(source, world, epoch):
    return [source.for_rank(rank, world).plan(epoch) for rank in range(world)]


@pytest.mark.parametrize("world", [2, 3])
def test_shards_are_disjoint_cover_the_plan_and_share_a_bucket_per_step(data_registry, images, tmp_path, world):
    r = ran(images, data_registry, tmp_path)
    source, bucket = r.out("batches", "batches"), buckets_of(r)
    n = sum(c for _, c in SHAPES)
    for epoch in range(3):
        plan = sorted(i for b in source.global_plan(epoch) for i in b)
        assert plan == list(range(n))
        parts = shards(source, world, epoch)
        flat = [i for part in parts for b in part for i in b]
        assert sorted(flat) == plan, "an item is repeated or lost across ranks"
        assert len({len(p) for p in parts}) == 1, [len(p) for p in parts]
        for step in zip(*parts):
            assert len({bucket[i] for b in step for i in b}) == 1, f"epoch {epoch}: a step mixes buckets: {step}"
            assert all(0 < len(b) <= 2 for b in step)
    assert len(source.for_rank(1, world)) == len(shards(source, world, 0)[1])


@pytest.mark.parametrize("workers", [0, 1])
def test_each_rank_reads_its_batches_and_resumes_on_its_own_positions(data_registry, images, tmp_path, workers):
    source = ran(images, data_registry, tmp_path, workers=workers).out("batches", "batches")
    for rank in range(2):
        mine = source.for_rank(rank, 2)
        full = list(mine.epoch(1))
        assert len(full) == len(mine) and [b["_index"] for b in full] == mine.plan(1)
        assert all(b["image"].shape[0] == len(b["_index"]) for b in full)
        again = list(mine.epoch(1, start=3))
        assert [b["_index"] for b in again] == [b["_index"] for b in full[3:]]
        assert all((a["image"] == b["image"]).all() for a, b in zip(again, full[3:]))


def test_shards_are_deterministic_per_seed(data_registry, images, tmp_path):
    a = ran(images, data_registry, tmp_path).out("batches", "batches")
    b = ran(images, data_registry, tmp_path).out("batches", "batches")
    c = ran(images, data_registry, tmp_path, seed=7).out("batches", "batches")
    assert shards(a, 2, 0) == shards(b, 2, 0) and shards(a, 2, 1) == shards(b, 2, 1)
    assert shards(a, 2, 0) != shards(a, 2, 1), "the shards do not change per epoch"
    assert shards(a, 2, 0) != shards(c, 2, 0)


def test_one_rank_keeps_the_plan_of_a_single_process(data_registry, images, tmp_path):
    source = ran(images, data_registry, tmp_path).out("batches", "batches")
    assert source.ranks() == (0, 1)
    assert source.plan(0) == source.global_plan(0) == source.for_rank(0, 1).plan(0)
    assert len(source) == len(source.global_plan(0))


def test_drop_last_gives_full_batches_and_drops_only_uneven_ends(data_registry, images, tmp_path):
    r = ran(images, data_registry, tmp_path, drop_last=True)
    source, bucket = r.out("batches", "batches"), buckets_of(r)
    parts = shards(source, 2, 0)
    flat = [i for part in parts for b in part for i in b]
    assert len(flat) == len(set(flat)) and all(len(b) == 2 for part in parts for b in part)
    # per bucket: the partial batch (as on one rank), then the batch left without a partner step
    per_bucket: dict = {}
    for i in range(len(bucket)):
        per_bucket.setdefault(bucket[i], [0, 0])[0] += 1
    for i in flat:
        per_bucket[bucket[i]][1] += 1
    for total, kept in per_bucket.values():
        assert kept == total // 4 * 4, (total, kept)


def test_uneven_end_spreads_the_leftovers_of_each_bucket():
    # a plan at batch size world * 2: each batch is one step, split over the ranks in the plan's order
    plan = [("a", [0, 1, 2, 3]), ("b", [4, 5, 6]), ("a", [7]), ("c", [8])]
    # b's 3 items spread; a's 1 item joins a's full batch over their two steps; c has no partner: repeated
    assert split_steps(plan, 2) == [[[0, 1], [2]], [[4, 5], [6]], [[3], [7]], [[8], [8]]]
    # a small batch before its bucket's full one: spread together over both steps, in the plan's order
    assert split_steps([("a", [0]), ("a", [1, 2, 3, 4, 5, 6])], 3) == [[[0, 1], [2], [3]], [[4], [5], [6]]]
    assert split_steps(plan, 1) == [[b] for _, b in plan]


def _chunked(rng, world, bs, counts):
    """A shuffled plan as a single process at batch size ``world * bs`` makes it."""
    plan, k = [], 0
    for key, count in counts.items():
        items = list(range(k, k + count))
        k += count
        plan += [(key, items[j:j + world * bs]) for j in range(0, count, world * bs)]
    rng.shuffle(plan)
    return plan, k


def test_split_steps_keeps_its_promises_on_random_plans():
    import random

    rng = random.Random(5)
    for _ in range(300):
        world, bs = rng.randint(2, 4), rng.randint(1, 3)
        counts = {key: rng.randint(1, 14) for key in "abcd"[:rng.randint(1, 4)]}
        plan, k = _chunked(rng, world, bs, counts)
        key_of = {i: key for key, b in plan for i in b}
        steps = split_steps(plan, world)
        assert len(steps) == len(plan), "a step per batch of the plan"
        flat = [i for step in steps for b in step for i in b]
        assert sorted(set(flat)) == list(range(k))
        for (key, batch), step in zip(plan, steps):
            assert len(step) == world and all(1 <= len(b) <= bs for b in step)
            assert {key_of[i] for b in step for i in b} == {key}, "a step mixes buckets or leaves the plan's order"
        for key, count in counts.items():
            repeats = sum(1 for i in flat if key_of[i] == key) - count
            # only at batch size 1, or in a bucket with fewer items than two steps need
            assert repeats == 0 or bs == 1 or count < 2 * world, (world, bs, counts, steps)
            assert repeats < world
        # every step holds its batch's items, but the two that each small batch is spread over
        differ = [j for j, (_, b) in enumerate(plan) if sorted(i for r in steps[j] for i in r) != sorted(b)]
        small = [j for j, (_, b) in enumerate(plan) if len(b) < world]
        assert len(differ) <= 2 * len(small), (plan, steps)


@pytest.mark.parametrize("world, batch_size", [(2, 2), (3, 2), (2, 3)])
def test_n_ranks_train_each_step_on_the_batch_of_one_process_at_n_times_the_batch(
        data_registry, images, tmp_path, world, batch_size):
    """N ranks x batch b: the union of a step's batches is the single-process batch at batch N*b (same
    shuffle, same buckets), but for the two steps a bucket's few leftover items are spread over."""
    many = ran(images, data_registry, tmp_path, batch_size=batch_size).out("batches", "batches")
    one = ran(images, data_registry, tmp_path, batch_size=world * batch_size).out("batches", "batches")
    for epoch in range(2):
        single = one.global_plan(epoch)
        parts = shards(many, world, epoch)
        assert all(len(p) == len(single) for p in parts)
        unions = [sorted(i for b in step for i in b) for step in zip(*parts)]
        differ = [k for k, (u, b) in enumerate(zip(unions, single)) if u != sorted(b)]
        small = [k for k, b in enumerate(single) if len(b) < world]
        assert len(differ) == 2 * len(small) and set(small) <= set(differ), (differ, small)
        assert sorted(i for k in differ for i in unions[k]) == sorted(i for k in differ for i in single[k])
        assert len(differ) < len(single) - 2, "too few steps compared"


def test_every_batch_names_its_epoch(data_registry, images, tmp_path):
    """``_epoch`` beside ``_index``, on one rank and on each of several, with workers, from a resume."""
    source = ran(images, data_registry, tmp_path, workers=1).out("batches", "batches")
    for epoch in (0, 3):
        batches = list(source.epoch(epoch)) + list(source.for_rank(1, 2).epoch(epoch, start=1))
        assert batches and all(type(b["_epoch"]) is int and b["_epoch"] == epoch for b in batches)
        assert all(set(b) == {"image", "caption", "_index", "_epoch"} for b in batches)


def test_a_rank_whose_batch_is_unreadable_still_gets_one(data_registry, images, tmp_path):
    """Every rank must yield a batch per step: an emptied batch takes readable items of its step."""
    broken = images / "img03.png"  # a 48x32 image: header kept, pixels cut
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    source = ran(images, data_registry, tmp_path, batch_size=1).out("batches", "batches")
    counts = [len(list(source.for_rank(rank, 2).epoch(0))) for rank in range(2)]
    assert counts == [len(source.for_rank(0, 2))] * 2, counts


def test_rank_and_world_are_checked(data_registry, images, tmp_path):
    source = ran(images, data_registry, tmp_path).out("batches", "batches")
    with pytest.raises(ValueError, match="rank 2 is not in a world of 2"):
        source.for_rank(2, 2)
    few = ran(images, data_registry, tmp_path, batch_size=4, drop_last=True).out("batches", "batches")
    assert len(few.for_rank(0, 2)) > 0
    with pytest.raises(ValueError, match="8 ranks .*a step needs 8 full batches of one bucket"):
        next(few.for_rank(0, 8).epoch(0))


# -- two real processes on gloo ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank, world, port, images, cache_dir, out_dir):
    import datetime

    import torch
    import torch.distributed as dist

    import datagraph_nodes
    from datagraph_helpers import record_disk_writes
    from runtime.registry import Registry

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        reg = Registry.discover(builtin=True, entry_points=False)
        reg.register_module(datagraph_nodes, "tests")
        written = record_disk_writes()
        out: dict = {"rank": rank}
        for run in ("first", "second"):
            datagraph_nodes.CALLS.clear()
            written.clear()
            g = graph(Path(images), cache_dir=Path(cache_dir))
            source = run_nodes(g, reg, ["batches"], tmp=Path(out_dir)).out("batches", "batches")
            epochs = [[(b["_index"], list(b["image"].shape)) for b in source.epoch(e)] for e in range(2)]
            out[run] = {"len": len(source), "epochs": epochs, "written": list(written),
                        "computed": datagraph_nodes.CALLS.get("count", 0), "ranks": list(source.ranks())}
        (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(out))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_share_one_disk_cache_and_get_their_shards(images, tmp_path):
    import torch.multiprocessing as mp

    cache_dir, out_dir = tmp_path / "cache", tmp_path / "out"
    out_dir.mkdir()
    mp.spawn(_rank_main, args=(2, _free_port(), str(images), str(cache_dir), str(out_dir)), nprocs=2, join=True)
    res = [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(2)]
    n = sum(c for _, c in SHAPES)
    first = [r["first"] for r in res]
    assert [f["ranks"] for f in first] == [[0, 2], [1, 2]]
    written = first[0]["written"] + first[1]["written"]
    files = sorted(p.stem for p in cache_dir.rglob("*.pt"))
    assert len(written) == len(set(written)), "two ranks wrote one cache file"
    assert sorted(written) == files and len(files) == 3 * n  # image, caption and bucket of every item
    assert first[0]["computed"] + first[1]["computed"] == n and min(f["computed"] for f in first) > 0
    assert first[0]["len"] == first[1]["len"]
    for e in range(2):
        a, b = first[0]["epochs"][e], first[1]["epochs"][e]
        assert len(a) == len(b) == first[0]["len"]
        assert [s[1:] for _, s in a] == [s[1:] for _, s in b], "ranks got different buckets in one step"
        items = [i for idx, _ in a + b for i in idx]
        assert sorted(items) == list(range(n))
    second = [r["second"] for r in res]
    assert second[0]["written"] == second[1]["written"] == [] and second[0]["computed"] == second[1]["computed"] == 0
    assert [s["epochs"] for s in second] == [f["epochs"] for f in first]
