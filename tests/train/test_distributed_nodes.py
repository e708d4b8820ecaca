"""torchrun on "two machines" (two agents with --nnodes 2 on this one, each in its own folder with its own
cache folder, as machines with disks of their own), a rank that cannot start, and a stop while the ranks
fill a disk cache together (SIGTERM to the agent, which sends it on to every rank; a stop that reaches
one rank only is tested in-process in tests/data/test_shards_nodes.py)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def disk_cache_graph(tmp_path: Path) -> Path:
    """The quickstart graph with its cache on disk (``--set cache.folder=...`` picks the folder)."""
    text = (ROOT / "graphs" / "quickstart.yaml").read_text(encoding="utf-8")
    assert "type: data.ram_cache@2" in text
    path = tmp_path / "disk-quickstart.yaml"
    path.write_text(text.replace("type: data.ram_cache@2", "type: data.disk_cache@2"), encoding="utf-8")
    return path


def node_command(node: int, port: int, graph: Path, *sets: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node),
            "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(port),
            "-m", "runtime", "run", str(graph), "--runs-dir", "runs", *[x for s in sets for x in ("--set", s)]]


def launch(cmd: list[str], cwd: Path) -> subprocess.Popen:
    """``cmd`` in ``cwd``, its output in files there (a pipe nobody reads could fill and block it)."""
    with open(cwd / "stdout.txt", "w") as out, open(cwd / "stderr.txt", "w") as err:
        return subprocess.Popen(cmd, cwd=cwd, env=ENV, stdout=out, stderr=err, stdin=subprocess.DEVNULL)


def finish(proc: subprocess.Popen, cwd: Path, timeout: float) -> tuple[int, str]:
    """The return code and stderr of ``proc`` once it ends (killed after ``timeout`` seconds)."""
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, (cwd / "stderr.txt").read_text(errors="replace")


def two_nodes(tmp_path: Path, graph: Path, sets: list[list[str]], timeout: float = 150):
    """Both agents, node n in ``tmp_path/node<n>``; their (returncode, stderr)."""
    port = free_port()
    procs = []
    for node in (0, 1):
        cwd = tmp_path / f"node{node}"
        cwd.mkdir(exist_ok=True)
        procs.append((launch(node_command(node, port, graph, *sets[node]), cwd), cwd))
    end = time.monotonic() + timeout
    try:
        return [finish(p, cwd, max(1.0, end - time.monotonic())) for p, cwd in procs]
    finally:
        for p, _ in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def events_of(ws: Path) -> list[dict]:
    return [json.loads(line) for line in (ws / "events.jsonl").read_text().splitlines()]


def test_two_nodes_train_each_filling_its_own_disk_cache(tmp_path):
    """Node 1 has another working folder and another cache folder: rank 0 picks the run folder, rank 1
    logs to rank-1.log there, each node fills its whole cache on its own disk, and both ranks train."""
    graph = disk_cache_graph(tmp_path)
    caches = [tmp_path / f"node{n}" / "cache" for n in (0, 1)]
    base = ["steps=2", f"dataset={ROOT / 'assets' / 'demo_dataset'}"]
    res = two_nodes(tmp_path, graph, [base + [f"cache.folder={caches[n]}"] for n in (0, 1)])
    assert [rc for rc, _ in res] == [0, 0], "\n".join(err[-2000:] for _, err in res)
    assert not (tmp_path / "node1" / "runs").exists(), "node 1 picked a run folder of its own"
    (ws,) = [p for p in (tmp_path / "node0" / "runs").iterdir() if p.is_dir()]
    events = events_of(ws)
    kinds = [e["event"] for e in events]
    assert kinds.count("run_started") == 1 and [e["status"] for e in events if e["event"] == "run_finished"] == ["ok"]
    assert [e["step"] for e in events if e["event"] == "progress" and e["node"] == "train"] == [1, 2]
    assert any("on 2 ranks" in e.get("message", "") for e in events if e["event"] == "log")
    rank1 = (ws / "rank-1.log").read_text()
    assert "on 2 ranks" in rank1 and rank1.rstrip().endswith("run ok")
    # 8 images: a latent and an embedding each, in both folders; each node computed all 8 itself
    assert [len(list(c.rglob("*.pt"))) for c in caches] == [16, 16]
    assert "0 of 8 item(s) found, 8 computed" in rank1
    assert any("0 of 8 item(s) found, 8 computed" in e.get("message", "") for e in events)


def test_a_rank_that_cannot_start_stops_every_rank_at_once(tmp_path):
    """Node 1's dataset folder is missing (not copied to that machine): both agents end at once with
    usage errors, rank 0 saying that rank 1 could not start, instead of waiting for it in a collective."""
    graph = disk_cache_graph(tmp_path)
    t0 = time.monotonic()
    res = two_nodes(tmp_path, graph, [["steps=2", f"dataset={ROOT / 'assets' / 'demo_dataset'}"],
                                      ["steps=2", f"dataset={tmp_path / 'not-copied'}"]], timeout=120)
    assert time.monotonic() - t0 < 110
    assert all(rc != 0 for rc, _ in res)
    assert "rank 1 could not start the run" in res[0][1]
    assert "not-copied" in res[1][1] and "cannot run" in res[1][1]
    assert "rank 1: " in res[0][1] and "not-copied" in res[0][1]  # rank 0's console says rank 1's problem too
    assert not (tmp_path / "node0" / "runs").exists() or not any((tmp_path / "node0" / "runs").iterdir())


# -- a stop during the cache fill -------------------------------------------------------------------------


@pytest.fixture
def many_images(tmp_path):
    """Enough images that two ranks take a few seconds to fill a cache with them."""
    from PIL import Image

    root = tmp_path / "many"
    root.mkdir()
    for k in range(200):
        Image.new("RGB", (64, 64), (k % 255, 90, 160)).save(root / f"i{k:03d}.png")
        (root / f"i{k:03d}.txt").write_text(f"item {k}", encoding="utf-8")
    return root


def standalone(tmp_path: Path, images: Path) -> subprocess.Popen:
    graph = disk_cache_graph(tmp_path)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "runtime", "run", str(graph), "--runs-dir", "runs", "--set", "steps=2",
           "--set", f"dataset={images}", "--set", f"cache.folder={tmp_path / 'cache'}"]
    return launch(cmd, tmp_path)


def wait_for_fill(tmp_path: Path, proc: subprocess.Popen, limit: float = 120) -> Path:
    """The run folder, once rank 0 reported the cache fill's progress."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        assert proc.poll() is None, (tmp_path / "stderr.txt").read_text(errors="replace")[-3000:]
        for events in (tmp_path / "runs").glob("*/events.jsonl"):
            if '"phase": "cache"' in events.read_text():
                return events.parent
        time.sleep(0.2)
    raise AssertionError("no cache fill was reported")


