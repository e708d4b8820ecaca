"""Helpers of the OneTrainer import tests: write a config, run an imported graph on the tiny model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from PIL import Image

from runtime.events import EventBus, ListSink
from runtime.executor import execute
from runtime.graph import NodeEntry
from runtime.interop.onetrainer.family import family_for
from runtime.paths import ASSETS_DIR
from runtime.registry import default_registry
from runtime.validate import validate

DEMO = ASSETS_DIR / "demo_dataset"
COLOURS = ("red", "blue", "green")


def images(folder: Path, captions=None) -> Path:
    """Three 64x64 images with .txt captions."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, colour in enumerate(COLOURS):
        Image.new("RGB", (64, 64), colour).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(captions[i] if captions else f"a {colour} square", encoding="utf-8")
    return folder


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


def param(imported, node: str, name: str):
    """A node's param as the graph runs it: as set, else its type's default (left out of the file)."""
    entry = imported.graph.nodes[node]
    return entry.params.get(name, default_registry().get(entry.type).params[name].default)


def fields(imported, node: str = "batches") -> list[str]:
    return [str(x) for x in imported.graph.nodes[node].inputs["fields"]]


def saved(events, node: str = "save") -> list[str]:
    """Paths the saver ``node`` wrote (``"train"``: the periodic saves and backups of its hooks)."""
    return [e["path"] for e in events if e["event"] == "saved" and e["node"] == node]


def assert_saves(events, final: str, periodic: str) -> None:
    """The final saver wrote ``final`` and the save hook (every 2 steps) ``periodic``; a sample was made."""
    files = saved(events)
    assert files and all(Path(f).is_file() for f in files) and Path(files[0]).name == final
    assert [Path(f).name for f in saved(events, "train") if f.endswith(".safetensors")] == [periodic], \
        "the save every 2 steps"
    assert any(e["event"] == "sample" for e in events), "the sample every 2 steps"
