"""Run workspaces: ``runs/<graph name>-<timestamp>/`` with the graph as run and its events."""

from __future__ import annotations

import json
import platform
import re
import sys
import time
from pathlib import Path

from . import __version__
from .events import to_json
from .fileio import atomic_write_text
from .graph import Graph, NodeEntry
from .validate import Validation

GRAPH_FILE = "graph.yaml"
EVENTS_FILE = "events.jsonl"
RUN_FILE = "run.json"


def slug(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", name.strip()).strip("-.").lower()
    return s[:60] or "run"


def create_workspace(runs_dir: Path, graph_name: str) -> Path:
    """A new, empty run folder under ``runs_dir``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = runs_dir / f"{slug(graph_name)}-{stamp}"
    path, i = base, 2
    while True:
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            path = base.with_name(f"{base.name}-{i}")
            i += 1


def as_run_graph(graph: Graph, validation: Validation) -> Graph:
    """The graph exactly as it runs: overrides applied, every param resolved (absolute
    paths, concrete seeds), node versions pinned. It runs again from any folder."""
    out = Graph(name=graph.name, description=graph.description, layout=dict(graph.layout),
                notes=list(graph.notes))
    for node_id in graph.nodes:
        rn = validation.nodes[node_id]
        out.nodes[node_id] = NodeEntry(node_id, rn.spec.type_id, rn.spec.version, dict(rn.params),
                                       dict(graph.nodes[node_id].inputs))
    return out


class EventLog:
    """Event sink that appends to the workspace's ``events.jsonl``."""

    def __init__(self, path: Path):
        self.file = open(path, "a", encoding="utf-8")

    def __call__(self, event: dict) -> None:
        if not self.file.closed:
            self.file.write(to_json(event) + "\n")
            self.file.flush()

    def close(self) -> None:
        self.file.close()


def write_run_record(workspace: Path, graph: Graph, validation: Validation, argv: list[str],
                     registry=None) -> None:
    """Write ``graph.yaml`` (as run) and ``run.json`` (command line, overrides, versions)."""
    from .graph_file import dumps_graph

    atomic_write_text(workspace / GRAPH_FILE, dumps_graph(as_run_graph(graph, validation), registry))
    record = {
        "graph": str(graph.path) if graph.path else None,
        "argv": argv,
        "overrides": [o.text for o in validation.overrides],
        "inputs": validation.input_values,
        "plan": validation.order,
        "nodetrainer": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    atomic_write_text(workspace / RUN_FILE, json.dumps(record, indent=2, default=str) + "\n")