def check_stopped(tmp_path: Path, ws: Path, err: str) -> None:
    """Both ranks ended as a stopped run, with no traceback of ours, and the cache holds whole files."""
    import torch

    finished = [e for e in events_of(ws) if e["event"] == "run_finished"]
    assert [e["status"] for e in finished] == ["cancelled"], finished
    assert (ws / "rank-1.log").read_text().rstrip().endswith("run cancelled")
    ours = [line for line in err.splitlines() if line.strip().startswith("File ") and any(
        str(ROOT / part) in line for part in ("runtime", "nodes"))]
    assert not ours and "internal error" not in err, err[-3000:]  # torchrun's own traceback may follow
    cache = tmp_path / "cache"
    files = list(cache.rglob("*.pt"))
    assert 0 < len(files) < 400, "the fill was not stopped"
    assert not list(cache.rglob("*.tmp")) and not list(cache.glob(".ranks-probe-*"))
    for f in files:
        torch.load(f, weights_only=True)


def test_sigterm_to_the_agent_during_a_cache_fill_stops_both_ranks_promptly(tmp_path, many_images):
    proc = standalone(tmp_path, many_images)
    try:
        ws = wait_for_fill(tmp_path, proc)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = finish(proc, tmp_path, 60)
    assert time.monotonic() - t0 < 30
    check_stopped(tmp_path, ws, err)
