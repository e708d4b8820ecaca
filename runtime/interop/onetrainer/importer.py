"""Import a OneTrainer training config as a nodetrainer graph (``nodetrainer import onetrainer``).

``import_onetrainer`` reads the config (``config.read_config``: migrations, presets, concepts and
samples), finds the family table for its model type (``family.family_for``) and builds the graph:
loader, one data branch per concept (``data_graph``), setup, optimizer, schedule, objective and loop
(``training``), hooks and savers (``hooks``). Each module reports every key it reads that differs
from OneTrainer's default; what no module handled is reported unsupported at the end, so nothing is
dropped silently.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ...graph import Graph
from ...graph_file import dumps_graph
from ...registry import Registry, default_registry
from . import data_graph, hooks, top_level, training
from .builder import GraphBuilder
from .config import OneTrainerConfig, read_config
from .family import METHODS, OneTrainerFamily, family_for, known_model_types
from .report import Report
from .values import Mapped, Unsupported

#: node type of each role -> the node id it gets (the ids ``Mapped`` params are applied to)
ROLE_IDS = {"train.loop": "train", "train.lr_schedule": "schedule", "train.optimizer": "optimizer",
            "train.diffusion_objective": "objective", "train.flow_matching_objective": "objective"}


class ImportError_(ValueError):
    """A config nodetrainer cannot import at all (unknown model type or training method)."""


@dataclass
class Imported:
    """The graph of an import and its report."""

    graph: Graph
    report: Report
    config: OneTrainerConfig

    def text(self, registry: Registry | None = None) -> str:
        return dumps_graph(self.graph, registry)


class Import:
    """One import in progress: the config's values, the family, the graph builder and the report."""

    def __init__(self, cfg: OneTrainerConfig, family: OneTrainerFamily, registry: Registry):
        self.cfg, self.v, self.family = cfg, cfg.values, family
        self.method = self.v["training_method"]
        self.b = GraphBuilder(registry)
        self.report = Report()
        self.accum = max(1, int(self.v["gradient_accumulation_steps"] or 1))
        self.hooks: list[str] = []
        self.tokenizers: dict[str, str] = {}
        self.stop_parts: list[str] = []
        self.setup = ""
        self.pending_checkpointing = self.pending_offload = False

    # -- what changed ---------------------------------------------------------------------------------
    def changed(self, key: str) -> bool:
        """Whether a dotted key (``concepts[i].…`` / ``samples[i].…`` for list items) differs from the default."""
        for name, lists in (("concepts", self.cfg.concept_changed), ("samples", self.cfg.sample_changed)):
            if key.startswith(name + "["):
                index, _, rest = key[len(name) + 1:].partition("].")
                i = int(index)
                return i < len(lists) and rest in lists[i]
        return key in self.cfg.changed

    def mapped(self, key: str, target: str) -> None:
        if self.changed(key):
            self.report.mapped(key, target)

    def not_needed(self, key: str, reason: str) -> None:
        if self.changed(key):
            self.report.not_needed(key, reason)

    def unsupported(self, key: str, reason: str) -> None:
        """Reported whether or not the key was changed: a default we cannot express is not silent either."""
        self.report.unsupported(key, reason)

    # -- setting params ---------------------------------------------------------------------------------
    def apply(self, keys: str | tuple, mapped: Mapped, node_id: str | None = None) -> None:
        """Set the params of a ``values`` result (``"node_type.param"`` keys go to that role's node,
        bare ``param`` keys to ``node_id``) and report ``keys`` as mapped to them, with its notes."""
        targets = []
        for name, value in mapped.params.items():
            node_type, _, param = name.rpartition(".")
            target = ROLE_IDS.get(node_type, node_type) if node_type else node_id
            if target not in self.b.nodes:
                continue
            self.b.set(target, param, value)
            targets.append(f"{target}.{param}")
        keys = (keys,) if isinstance(keys, str) else keys
        for key in keys:
            self.mapped(key, ", ".join(targets) or "(no param: the default behaviour)")
            if self.changed(key):
                for note in mapped.notes:
                    self.report.note(key, note)

    def attempt(self, keys: str | tuple, make, node_id: str | None = None) -> bool:
        """``apply(keys, make())``; an ``Unsupported`` is reported against the first key instead."""
        try:
            self.apply(keys, make(), node_id)
            return True
        except Unsupported as e:
            self.unsupported(keys if isinstance(keys, str) else keys[0], f"{e.what}: {e.reason}")
            return False

    def tokenizer(self, name: str) -> str:
        """The ``node.port`` of a tokenizer: the embedding setup's where it replaces the loader's."""
        return self.tokenizers.get(name, f"base.{name}")


def import_onetrainer(path: str | os.PathLike, concepts: str | None = None, samples: str | None = None,
                      registry: Registry | None = None) -> Imported:
    """Read OneTrainer config ``path`` (``concepts``/``samples``: files that replace the config's own)
    and build its graph. ValueError with one line for a file that cannot be read or imported."""
    cfg = read_config(os.fspath(path), concepts, samples)
    return build(cfg, registry, os.path.basename(os.fspath(path)))


def build(cfg: OneTrainerConfig, registry: Registry | None = None, source: str = "config") -> Imported:
    """The graph of a read config (see ``import_onetrainer``)."""
    v = cfg.values
    family = family_for(v["model_type"])
    if family is None:
        raise ImportError_(f"model_type {v['model_type']}: nodetrainer has no family for this OneTrainer "
                           f"model type yet (it imports {', '.join(known_model_types())})")
    method = v["training_method"]
    if method not in METHODS or method not in family.setups:
        have = ", ".join(m for m in METHODS if m in family.setups)
        raise ImportError_(f"training_method {method}: nodetrainer cannot train {v['model_type']} this way "
                           f"yet (it can: {have})")
    imp = Import(cfg, family, registry or default_registry())
    imp.report.mapped("model_type", f"base ({family.loader}), {family.name} nodes")
    imp.report.mapped("training_method", f"setup ({family.setups[method]})")
    training.add_model(imp)
    data = data_graph.add(imp)
    training.add_training(imp, data)
    hooks.add(imp, data)
    top_level.account(imp)
    for note in cfg.notes:
        imp.report.note("(file)", note)
    imp.report.account(cfg.changed | _list_keys(cfg))
    name = f"{family.name} {method.lower().replace('_', '-')} (from {source})"
    graph = imp.b.graph(name, description(v, source))
    return Imported(graph, imp.report, cfg)


def _list_keys(cfg: OneTrainerConfig) -> set[str]:
    keys = {f"concepts[{i}].{k}" for i, changed in enumerate(cfg.concept_changed) for k in changed}
    keys |= {f"samples[{i}].{k}" for i, changed in enumerate(cfg.sample_changed) for k in changed}
    return keys | {k for k in cfg.unknown}


def description(v: dict, source: str) -> str:
    return (f"Imported from the OneTrainer config {source} ({v['model_type']}, {v['training_method']}) by "
            "nodetrainer import onetrainer; its report lists what each setting became.")
