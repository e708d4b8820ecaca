"""Saver nodes of the Flux family: LoRA files, diffusers folders, the transformer as one BFL-layout file.

Each node outputs a saver on its ``saver`` port (for periodic-save hooks) and, when its optional
``model`` input is connected, saves that model right away. Periodic saves add ``-step000123`` to
names; every write is atomic.
"""

from __future__ import annotations

from dataclasses import dataclass

from nodes.saving import (FULL_DTYPES, MODEL_DOC, SAVER_DOC, CheckpointFileSaver, DiffusersFolderSaver,
                          DiffusersSaverParams, FileSaver, LoraFileSaver, LoraSaverParams, SaverNode)
from runtime import Choice, Dir, Input, Output, Param, node
from runtime.port_types import Saver

from .types import FluxModel


@dataclass
class _FluxSaver(FileSaver):
    node = "flux.save"

    def check(self, model):
        from .model import check_flux_model

        return check_flux_model(model, self.node)


@dataclass
class LoraSaver(LoraFileSaver, _FluxSaver):
    """The model's LoRA as a kohya/BFL file (fused q/k/v) and/or a diffusers/peft file."""

    node = "flux.save_lora"
    setup_node = "flux.lora_setup"

    def write_kohya(self, model, path, dtype, graph_name):
        from .files import save_kohya_lora

        return save_kohya_lora(model, path, dtype, graph_name)

    def write_diffusers(self, model, path, dtype, graph_name):
        from .files import save_diffusers_lora

        return save_diffusers_lora(model, path, dtype, graph_name)


@dataclass
class DiffusersSaver(DiffusersFolderSaver, _FluxSaver):
    node = "flux.save_diffusers"

    def write(self, model, folder, state_dicts, graph_name):
        from .files import write_diffusers_folder

        return write_diffusers_folder(model, folder, state_dicts, graph_name)


@dataclass
class TransformerSaver(CheckpointFileSaver, _FluxSaver):
    """The transformer alone (LoRA fused in) as ``<name>.safetensors`` in BFL's layout. Only the
    transformer's weights are gathered: the text encoders and VAE are not part of this file."""

    dtype: str = "bfloat16"
    node = "flux.save_transformer"
    format = "bfl_transformer"

    def save(self, ctx, model, step=None):
        from nodes.diffusers_parts import torch_dtype
        from nodes.lora_fusion import dtype_label, plain_state_dict
        from nodes.saving import steps_of

        from .files import write_transformer
        from .finetune import is_quantized

        model = self.check(model)
        if is_quantized(model.transformer):
            raise ValueError("flux.save_transformer: the transformer's weights are quantized; a full transformer "
                             "file needs them unquantized (save the LoRA with flux.save_lora instead)")
        dtype = None if self.dtype == "keep" else torch_dtype(self.dtype)
        weights = plain_state_dict(model.transformer, dtype)
        path = write_transformer(model, self.target(ctx, f"{self.name}.safetensors", step), weights, ctx.graph_name)
        ctx.saved(path, self.format, dtype=dtype_label({"transformer": weights}), steps=steps_of(model),
                  lora_fused=model.lora is not None)
        return [path]


class _SaverNode(SaverNode):
    model = Input(FluxModel, optional=True, doc=MODEL_DOC)
    saver = Output(Saver, serves=FluxModel, doc=SAVER_DOC)


@node("flux.save_lora", title="Save LoRA (Flux)", category="Save", sink=True)
class SaveLora(LoraSaverParams, _SaverNode):
    """Write the model's LoRA as a kohya/BFL file and a diffusers/peft file, with metadata (base model, rank,
    alpha, steps, graph). Files: ``<name>.safetensors`` (kohya/BFL) and ``<name>.diffusers.safetensors``, in
    the run folder's ``lora/`` unless ``folder`` is set.

    - kohya/BFL (``lora_unet_double_blocks_N_img_attn_qkv``, ``lora_unet_single_blocks_N_linear1``, ...,
      q/k/v and the single blocks' MLP input fused as BFL fuses them; CLIP-L as ``lora_te1_``): loads in
      ComfyUI (LoraLoader), Forge, kohya's sd-scripts and diffusers (``FluxPipeline.load_lora_weights``).
      Adapted layers outside the blocks (only a target_regex reaches them) are left out with a warning:
      diffusers' reader drops them.
    - diffusers (``transformer.<module>.lora_A/B``, ``text_encoder.text_model.``, adapter configs in the
      header): loads with diffusers' ``load_lora_weights`` (also SimpleTuner, ai-toolkit) and in ComfyUI.

    Every adapter kind of the setup is written (docs/adapters.md): DoRA adds ``dora_scale``, LoHa is
    ``hada_*``, LoKr ``lokr_*``; OFT, and LoKr on the fused q/k/v and linear1, an exact weight ``diff``
    (LyCORIS' full form). The diffusers/peft file holds peft's keys and config for every kind."""

    saver_class = LoraSaver


@node("flux.save_diffusers", title="Save diffusers folder (Flux)", category="Save", sink=True)
class SaveDiffusers(DiffusersSaverParams, _SaverNode):
    """Write the whole model as a diffusers folder: ``<name>/`` with transformer, VAE, CLIP-L and T5 with their
    tokenizers and the scheduler, in the run folder's ``models/`` unless ``folder`` is set. Loads with
    diffusers' ``FluxPipeline.from_pretrained``, flux.load_model, SimpleTuner and ai-toolkit. LoRA adapters
    are fused into the weights."""

    saver_class = DiffusersSaver


@node("flux.save_transformer", title="Save transformer file (Flux)", category="Save", sink=True)
class SaveTransformer(_SaverNode):
    """Write the transformer alone as one ``<name>.safetensors`` in the original BFL layout (as
    flux1-dev.safetensors is distributed: ``double_blocks``, ``single_blocks``, fused qkv), in the run
    folder's ``models/`` unless ``folder`` is set. Loads in ComfyUI (Load Diffusion Model, from
    models/diffusion_models), Forge, kohya's sd-scripts, diffusers' ``FluxTransformer2DModel.from_single_file``
    (full-size models) and flux.load_model; the VAE and text encoders come from their own files. LoRA
    adapters are fused in."""

    saver_class = TransformerSaver
    name = Param(str, "transformer", doc="file name without extension")
    dtype = Param(Choice(*FULL_DTYPES), "bfloat16", doc="dtype of the saved weights (keep: as loaded)")
    folder = Param(Dir("save"), optional=True, doc="where to write (default: <run folder>/models)")

    def make_saver(self):
        return TransformerSaver(self.name, self.folder, dtype=self.dtype)
