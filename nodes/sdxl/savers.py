"""Saver nodes of the SDXL family: LoRA files, diffusers folders, single-file checkpoints.

Each node outputs a saver on its ``saver`` port (for periodic-save hooks) and, when its
optional ``model`` input is connected, saves that model right away. Periodic saves add
``-step000123`` to names; every write is atomic. (The embedding saver: ``sdxl.save_embedding``.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nodes.saving import FULL_DTYPES, MODEL_DOC, SAVER_DOC, FileSaver, LoraFileSaver, SaverNode, steps_of
from runtime import Choice, Dir, Input, Output, Param, node
from runtime.port_types import Saver

from .types import SDXLModel


def check_sdxl_model(model, node: str):
    """``model`` if it is an SDXL model, else a clear error naming ``node``."""
    from .model import SDXLModel as Value

    if not isinstance(model, Value):
        family = getattr(model, "family", type(model).__name__)
        raise TypeError(f"{node} needs an SDXL model, got a {family!r} model")
    return model


@dataclass
class _SDXLSaver(FileSaver):
    node = "sdxl.save"

    def check(self, model):
        return check_sdxl_model(model, self.node)


@dataclass
class LoraSaver(LoraFileSaver, _SDXLSaver):
    """The model's LoRA as a kohya file (SGM names) and/or a diffusers/peft file."""

    node = "sdxl.save_lora"
    setup_node = "sdxl.lora_setup"

    def write_kohya(self, model, path, dtype, graph_name):
        from .files import save_kohya_lora

        return save_kohya_lora(model, path, dtype, graph_name)

    def write_diffusers(self, model, path, dtype, graph_name):
        from .files import save_diffusers_lora

        return save_diffusers_lora(model, path, dtype, graph_name)


@dataclass
class DiffusersSaver(_SDXLSaver):
    """The whole model as a diffusers folder ``<name>`` (LoRA adapters fused in)."""

    dtype: str = "keep"
    node = "sdxl.save_diffusers"
    format = "diffusers"

    def save(self, ctx, model, step=None) -> list[Path]:
        from nodes.lora_fusion import dtype_label, part_state_dicts

        from .files import write_diffusers_folder

        model = self.check(model)
        state_dicts = part_state_dicts(model, self.dtype)
        path = write_diffusers_folder(model, self.folder_target(ctx, self.name, step), state_dicts, ctx.graph_name)
        ctx.saved(path, "diffusers", dtype=dtype_label(state_dicts), steps=steps_of(model),
                  lora_fused=model.lora is not None)
        return [path]


@dataclass
class CheckpointSaver(_SDXLSaver):
    """The whole model as one ``<name>.safetensors`` in the original SDXL layout (LoRA fused in)."""

    dtype: str = "float16"
    node = "sdxl.save_checkpoint"
    format = "checkpoint"

    def save(self, ctx, model, step=None) -> list[Path]:
        from nodes.lora_fusion import dtype_label, part_state_dicts

        from .files import write_checkpoint

        model = self.check(model)
        state_dicts = part_state_dicts(model, self.dtype)
        path, warnings = write_checkpoint(model, self.target(ctx, f"{self.name}.safetensors", step), state_dicts,
                                          ctx.graph_name)
        for message in warnings:
            ctx.warn(message)
        ctx.saved(path, "checkpoint", dtype=dtype_label(state_dicts), steps=steps_of(model),
                  lora_fused=model.lora is not None)
        return [path]


class _SaverNode(SaverNode):
    model = Input(SDXLModel, optional=True, doc=MODEL_DOC)
    saver = Output(Saver, serves=SDXLModel, doc=SAVER_DOC)


@node("sdxl.save_lora", title="Save LoRA (SDXL)", category="Save", sink=True)
class SaveLora(_SaverNode):
    """Write the model's LoRA as a kohya file (A1111, ComfyUI, kohya's sd-scripts: ``lora_unet_`` with the
    original SDXL block names, ``lora_te1_``, ``lora_te2_``) and a diffusers/peft file
    (``load_lora_weights``), with metadata (base model, rank, alpha, steps, graph). Files:
    ``<name>.safetensors`` (kohya) and ``<name>.diffusers.safetensors``, in the run folder's ``lora/``
    unless ``folder`` is set. Adapted layers outside the UNet's blocks (time and size embeddings, which
    targets all-linear includes) are left out of the kohya file with a warning."""

    name = Param(str, "lora", doc="file name without extension")
    formats = Param(Choice("both", "kohya", "diffusers"), "both", doc="which files to write")
    dtype = Param(Choice("float16", "bfloat16", "float32"), "float16", doc="dtype of the saved weights")
    folder = Param(Dir("save"), optional=True, doc="where to write (default: <run folder>/lora)")

    def make_saver(self):
        return LoraSaver(self.name, self.folder, formats=self.formats, dtype=self.dtype)


@node("sdxl.save_diffusers", title="Save diffusers folder (SDXL)", category="Save", sink=True)
class SaveDiffusers(_SaverNode):
    """Write the whole model as a diffusers folder (``StableDiffusionXLPipeline.from_pretrained`` loads it):
    ``<name>/`` with unet, vae, both text encoders and tokenizers, scheduler, in the run folder's
    ``models/`` unless ``folder`` is set. LoRA adapters are fused into the weights."""

    name = Param(str, "model", doc="folder name")
    dtype = Param(Choice(*FULL_DTYPES), "keep", doc="dtype of the saved weights (keep: each part's own)")
    folder = Param(Dir("save"), optional=True, doc="where to write (default: <run folder>/models)")

    def make_saver(self):
        return DiffusersSaver(self.name, self.folder, dtype=self.dtype)


@node("sdxl.save_checkpoint", title="Save checkpoint (SDXL)", category="Save", sink=True)
class SaveCheckpoint(_SaverNode):
    """Write the whole model as one ``<name>.safetensors`` in the original SDXL layout (what A1111,
    ComfyUI and diffusers' ``from_single_file`` load, as SDXL base, Pony, Illustrious and NoobAI are
    distributed), in the run folder's ``models/`` unless ``folder`` is set. LoRA adapters are fused in."""

    name = Param(str, "model", doc="file name without extension")
    dtype = Param(Choice(*FULL_DTYPES), "float16", doc="dtype of the saved weights (keep: each part's own)")
    folder = Param(Dir("save"), optional=True, doc="where to write (default: <run folder>/models)")

    def make_saver(self):
        return CheckpointSaver(self.name, self.folder, dtype=self.dtype)
