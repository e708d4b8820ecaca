"""Saver scaffolding shared by every family: names, targets, metadata, the saver-node shape.

A family's saver is a ``FileSaver`` dataclass (what to write, where) with a ``save``
method, built by a saver node that derives from ``SaverNode`` and declares its own
typed ``model`` input. Everything written goes through ``save_tensors`` (atomic,
byte-reproducible safetensors).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any as _Any

from nodes.train.artifacts import ModelSaver, step_path
from runtime import Choice, Dir, Param

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._ -]*")
#: dtype choices of full-model savers (keep: each part's own)
FULL_DTYPES = ("keep", "float16", "bfloat16", "float32")
SAVER_DOC = "this saver, for periodic-save hooks (it writes models of the type it serves)"
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


def model_metadata(model, graph_name: str, fmt: str, dtype: str, architecture: str) -> dict[str, str]:
    """Header metadata of a full-model file: what it is, where it came from, how long it trained."""
    meta = {
        **base_metadata(model, graph_name, fmt),
        "nodetrainer_dtype": dtype,
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": architecture,
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models",
        "modelspec.title": graph_name or "nodetrainer model",
        "modelspec.prediction_type": "v" if getattr(model, "prediction_type", "") == "v_prediction" else "epsilon",
    }
    if getattr(model, "lora", None) is not None:
        meta["nodetrainer_lora_fused"] = f"rank {model.lora.rank}, alpha {model.lora.alpha}"
    if getattr(model, "embedding", None) is not None:
        meta["nodetrainer_embedding"] = " ".join(model.embedding.tokens)
    return meta


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


@dataclass
class LoraFileSaver(FileSaver):
    """The model's LoRA as a kohya file (``<name>.safetensors``) and/or a diffusers/peft file
    (``<name>.diffusers.safetensors``). A family implements ``write_kohya`` and ``write_diffusers``."""

    formats: str = "both"
    dtype: str = "float16"
    _warned: bool = field(default=False, init=False, repr=False, compare=False)
    default_folder = "lora"
    format = "lora"
    setup_node = "a LoRA setup"

    def write_kohya(self, model, path: Path, dtype, graph_name: str) -> tuple[Path, list[str]]:
        """Write the kohya file; return it and the adapted layers it leaves out."""
        raise NotImplementedError

    def write_diffusers(self, model, path: Path, dtype, graph_name: str) -> Path:
        raise NotImplementedError

    def save(self, ctx, model, step=None) -> list[Path]:
        from nodes.diffusers_parts import torch_dtype
        from nodes.weights_check import listed

        model = self.check(model)
        if model.lora is None:
            raise ValueError(f"the model has no LoRA adapters: train it through {self.setup_node} first")
        dtype = torch_dtype(self.dtype)
        extra = {"rank": model.lora.rank, "alpha": model.lora.alpha, "steps": steps_of(model)}
        paths = []
        if self.formats in ("both", "kohya"):
            path, left_out = self.write_kohya(model, self.target(ctx, f"{self.name}.safetensors", step), dtype,
                                              ctx.graph_name)
            if left_out and not self._warned:
                self._warned = True  # once per saver, not at every periodic save
                other = " (the diffusers file has them)" if self.formats == "both" else ""
                ctx.warn(f"the kohya file leaves out {len(left_out)} adapted layer(s) that kohya's loader drops and "
                         f"older A1111 cannot place: {listed(left_out, 8)}{other}", left_out=left_out[:100])
            ctx.saved(path, "kohya_lora", **extra)
            paths.append(path)
        if self.formats in ("both", "diffusers"):
            path = self.write_diffusers(model, self.target(ctx, f"{self.name}.diffusers.safetensors", step), dtype,
                                        ctx.graph_name)
            ctx.saved(path, "diffusers_lora", **extra)
            paths.append(path)
        return paths


@dataclass
class DiffusersFolderSaver(FileSaver):
    """The whole model as a diffusers folder ``<name>`` (LoRA adapters fused in). A family implements
    ``write``."""

    dtype: str = "keep"
    format = "diffusers"

    def write(self, model, folder: Path, state_dicts: dict, graph_name: str) -> Path:
        raise NotImplementedError

    def save(self, ctx, model, step=None) -> list[Path]:
        from nodes.lora_fusion import dtype_label, part_state_dicts

        model = self.check(model)
        state_dicts = part_state_dicts(model, self.dtype)
        path = self.write(model, self.folder_target(ctx, self.name, step), state_dicts, ctx.graph_name)
        ctx.saved(path, "diffusers", dtype=dtype_label(state_dicts), steps=steps_of(model),
                  lora_fused=getattr(model, "lora", None) is not None)
        return [path]


@dataclass
class CheckpointFileSaver(FileSaver):
    """The whole model as one ``<name>.safetensors`` in the family's original layout (LoRA fused in).
    A family implements ``write`` (returning the path and warnings)."""

    dtype: str = "float16"
    format = "checkpoint"

    def write(self, model, path: Path, state_dicts: dict, graph_name: str) -> tuple[Path, list[str]]:
        raise NotImplementedError

    def save(self, ctx, model, step=None) -> list[Path]:
        from nodes.lora_fusion import dtype_label, part_state_dicts

        model = self.check(model)
        state_dicts = part_state_dicts(model, self.dtype)
        path, warnings = self.write(model, self.target(ctx, f"{self.name}.safetensors", step), state_dicts,
                                    ctx.graph_name)
        for message in warnings:
            ctx.warn(message)
        ctx.saved(path, "checkpoint", dtype=dtype_label(state_dicts), steps=steps_of(model),
                  lora_fused=getattr(model, "lora", None) is not None)
        return [path]


# -- the params of the saver nodes, shared by the families' nodes (each sets ``saver_class``) ------

class LoraSaverParams:
    """Params of a LoRA saver node."""

    saver_class: type = LoraFileSaver
    name = Param(str, "lora", doc="file name without extension")
    formats = Param(Choice("both", "kohya", "diffusers"), "both", doc="which files to write")
    dtype = Param(Choice("float16", "bfloat16", "float32"), "float16", doc="dtype of the saved weights")
    folder = Param(Dir("save"), optional=True, doc="where to write (default: <run folder>/lora)")

    def make_saver(self):
        return self.saver_class(self.name, self.folder, formats=self.formats, dtype=self.dtype)


class DiffusersSaverParams:
    """Params of a diffusers-folder saver node."""

    saver_class: type = DiffusersFolderSaver
    name = Param(str, "model", doc="folder name")
    dtype = Param(Choice(*FULL_DTYPES), "keep", doc="dtype of the saved weights (keep: each part's own)")
    folder = Param(Dir("save"), optional=True, doc="where to write (default: <run folder>/models)")

    def make_saver(self):
        return self.saver_class(self.name, self.folder, dtype=self.dtype)


class CheckpointSaverParams:
    """Params of a single-file checkpoint saver node."""

    saver_class: type = CheckpointFileSaver
    name = Param(str, "model", doc="file name without extension")
    dtype = Param(Choice(*FULL_DTYPES), "float16", doc="dtype of the saved weights (keep: each part's own)")
    folder = Param(Dir("save"), optional=True, doc="where to write (default: <run folder>/models)")

    def make_saver(self):
        return self.saver_class(self.name, self.folder, dtype=self.dtype)


class SaverNode:
    """Shape of saver nodes: an optional typed ``model`` input and a ``saver`` output that serves that
    type (both declared by each family's node: ``Output(Saver, serves=MyModel, doc=SAVER_DOC)``);
    subclasses build their ``FileSaver`` in ``make_saver``."""

    def make_saver(self) -> ModelSaver:
        raise NotImplementedError

    def run(self, ctx, model: _Any = None):
        saver = self.make_saver()
        if model is not None and ctx.is_main:  # several ranks (torchrun): rank 0 writes the file
            saver.save(ctx, model, step=None)
        return {"saver": saver}
