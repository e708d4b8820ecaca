"""Port types: named, single inheritance, a colour and a lifetime.

A *value* type is produced once per run by the executor (a model, an optimizer
spec, a batch source, a hook). A *sample* type is a per-sample field flowing
through the data graph (an image, a caption, a latent). ``is_compatible`` is
the one connection rule used by the registry, the validator and the editor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

VALUE = "value"
SAMPLE = "sample"
LIFETIMES = (VALUE, SAMPLE)


@dataclass(frozen=True, eq=False)
class PortType:
    """A named port type. Compare by identity; names are unique per registry."""

    name: str
    parent: PortType | None = None
    color: str = "#9aa0a6"
    lifetime: str = VALUE
    doc: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.parent is not None and self.parent.lifetime != self.lifetime:
            raise ValueError(
                f"port type {self.name!r} ({self.lifetime}) cannot inherit from "
                f"{self.parent.name!r} ({self.parent.lifetime})"
            )

    def ancestry(self) -> list[PortType]:
        """This type followed by its parents up to the root."""
        chain, t = [], self
        while t is not None:
            chain.append(t)
            t = t.parent
        return chain

    def is_a(self, other: PortType) -> bool:
        return any(t is other for t in self.ancestry())

    def describe(self) -> dict:
        return {
            "name": self.name,
            "parent": self.parent.name if self.parent else None,
            "color": self.color,
            "lifetime": self.lifetime,
            "doc": self.doc,
        }

    def __repr__(self) -> str:
        return f"PortType({self.name})"


def is_compatible(output: PortType, input: PortType) -> bool:
    """True when an output of type ``output`` may feed an input of type ``input``."""
    return output.lifetime == input.lifetime and output.is_a(input)


def value_type(name: str, parent: PortType | None = None, color: str | None = None, doc: str = "") -> PortType:
    """Declare a value type; it inherits its parent's colour unless given one."""
    parent = parent if parent is not None else Any
    return PortType(name, parent, color or parent.color, VALUE, doc)


def sample_type(name: str, parent: PortType | None = None, color: str | None = None, doc: str = "") -> PortType:
    """Declare a sample (per-item field) type."""
    parent = parent if parent is not None else Field
    return PortType(name, parent, color or parent.color, SAMPLE, doc)


# Roots. Every value type is-a Any, every sample type is-a Field.
Any = PortType("Any", None, "#9aa0a6", VALUE, "any value")
Field = PortType("Field", None, "#c7b8ff", SAMPLE, "any per-sample field")

# Generic value types shared by every model family.
DiffusionModel = value_type("DiffusionModel", color="#e8743b", doc="a diffusion model bundle (denoiser, encoders, scheduler)")
# Kinds of training a family's model type derives from; an objective serves one of them.
DDPMModel = value_type("DDPMModel", DiffusionModel, doc="a diffusion model trained on DDPM noise "
                       "(epsilon or v-prediction): what train.diffusion_objective serves")
FlowMatchingModel = value_type("FlowMatchingModel", DiffusionModel, doc="a diffusion model trained with flow "
                               "matching (velocity prediction): what train.flow_matching_objective serves")
VAE = value_type("VAE", color="#e84b6a", doc="an image autoencoder")
TextEncoder = value_type("TextEncoder", color="#f2c14e", doc="a text encoder")
Tokenizer = value_type("Tokenizer", color="#d9d27a", doc="a tokenizer")
NoiseScheduler = value_type("NoiseScheduler", color="#b07aa1", doc="a diffusion noise scheduler")
OptimizerSpec = value_type("OptimizerSpec", color="#5b8def", doc="how to build an optimizer for a set of parameters")
LRSchedule = value_type("LRSchedule", color="#4fb3bf", doc="a learning-rate schedule")
Objective = value_type("Objective", color="#7bc67b", doc="a training objective (noise, timesteps, loss)")
BatchSource = value_type("BatchSource", color="#46c6a0", doc="batches produced by the data graph")
Hook = value_type("Hook", color="#a1a1ff", doc="a training-loop hook with a schedule")
FileList = value_type("FileList", color="#8fb3c9", doc="a list of files")
Saver = value_type("Saver", color="#d4a373", doc="writes a model in one format (for periodic-save hooks)")
Sampler = value_type("Sampler", color="#9c89b8", doc="makes preview images of a model (for sample hooks)")

# Generic sample types.
ImagePath = sample_type("ImagePath", color="#8fb3c9", doc="path of an image file")
Image = sample_type("Image", color="#5fb0ff", doc="an image")
Mask = sample_type("Mask", color="#9f9f9f", doc="a mask image")
Caption = sample_type("Caption", color="#ffd166", doc="a caption string")
Latent = sample_type("Latent", color="#ff7aa8", doc="an encoded image latent")
TokenIds = sample_type("TokenIds", color="#e0c878", doc="token ids")
TextEmbedding = sample_type("TextEmbedding", color="#f29e4c", doc="a text-encoder output")
Scalar = sample_type("Scalar", color="#bdbdbd", doc="a per-sample number (loss weight, concept index)")
ImageTensor = sample_type("ImageTensor", Image, color="#3d8fe0", doc="an image as a CHW float tensor")
TextPath = sample_type("TextPath", color="#c9b98f", doc="path of a text file (a caption sidecar)")
Resolution = sample_type("Resolution", color="#8fd1b0", doc="a per-sample (width, height) in pixels")
Role = sample_type("Role", color="#d08cc8", doc="a per-sample concept role: 'standard', 'prior' (regularisation) "
                   "or 'prior_prediction'")
Offset = sample_type("Offset", color="#a0c4a8", doc="a per-sample (x, y) in pixels, e.g. a crop's top-left corner")

# Value types of the data graph.
Concept = value_type("Concept", color="#c7a0ff", doc="a scanned training concept: image files with caption, "
                     "balancing and loss-weight settings")

BUILTIN_TYPES: tuple[PortType, ...] = tuple(
    v for v in globals().values() if isinstance(v, PortType)
)
