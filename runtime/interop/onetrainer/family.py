"""What the importer needs to know about one model family, declared by the family's own folder.

A family folder (``nodes/<family>/onetrainer.py``) defines ``FAMILY``, an ``OneTrainerFamily``: the
OneTrainer model types it serves, its node types per role, its model parts and the data stages that
encode images and captions. A node pack adds one through the entry-point group
``nodetrainer.onetrainer`` (an entry point that loads an ``OneTrainerFamily``). The generic importer
names no family.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
from dataclasses import dataclass, field

ENTRY_POINT_GROUP = "nodetrainer.onetrainer"
METHODS = ("FINE_TUNE", "LORA", "EMBEDDING")


@dataclass(frozen=True)
class Part:
    """A OneTrainer model part (``unet``, ``text_encoder``, ``transformer``, ...) in this family's nodes.

    ``name``: the part's name in our model (``train.loop.stop_parts``); ``dtype``: the loader param of
    its weight dtype; ``finetune``: the fine-tune setup's bool that trains it (None: always trained);
    ``lora``: the LoRA setup's param that adapts it (None: always adapted, the denoiser; a bool unless
    the family's ``set_part_trains`` says otherwise); ``lr``: the fine-tune setup's learning-rate param;
    ``trains``: whether the part can train at all (the VAE not)."""

    name: str
    dtype: str | None = None
    finetune: str | None = None
    lora: str | None = None
    lr: str | None = None
    trains: bool = True
    denoiser: bool = False


@dataclass
class Encoded:
    """What a family's encoders hand on: fields to cache (``name -> node.port``), fields that skip the
    cache, and the node whose tokenizer the embedding setup replaces."""

    cached: dict[str, str]
    direct: dict[str, str] = field(default_factory=dict)


class OneTrainerFamily:
    """Base of a family's import table; subclasses set the class attributes and ``encode``."""

    name = ""
    #: OneTrainer model type -> params of the loader (and of the tiny model) for it
    model_types: dict[str, dict] = {}
    loader = ""
    tiny_loader = ""
    #: "diffusion" (DDPM) or "flow" (flow matching)
    objective = "diffusion"
    #: training method -> setup node type
    setups: dict[str, str] = {}
    #: OneTrainer part key -> Part
    parts: dict[str, Part] = {}
    sampler = ""
    #: OneTrainer sample noise_scheduler -> the sampler's scheduler (missing: unsupported)
    schedulers: dict[str, str] = {}
    #: (training method, OneTrainer output_model_format) -> saver node type
    savers: dict[tuple[str, str], str] = {}
    quantum_model_type = ""

    def encode(self, imp, prefix: str, image: str, caption: str, fields: dict[str, str]) -> Encoded:
        """Add the encoding nodes for a data stream (``prefix`` keeps a validation stream's ids apart):
        ``image`` / ``caption`` are the ``node.port`` of the image tensor and the caption; ``fields`` the
        per-item fields (bucket, size, crop_offset, ...). ``imp`` is the running import
        (``importer.Import``): its builder, config, report and ``tokenizer(name)``."""
        raise NotImplementedError

    def loader_params(self, imp) -> dict:
        """The loader's params beyond the per-part dtypes (the path is set by the importer)."""
        return dict(self.model_types.get(imp.v["model_type"], {}))

    def setup_params(self, imp, method: str) -> dict:
        """Params of the setup node that only this family has (e.g. clip_skip)."""
        return {}

    def sampler_params(self, imp, sample: dict, key: str) -> dict:
        """Params of this family's sampler for one OneTrainer sample, beyond the generic ones."""
        return {}

    def set_part_trains(self, imp, part: Part, flag: str, trains: bool) -> None:
        """Make the setup train ``part`` or not: its bool param ``flag`` (``part.finetune`` or
        ``part.lora``). A family whose setup chooses several parts with one param (SDXL's LoRA
        ``text_encoders``: none, first, second, both) overrides this."""
        imp.b.set(imp.setup, flag, trains)

    def quantize_params(self, imp, key: str, part: Part, scheme: str) -> dict | None:
        """Loader params that store OneTrainer part ``key``'s weights quantized with ``scheme`` (int8, fp8,
        nf4: its weight_dtype INT_8, FLOAT_8, NFLOAT_4), or None when this family's loader cannot."""
        return None

    def uses(self, key: str) -> bool:
        """Whether this family's nodes read the top-level key (e.g. text_encoder_sequence_length)."""
        return False


def families() -> list[OneTrainerFamily]:
    """Every family table: built-in (``nodes.<family>.onetrainer``) and from installed packs."""
    found: list[OneTrainerFamily] = []
    import nodes

    for info in pkgutil.iter_modules(nodes.__path__, "nodes."):
        if not info.ispkg:
            continue
        try:
            module = importlib.import_module(info.name + ".onetrainer")
        except ModuleNotFoundError as e:
            if e.name != info.name + ".onetrainer":
                raise
            continue
        family = getattr(module, "FAMILY", None)
        if isinstance(family, OneTrainerFamily):
            found.append(family)
    for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        family = ep.load()
        if isinstance(family, OneTrainerFamily):
            found.append(family)
    return found


def family_for(model_type: str) -> OneTrainerFamily | None:
    return next((f for f in families() if model_type in f.model_types), None)


def known_model_types() -> list[str]:
    return sorted(t for f in families() for t in f.model_types)
