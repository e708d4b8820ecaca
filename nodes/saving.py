"""Saver scaffolding shared by every family: names, targets, metadata, the saver-node shape.

A family's saver is a ``FileSaver`` dataclass (what to write, where) with a ``save``
method, built by a saver node that derives from ``SaverNode`` and declares its own
typed ``model`` input. Everything written goes through ``save_tensors`` (atomic,
byte-reproducible safetensors).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any as _Any

from nodes.train.artifacts import ModelSaver, step_path
from runtime import Output
from runtime.port_types import Saver

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._ -]*")
#: dtype choices of full-model savers (keep: each part's own)
FULL_DTYPES = ("keep", "float16", "bfloat16", "float32")
MODEL_DOC = ("save this model when the graph reaches the node (e.g. train.trained); leave it unconnected to use "
             "the saver only in periodic-save hooks")


def check_name(name: str) -> str:
    """``name`` if it is a plain file name, else a ValueError."""
    if not NAME_RE.fullmatch(name or "") or "/" in name or "\\" in name:
        raise ValueError(f"name {name!r} must be a plain file name (letters, digits, . _ - space)")
    return name


def steps_of(model) -> int:
    """Optimizer steps the model has trained (0 for a model straight from a loader)."""
    return int(getattr(model, "progress", {}).get("step", 0))


def base_metadata(model, graph_name: str, fmt: str) -> dict[str, str]:
    """What the file is, which model it came from, how long it trained and in which graph."""
    return {
        "nodetrainer_format": fmt,
        "nodetrainer_base_model": model.source,
        "nodetrainer_model_version": model.version,
        "nodetrainer_prediction_type": getattr(model, "prediction_type", ""),
        "nodetrainer_steps": str(steps_of(model)),
        "nodetrainer_graph": graph_name,
    }


def save_tensors(path: Path, tensors: dict, metadata: dict[str, str], dtype=None) -> Path:
    """Atomic, reproducible write of ``tensors`` as contiguous CPU tensors (floating point ones in
    ``dtype`` when given) with string metadata."""
    from nodes.weights_io import write_safetensors
    from runtime.fileio import atomic_path

    def cast(t):
        t = t.detach().to("cpu")
        return (t.to(dtype) if dtype is not None and t.is_floating_point() else t).contiguous()

    with atomic_path(path) as tmp:
        write_safetensors({k: cast(v) for k, v in tensors.items()}, tmp, metadata={"format": "pt", **metadata})
    return path


@dataclass
class FileSaver(ModelSaver):
    """A saver that writes under ``folder`` (default: the run folder's ``default_folder``) a file or
    folder called ``name``. ``model_check`` turns a model of another family into a clear error."""

    name: str
    folder: str | None = None
    default_folder = "models"
    node = "save"

    def __post_init__(self):
        check_name(self.name)

    def base(self, ctx) -> Path:
        return Path(self.folder) if self.folder else ctx.workspace / self.default_folder

    def target(self, ctx, filename: str, step: int | None) -> Path:
        """``<base>/<filename>``, with ``-step000123`` before the extension for periodic saves."""
        return step_path(self.base(ctx) / filename, step)

    def folder_target(self, ctx, name: str, step: int | None) -> Path:
        """A folder: the step goes at the end even when the name has dots."""
        return self.base(ctx) / (name if step is None else f"{name}-step{step:06d}")

    def check(self, model):
        """``model`` if this saver can write it; subclasses refuse other families."""
        return model


class SaverNode:
    """Shape of saver nodes: an optional typed ``model`` input (declared by each family's node), a
    ``saver`` output; subclasses build their ``FileSaver`` in ``make_saver``."""

    saver = Output(Saver, doc="this saver, for periodic-save hooks")

    def make_saver(self) -> ModelSaver:
        raise NotImplementedError

    def run(self, ctx, model: _Any = None):
        saver = self.make_saver()
        if model is not None:
            saver.save(ctx, model, step=None)
        return {"saver": saver}
