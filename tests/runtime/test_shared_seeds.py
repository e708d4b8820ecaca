"""``seed: -1`` under torchrun: every rank validates the graph itself, and all must pick the same seeds
(else each rank shuffles the data its own way and samples are repeated or lost within an epoch)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from runtime.paths import GRAPHS_DIR

QUICKSTART = GRAPHS_DIR / "quickstart.yaml"


def random_seeds(random_seeds: int | None) -> dict:
    """The seeds a run of the quickstart with ``seed=-1`` resolves, by node id."""
    from runtime.graph_file import load_graph
    from runtime.registry import default_registry
    from runtime.validate import validate

    registry = default_registry()
    result = validate(load_graph(QUICKSTART, registry), registry, ["seed=-1"], for_run=True,
                      random_seeds=random_seeds)
    assert result.ok, result.problems
    return {node: r.params["seed"] for node, r in result.nodes.items() if "seed" in r.params}


def test_a_shared_source_gives_the_same_seeds_and_each_node_its_own():
    first, again = random_seeds(1234), random_seeds(1234)
    assert len(first) >= 3 and first == again
    assert len(set(first.values())) == len(first), "nodes get seeds of their own"
    assert all(0 <= s <= 2**32 - 1 for s in first.values())
    assert random_seeds(1235) != first


def test_without_a_source_each_run_picks_fresh_seeds():
    assert random_seeds(None) != random_seeds(None)


def _rank_main(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    import torch.distributed as dist

    from nodes.train import distributed
    from runtime.cli import _shared_seed_source

    distributed.init("cpu", timeout_s=30)
    try:
        Path(out, f"rank{rank}.json").write_text(json.dumps(random_seeds(_shared_seed_source(2))))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_resolve_seed_minus_one_alike(tmp_path):
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_rank_main, args=(port, str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    seeds = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert seeds[0] and seeds[0] == seeds[1]
