"""Saver nodes of the SDXL family: LoRA files, diffusers folders, single-file checkpoints.

Each node outputs a saver on its ``saver`` port (for periodic-save hooks) and, when its
optional ``model`` input is connected, saves that model right away. Periodic saves add
``-step000123`` to names; every write is atomic. (The embedding saver: ``sdxl.save_embedding``.)
"""

from __future__ import annotations

from dataclasses import dataclass

from nodes.saving import (MODEL_DOC, SAVER_DOC, CheckpointFileSaver, CheckpointSaverParams, DiffusersFolderSaver,
                          DiffusersSaverParams, FileSaver, LoraFileSaver, LoraSaverParams, SaverNode)
from runtime import Input, Output, node
from runtime.port_types import Saver

from .types import SDXLModel


@dataclass
class _SDXLSaver(FileSaver):
    node = "sdxl.save"

    def check(self, model):
        from .model import check_sdxl_model

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
class DiffusersSaver(DiffusersFolderSaver, _SDXLSaver):
    node = "sdxl.save_diffusers"

    def write(self, model, folder, state_dicts, graph_name):
        from .files import write_diffusers_folder

        return write_diffusers_folder(model, folder, state_dicts, graph_name)


@dataclass
class CheckpointSaver(CheckpointFileSaver, _SDXLSaver):
    node = "sdxl.save_checkpoint"

    def write(self, model, path, state_dicts, graph_name):
        from .files import write_checkpoint

        return write_checkpoint(model, path, state_dicts, graph_name)


class _SaverNode(SaverNode):
    model = Input(SDXLModel, optional=True, doc=MODEL_DOC)
    saver = Output(Saver, serves=SDXLModel, doc=SAVER_DOC)


@node("sdxl.save_lora", title="Save LoRA (SDXL)", category="Save", sink=True)
class SaveLora(LoraSaverParams, _SaverNode):
    """Write the model's LoRA as a kohya file (A1111, ComfyUI, kohya's sd-scripts: ``lora_unet_`` with the
    original SDXL block names, ``lora_te1_``, ``lora_te2_``) and a diffusers/peft file
    (``load_lora_weights``), with metadata (base model, rank, alpha, steps, graph). Files:
    ``<name>.safetensors`` (kohya) and ``<name>.diffusers.safetensors``, in the run folder's ``lora/``
    unless ``folder`` is set. Adapted layers outside the UNet's blocks (time and size embeddings, which
    targets all-linear includes) are left out of the kohya file with a warning.

    Every adapter kind of the setup is written (docs/adapters.md): DoRA adds ``dora_scale``, LoHa is
    ``hada_*``, LoKr ``lokr_*``, OFT an exact weight ``diff`` (LyCORIS' full form); the diffusers/peft
    file holds peft's keys and config for every kind."""

    saver_class = LoraSaver


@node("sdxl.save_diffusers", title="Save diffusers folder (SDXL)", category="Save", sink=True)
class SaveDiffusers(DiffusersSaverParams, _SaverNode):
    """Write the whole model as a diffusers folder (``StableDiffusionXLPipeline.from_pretrained`` loads it):
    ``<name>/`` with unet, vae, both text encoders and tokenizers, scheduler, in the run folder's
    ``models/`` unless ``folder`` is set. LoRA adapters are fused into the weights."""

    saver_class = DiffusersSaver


@node("sdxl.save_checkpoint", title="Save checkpoint (SDXL)", category="Save", sink=True)
class SaveCheckpoint(CheckpointSaverParams, _SaverNode):
    """Write the whole model as one ``<name>.safetensors`` in the original SDXL layout (what A1111,
    ComfyUI and diffusers' ``from_single_file`` load, as SDXL base, Pony, Illustrious and NoobAI are
    distributed), in the run folder's ``models/`` unless ``folder`` is set. LoRA adapters are fused in."""

    saver_class = CheckpointSaver
