"""Helpers of the OneTrainer import tests: write a config, run an imported graph on the tiny model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from runtime.events import EventBus, ListSink
from runtime.executor import execute
from runtime.graph import NodeEntry
from runtime.interop.onetrainer.family import family_for
from runtime.paths import ASSETS_DIR
from runtime.registry import default_registry
from runtime.validate import validate

DEMO = ASSETS_DIR / "demo_dataset"


def write_config(folder: Path, config: dict, name: str = "config.json") -> Path:
    path = folder / name
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def dataset(folder: Path, n: int = 4) -> Path:
    """A copy of ``n`` demo images with their captions (tests may add masks or files beside them)."""
    folder.mkdir(parents=True, exist_ok=True)
    for image in sorted(DEMO.glob("*.png"))[:n]:
        shutil.copy(image, folder / image.name)
        shutil.copy(image.with_suffix(".txt"), folder / f"{image.stem}.txt")
    return folder


def problems(graph) -> list[str]:
    v = validate(graph, default_registry())
    return [str(p) for p in v.problems if p.severity == "error"]


def run_tiny(graph, model_type: str, workspace: Path, max_steps: int = 2):
    """Run ``graph`` with its loader ``base`` replaced by the family's tiny model, for ``max_steps`` updates.
    Returns (result, events)."""
    family = family_for(model_type)
    name, _, version = family.tiny_loader.partition("@")
    graph.nodes["base"] = NodeEntry("base", name, int(version))
    graph.nodes["train"].params["max_steps"] = max_steps
    graph.nodes["train"].params["device"] = "cpu"
    graph.nodes["train"].params["precision"] = "fp32"
    v = validate(graph, default_registry(), for_run=True)
    assert v.ok, [str(p) for p in v.problems]
    sink = ListSink()
    result = execute(v, workspace=workspace, bus=EventBus([sink]), graph_name=graph.name)
    assert result.ok, result.error
    return result, sink.events
