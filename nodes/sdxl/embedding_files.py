"""The SDXL embedding file and its saver node ``sdxl.save_embedding``.

File: safetensors with two tensors, ``clip_l`` (n_vectors x 768 in SDXL: the first
encoder's vectors) and ``clip_g`` (n_vectors x 1280: the second's), the layout A1111,
ComfyUI and kohya's scripts write and read for SDXL. diffusers loads each tensor into
its encoder: ``load_textual_inversion(file["clip_l"], token=..., text_encoder=pipe.text_encoder,
tokenizer=pipe.tokenizer)``, and ``clip_g`` with ``text_encoder_2`` / ``tokenizer_2``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nodes.saving import MODEL_DOC, SAVER_DOC, FileSaver, SaverNode, base_metadata, check_name, steps_of
from runtime import Choice, Dir, Input, Output, Param, node
from runtime.port_types import Saver

from .files import ARCHITECTURE
from .types import SDXLModel

#: file key -> the model's encoder it belongs to
KEYS = {"clip_l": "text_encoder", "clip_g": "text_encoder_2"}
FORMAT = "sdxl_embedding"


def embedding_tensors(model) -> dict:
    """``{"clip_l": (n, D1), "clip_g": (n, D2)}``: the trained placeholder vectors of each encoder."""
    from .embedding import embedding_vectors

    vectors = embedding_vectors(model)
    return {key: vectors[encoder] for key, encoder in KEYS.items()}


def embedding_metadata(model, graph_name: str, steps: int | None = None) -> dict[str, str]:
    """What the file is and where it came from; ``steps``: the step of a periodic save (the model's count
    is only written when the loop ends)."""
    info = model.embedding
    return {
        **base_metadata(model, graph_name, FORMAT),
        "nodetrainer_steps": str(steps_of(model) if steps is None else steps),
        "nodetrainer_placeholder": info.placeholder,
        "nodetrainer_tokens": " ".join(info.tokens),
        "nodetrainer_initial_text": info.initial_text,
        "modelspec.architecture": f"{ARCHITECTURE}/textual-inversion",
        "modelspec.title": info.placeholder,
    }


def save_embedding_file(model, path: Path, dtype, graph_name: str = "", steps: int | None = None) -> Path:
    """Write the model's trained placeholder vectors as an SDXL embedding (``clip_l``, ``clip_g``; atomic)."""
    from nodes.saving import save_tensors

    return save_tensors(path, embedding_tensors(model), embedding_metadata(model, graph_name, steps), dtype)


@dataclass
class EmbeddingSaver(FileSaver):
    """The trained placeholder vectors as an SDXL embedding ``<name>.safetensors`` (an empty name: the
    placeholder without its brackets)."""

    dtype: str = "float32"
    default_folder = "embeddings"
    node = "sdxl.save_embedding"
    format = FORMAT

    def __post_init__(self):
        if self.name:
            check_name(self.name)

    def check(self, model):
        from .model import check_sdxl_model

        check_sdxl_model(model, self.node)
        if model.embedding is None:
            raise ValueError("the model has no trained embedding: train it through sdxl.embedding_setup first")
        return model

    def save(self, ctx, model, step=None) -> list[Path]:
        from nodes.diffusers_parts import torch_dtype
        from nodes.placeholder_tokens import default_name

        model = self.check(model)
        info = model.embedding
        name = self.name or default_name(info.placeholder)
        steps = steps_of(model) if step is None else step
        path = save_embedding_file(model, self.target(ctx, f"{name}.safetensors", step), torch_dtype(self.dtype),
                                   ctx.graph_name, steps)
        ctx.saved(path, FORMAT, placeholder=info.placeholder, vectors=len(info.tokens), steps=steps)
        return [path]


@node("sdxl.save_embedding", title="Save embedding (SDXL)", category="Save", sink=True)
class SaveEmbedding(SaverNode):
    """Write the vectors trained by sdxl.embedding_setup as an SDXL embedding: ``clip_l`` and ``clip_g``
    tensors, what A1111, ComfyUI and diffusers' ``load_textual_inversion`` (once per encoder) load.
    A1111 and ComfyUI name the prompt word after the file: ``<name>.safetensors``, in the run folder's
    ``embeddings/`` unless ``folder`` is set."""

    model = Input(SDXLModel, optional=True, doc=MODEL_DOC)
    saver = Output(Saver, serves=SDXLModel, doc=SAVER_DOC)
    name = Param(str, optional=True, doc="file name without extension (default: the placeholder without <>)")
    dtype = Param(Choice("float32", "float16", "bfloat16"), "float32", doc="dtype of the saved vectors")
    folder = Param(Dir("save"), optional=True, doc="where to write (default: <run folder>/embeddings)")

    def make_saver(self):
        return EmbeddingSaver(self.name or "", self.folder, dtype=self.dtype)
