"""Disk caches on several machines (gloo ranks whose cache folders differ, as on machines with disks of
their own) and a stop that reaches one rank while the ranks fill a cache together."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from datagraph_helpers import write_image
from test_shards import graph, make_images

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join(rank, world, port):
    import datetime

    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    # a short timeout: a rank left waiting in a collective fails the test instead of hanging it
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=40))


def _registry():
    import datagraph_nodes
    from runtime.registry import Registry

    reg = Registry.discover(builtin=True, entry_points=False)
    reg.register_module(datagraph_nodes, "tests")
    return reg


def _source(reg, images, cache_dir, out_dir, cancel=None):
    from runtime.events import EventBus, ListSink
    from runtime.executor import execute
    from runtime.validate import validate

    v = validate(graph(Path(images), cache_dir=Path(cache_dir)), reg, [])
    assert v.ok, [str(p) for p in v.errors]
    result = execute(v, workspace=Path(out_dir), bus=EventBus([ListSink()]), cancel=cancel,
                     targets=("batches",), keep=("batches",))
    if result.error is not None:
        raise result.error
    return result.outputs["batches"]["batches"]


def _folders_main(rank, world, port, images, folders, out_dir):
    import torch.distributed as dist

    import datagraph_nodes
    from datagraph_helpers import record_disk_writes, run_nodes

    _join(rank, world, port)
    try:
        reg = _registry()
        written = record_disk_writes()
        g = graph(Path(images), cache_dir=Path(folders[rank]))
        source = run_nodes(g, reg, ["batches"], tmp=Path(out_dir)).out("batches", "batches")
        epochs = [[b["_index"] for b in source.epoch(e)] for e in range(2)]
        out = {"written": written, "computed": datagraph_nodes.CALLS.get("count", 0), "epochs": epochs}
        (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(out))
    finally:
        dist.destroy_process_group()


def test_ranks_whose_cache_folders_differ_each_fill_their_folder_whole(tmp_path):
    """Ranks 0 and 1 share folder A (one machine), rank 2 has folder B (another machine's disk): A is filled
    once, split between 0 and 1, B whole by rank 2; nobody writes a file twice and every rank reads every
    entry from its own folder (nothing computed while the epochs run)."""
    import torch.multiprocessing as mp

    from test_shards import SHAPES

    images = make_images(tmp_path / "imgs")
    a, b, out_dir = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    out_dir.mkdir()
    mp.spawn(_folders_main, args=(3, _free_port(), str(images), [str(a), str(a), str(b)], str(out_dir)),
             nprocs=3, join=True)
    res = [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(3)]
    n = sum(c for _, c in SHAPES)
    files = {f: sorted(p.stem for p in f.rglob("*.pt")) for f in (a, b)}
    assert len(files[a]) == len(files[b]) == 3 * n and files[a] == files[b]
    both = res[0]["written"] + res[1]["written"]
    assert len(both) == len(set(both)) and sorted(both) == files[a], "folder A: a file written twice or missed"
    assert sorted(res[2]["written"]) == files[b]
    assert res[0]["computed"] + res[1]["computed"] == n and min(res[0]["computed"], res[1]["computed"]) > 0
    assert res[2]["computed"] == n
    assert not list(a.glob(".ranks-probe-*")) and not list(b.glob(".ranks-probe-*"))
    for e in range(2):
        items = [i for r in res for batch in r["epochs"][e] for i in batch]
        assert sorted(items) == list(range(n)) and len({len(r["epochs"][e]) for r in res}) == 1


def _stop_main(rank, world, port, images, cache_dir, out_dir):
    import time

    import torch.distributed as dist

    import datagraph_nodes
    from runtime.control import CancelToken
    from runtime.data.cache import ROUND_ITEMS
    from runtime.errors import Cancelled

    _join(rank, world, port)
    try:
        reg = _registry()
        real = datagraph_nodes.CountCalls.process
        out: dict = {"round": ROUND_ITEMS}
        for case in ("stop", "error"):
            cancel = CancelToken()
            datagraph_nodes.CALLS.clear()

            def process(self, item, image):
                if rank == 1 and datagraph_nodes.CALLS.get("count", 0) == 3:
                    if case == "stop":
                        cancel.request("SIGTERM")  # a signal that reached rank 1 only
                    else:
                        raise RuntimeError("the encoder ran out of memory")
                time.sleep(0.02)
                return real(self, item, image)

            datagraph_nodes.CountCalls.process = process
            source = _source(reg, images, Path(cache_dir) / case, out_dir, cancel)
            t0 = time.monotonic()
            outcome = "no stop"
            try:
                next(iter(source.epoch(0)))
            except Cancelled as e:
                outcome = f"cancelled: {e}"
            except Exception as e:
                outcome = f"{type(e).__name__}: {e}"
            out[case] = {"outcome": outcome, "seconds": time.monotonic() - t0, "cancelled": cancel.requested,
                         "computed": datagraph_nodes.CALLS.get("count", 0)}
        (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(out))
    finally:
        dist.destroy_process_group()


def test_a_stop_or_failure_on_one_rank_during_a_cache_fill_ends_every_rank_within_a_round(tmp_path):
    """Rank 1 is told to stop after 3 items of a 60-item fill: both ranks stop after the round (rank 0 does
    not compute its whole share, nor wait in a collective for rank 1), and the cache holds whole files.
    The same when rank 1's stage fails: rank 1 raises its error, rank 0 a one-line pointer to it."""
    import torch
    import torch.multiprocessing as mp

    images = tmp_path / "imgs"
    images.mkdir()
    for k in range(60):
        write_image(images / f"i{k:02d}.png", (16, 16), (4 * k, 90, 160), f"item {k}")
    cache_dir, out_dir = tmp_path / "cache", tmp_path / "out"
    out_dir.mkdir()
    mp.spawn(_stop_main, args=(2, _free_port(), str(images), str(cache_dir), str(out_dir)), nprocs=2, join=True)
    res = [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(2)]
    stop = [r["stop"] for r in res]
    assert [r["outcome"].split(":")[0] for r in stop] == ["cancelled", "cancelled"], stop
    assert stop[1]["outcome"] == "cancelled: SIGTERM" and "another rank" in stop[0]["outcome"]
    assert stop[0]["cancelled"], "rank 0 does not know the run stops"
    limit = res[0]["round"]
    assert stop[1]["computed"] == 4 and stop[0]["computed"] <= limit < 30, stop
    assert all(r["seconds"] < 15 for r in stop), stop
    files = list((cache_dir / "stop").rglob("*.pt"))
    assert files and not list(cache_dir.rglob("*.tmp")) and not list(cache_dir.rglob(".ranks-probe-*"))
    for f in files:
        torch.load(f, weights_only=True)
    error = [r["error"] for r in res]
    assert error[1]["outcome"].startswith("DataStageError: node 'count'") and "ran out of memory" in error[1]["outcome"]
    assert error[0]["outcome"].startswith("DataStageError: node 'cache'") and "another rank" in error[0]["outcome"]
    assert error[0]["computed"] <= limit and all(r["seconds"] < 15 for r in error), error
