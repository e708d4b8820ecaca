"""Saver nodes of the SD family: LoRA files, diffusers folders, single-file checkpoints, embeddings.

Each node outputs a ``ModelSaver`` on its ``saver`` port (for periodic-save hooks)
and, when its optional ``model`` input is connected, saves that model right away.
Periodic saves (``step`` given) add ``-step000123`` to file and folder names.
Every write is atomic; a full disk fails the save with a message naming the path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nodes.saving import (MODEL_DOC, SAVER_DOC, CheckpointFileSaver, CheckpointSaverParams, DiffusersFolderSaver,
                          DiffusersSaverParams, FileSaver, LoraFileSaver, LoraSaverParams, SaverNode, check_name,
                          steps_of)
from runtime import Choice, Dir, Input, Output, Param, node
from runtime.port_types import Saver

from .types import SDModel


@dataclass
class _SDSaver(FileSaver):
    """A saver of SD 1.x/2.x models."""

    node = "sd.save"

    def check(self, model):
        from .model import check_sd_model

        return check_sd_model(model, self.node)


@dataclass
class LoraSaver(LoraFileSaver, _SDSaver):
    """The model's LoRA as a kohya file and/or a diffusers/peft file."""

    node = "sd.save_lora"
    setup_node = "sd.lora_setup"

    def write_kohya(self, model, path, dtype, graph_name):
        from .lora_files import save_kohya_lora

        return save_kohya_lora(model, path, dtype, graph_name)

    def write_diffusers(self, model, path, dtype, graph_name):
        from .lora_files import save_diffusers_lora

        return save_diffusers_lora(model, path, dtype, graph_name)


@dataclass
class DiffusersSaver(DiffusersFolderSaver, _SDSaver):
    node = "sd.save_diffusers"

    def write(self, model, folder, state_dicts, graph_name):
        from .full_model import write_diffusers_folder

        return write_diffusers_folder(model, folder, state_dicts, graph_name)


@dataclass
class CheckpointSaver(CheckpointFileSaver, _SDSaver):
    node = "sd.save_checkpoint"

    def write(self, model, path, state_dicts, graph_name):
        from .full_model import write_checkpoint

        return write_checkpoint(model, path, state_dicts, graph_name)


@dataclass
class EmbeddingSaver(_SDSaver):
    """The trained placeholder vectors as an A1111 embedding ``<name>.safetensors`` (an empty name:
    the placeholder without its brackets)."""

    dtype: str = "float32"
    default_folder = "embeddings"
    node = "sd.save_embedding"
    format = "a1111_embedding"

    def __post_init__(self):
        if self.name:
            check_name(self.name)

    def save(self, ctx, model, step=None) -> list[Path]:
        from nodes.diffusers_parts import torch_dtype
        from nodes.placeholder_tokens import default_name

        from .embedding import save_embedding_file

        model = self.check(model)
        if model.embedding is None:
            raise ValueError("the model has no trained embedding: train it through sd.embedding_setup first")
        name = self.name or default_name(model.embedding.placeholder)
        path = save_embedding_file(model, self.target(ctx, f"{name}.safetensors", step),
                                   torch_dtype(self.dtype), ctx.graph_name)
        info = model.embedding
        ctx.saved(path, "a1111_embedding", placeholder=info.placeholder, vectors=len(info.tokens),
                  steps=steps_of(model))
        return [path]


class _SaverNode(SaverNode):
    model = Input(SDModel, optional=True, doc=MODEL_DOC)
    saver = Output(Saver, serves=SDModel, doc=SAVER_DOC)


@node("sd.save_lora", title="Save LoRA", category="Save", sink=True)
class SaveLora(LoraSaverParams, _SaverNode):
    """Write the model's LoRA as a diffusers/peft file and a kohya file (A1111, ComfyUI), with metadata
    (base model, rank, alpha, steps, graph). Files: ``<name>.safetensors`` (kohya) and
    ``<name>.diffusers.safetensors``, in the run folder's ``lora/`` unless ``folder`` is set.

    The kohya file holds the layers every kohya-format loader (kohya's sd-scripts, A1111, ComfyUI) can
    place: those in the UNet's attention (transformer) blocks, resnet blocks and down/up-samplers, and in
    the text encoder's attention and MLP layers. Other adapted layers (the UNet's time_embedding, which
    targets all-linear includes) are left out of it with a warning; the diffusers file holds every layer.

    Every adapter kind of the setup is written (docs/adapters.md): DoRA adds ``dora_scale``, LoHa is
    ``hada_*``, LoKr ``lokr_*``, OFT an exact weight ``diff`` (LyCORIS' full form); the diffusers/peft
    file holds peft's keys and config for every kind."""

    saver_class = LoraSaver


@node("sd.save_diffusers", title="Save diffusers folder", category="Save", sink=True)
class SaveDiffusers(DiffusersSaverParams, _SaverNode):
    """Write the whole model as a diffusers folder (``StableDiffusionPipeline.from_pretrained`` loads it):
    ``<name>/`` with unet, vae, text_encoder, tokenizer, scheduler, in the run folder's ``models/`` unless
    ``folder`` is set. LoRA adapters are fused into the weights (the live model keeps them separate); a
    trained embedding's tokens are in the tokenizer and text encoder."""

    saver_class = DiffusersSaver


@node("sd.save_checkpoint", title="Save checkpoint", category="Save", sink=True)
class SaveCheckpoint(CheckpointSaverParams, _SaverNode):
    """Write the whole model as one ``<name>.safetensors`` in the original Stable Diffusion layout (what
    A1111, ComfyUI and diffusers' ``from_single_file`` load), in the run folder's ``models/`` unless
    ``folder`` is set. LoRA adapters are fused in. SD 2.x's text encoder is written in OpenCLIP's layout."""

    saver_class = CheckpointSaver


@node("sd.save_embedding", title="Save embedding", category="Save", sink=True)
class SaveEmbedding(_SaverNode):
    """Write the vectors trained by sd.embedding_setup as an A1111 embedding (``emb_params``), which
    diffusers' ``load_textual_inversion`` also reads. A1111 names the prompt word after the file:
    ``<name>.safetensors``, in the run folder's ``embeddings/`` unless ``folder`` is set."""

    name = Param(str, optional=True, doc="file name without extension (default: the placeholder without <>)")
    dtype = Param(Choice("float32", "float16", "bfloat16"), "float32", doc="dtype of the saved vectors")
    folder = Param(Dir("save"), optional=True, doc="where to write (default: <run folder>/embeddings)")

    def make_saver(self):
        return EmbeddingSaver(self.name or "", self.folder, dtype=self.dtype)
