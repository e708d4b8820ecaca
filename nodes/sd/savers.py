"""Saver nodes of the SD family."""

from __future__ import annotations

import re
from pathlib import Path

from runtime import Choice, Dir, Input, Param, node
from runtime.port_types import DiffusionModel

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]*$")


@node("sd.save_lora", title="Save LoRA", category="Save")
class SaveLora:
    """Write the model's LoRA as a diffusers/peft file and a kohya file (A1111, ComfyUI), with metadata
    (base model, rank, alpha, steps, graph). Files: ``<name>.safetensors`` (kohya) and
    ``<name>.diffusers.safetensors``, in the run folder's ``lora/`` unless ``folder`` is set."""

    model = Input(DiffusionModel, doc="a model with LoRA adapters (e.g. from train.loop)")
    name = Param(str, "lora", doc="file name without extension")
    formats = Param(Choice("both", "kohya", "diffusers"), "both", doc="which files to write")
    dtype = Param(Choice("float16", "bfloat16", "float32"), "float16", doc="dtype of the saved weights")
    folder = Param(Dir("save"), optional=True, doc="where to write (default: <run folder>/lora)")

    def run(self, ctx, model):
        from .build import torch_dtype
        from .lora_files import save_diffusers_lora, save_kohya_lora
        from .model import check_sd_model

        model = check_sd_model(model, "sd.save_lora")
        if model.lora is None:
            raise ValueError("the model has no LoRA adapters: train it through sd.lora_setup first")
        if not NAME_RE.match(self.name) or "/" in self.name or "\\" in self.name:
            raise ValueError(f"name {self.name!r} must be a plain file name (letters, digits, . _ - space)")
        folder = Path(self.folder) if self.folder else ctx.workspace / "lora"
        dtype = torch_dtype(self.dtype)
        steps = int(getattr(model, "progress", {}).get("step", 0))
        extra = {"rank": model.lora.rank, "alpha": model.lora.alpha, "steps": steps}
        if self.formats in ("both", "kohya"):
            path = save_kohya_lora(model, folder / f"{self.name}.safetensors", dtype, ctx.graph_name)
            ctx.saved(path, "kohya_lora", **extra)
        if self.formats in ("both", "diffusers"):
            path = save_diffusers_lora(model, folder / f"{self.name}.diffusers.safetensors", dtype, ctx.graph_name)
            ctx.saved(path, "diffusers_lora", **extra)
        return {}
