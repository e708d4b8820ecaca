"""Shared fixtures: a registry with the built-in nodes plus the test-only pack, and CLI helpers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TESTPACK = Path(__file__).resolve().parent / "fixtures" / "testpack"
if str(TESTPACK) not in sys.path:
    sys.path.insert(0, str(TESTPACK))

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def bench():
    """benchmarks/bench_train.py as a module (it is a script, not a package)."""
    import importlib.util

    if "bench_train" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_train", ROOT / "benchmarks" / "bench_train.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules["bench_train"]


@pytest.fixture(scope="session")
def registry():
    """Built-in nodes plus the test pack (registered directly, not through entry points)."""
    from runtime.registry import Registry

    reg = Registry.discover(builtin=True, entry_points=False)
    reg.register_package("nt_testpack", "test pack")
    assert not reg.load_errors, reg.load_errors
    return reg


def subprocess_env(**extra: str) -> dict:
    """Environment for CLI subprocesses: the repo and the test pack (with its entry point) importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(TESTPACK), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["HF_HUB_OFFLINE"] = "1"
    env.update(extra)
    return env


def run_cli(*args: str, cwd: Path | None = None, input: str | None = None, timeout: float = 120):
    """Run ``python -m runtime ARGS`` and return the CompletedProcess (text mode)."""
    return subprocess.run([sys.executable, "-m", "runtime", *map(str, args)], cwd=cwd or ROOT,
                          env=subprocess_env(), input=input, capture_output=True, text=True, timeout=timeout)


def parse_events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def run_preset(tmp_path: Path, name: str, base: Path, *sets: str) -> tuple[Path, dict, list[dict]]:
    """Run the shipped preset ``graphs/<name>`` through the CLI with ``base`` (a saved tiny model) as its
    base model, on the demo dataset at 64 px for 2 steps, plus ``sets`` (``KEY=VALUE``). Asserts it ran
    both steps and sampled once; returns the run folder, the graph's own saves (format -> path) and the
    events."""
    from runtime.paths import ASSETS_DIR, GRAPHS_DIR

    ws = tmp_path / "run"
    args = [f"base_model={base}", f"dataset={ASSETS_DIR / 'demo_dataset'}", "resolution=64", "steps=2",
            "bucket.quantization=16", f"cache.folder={tmp_path / 'cache'}", "sample.steps=2", *sets]
    r = run_cli("run", GRAPHS_DIR / name, "--events", "jsonl", "--workspace", ws,
                *[x for s in args for x in ("--set", s)], timeout=900)
    events = parse_events(r.stdout)
    errors = [e.get("traceback") or e.get("message") for e in events if e["event"] == "error"]
    assert r.returncode == 0, (errors, r.stderr[-3000:])
    assert [e["step"] for e in events if e["event"] == "progress" and e["node"] == "train"] == [1, 2]
    assert len([e for e in events if e["event"] == "sample" and e["node"] == "sample"]) == 1
    own = {e["format"]: e["path"] for e in events if e["event"] == "saved" and e["node"] != "train"}
    return ws, own, events


@pytest.fixture
def write_graph(tmp_path):
    """Write YAML text to a file in tmp_path and return its path."""

    def write(text: str, name: str = "graph.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write
