"""Flux model sources: the built-in tiny model and the loader (diffusers folders, single-file BFL transformers)."""

from __future__ import annotations

from runtime import Choice, Dir, FileOrDir, Output, Param, Seed, node
from runtime.port_types import VAE, TextEncoder, Tokenizer

from nodes.quantize import SCHEMES

from .model import HOW_TO_FEED, LATENT, T5_EMBEDDING
from .types import FluxModel

GUIDANCE_DOC = ("guidance value dev's transformer is given in training (1.0 as OneTrainer and kohya train; "
                "diffusers' example uses 3.5); schnell has no guidance input and ignores it")


QUANTIZE_DOC = ("store the frozen transformer's and T5's linear weights quantized (torchao, weight-only; LoRA "
                "trains on top in full precision): int8 and fp8 halve bf16's memory, nf4 quarters it; none = as "
                "loaded. A full fine-tune needs none")


def quantized(ctx, model, scheme: str):
    """``model`` with its transformer and T5 quantized to ``scheme`` (nodes.quantize). T5's part fingerprint
    then says so (its outputs, which the data graph caches, change); cached latents stay valid."""
    import dataclasses

    from nodes.quantize import quantize_frozen

    if scheme == "none":
        return model
    quantize_frozen(model.transformer, scheme, ctx, "transformer")
    quantize_frozen(model.text_encoder_2, scheme, ctx, "T5")
    return dataclasses.replace(model, quantize=scheme)


def check_quantize(c, scheme: str) -> None:
    """Before the run: the quantization's package is installed."""
    from nodes.quantize import missing_package

    message = missing_package(scheme)
    if message:
        c.error(message, param="quantize")


class _ModelOutputs:
    """Outputs shared by Flux model sources: the bundle and the parts the data graph uses."""

    model = Output(FluxModel, doc="the model bundle (transformer, VAE, CLIP-L and T5, tokenizers, flow-matching "
                                  "schedule)")
    vae = Output(VAE, doc="the VAE (16 latent channels), for the VAE encoder (sd.encode_image)")
    text_encoder = Output(TextEncoder, doc="CLIP-L, for flux.encode_text's pooled output")
    text_encoder_2 = Output(TextEncoder, doc="T5, for flux.encode_text's sequence")
    tokenizer = Output(Tokenizer, doc="CLIP-L's tokenizer, for sd.tokenize")
    tokenizer_2 = Output(Tokenizer, doc="T5's tokenizer, for sd.tokenize")

    @staticmethod
    def outputs(model) -> dict:
        (te1, te2), (tok1, tok2) = model.text_encoder_parts(), model.tokenizer_parts()
        return {"model": model, "vae": model.vae_part(), "text_encoder": te1, "text_encoder_2": te2,
                "tokenizer": tok1, "tokenizer_2": tok2}

    def needed_batch_fields(self) -> dict[str, str]:
        """What train.loop's check asks: the transformer trains on latents and T5's sequence (CLIP-L's
        conditioning depends on the setup: its cached pooled output, or token ids when it trains)."""
        return {k: HOW_TO_FEED[k] for k in (LATENT, T5_EMBEDDING)}


@node("flux.tiny_model", title="Tiny Flux model", category="Model")
class TinyModel(_ModelOutputs):
    """A tiny FLUX.1-shaped model with random weights (a transformer with one double- and one single-stream
    block, a 16-channel VAE, CLIP-L and T5 encoders and tokenizers), built from assets/tiny_flux.

    For trying graphs and for tests: it trains like a real FLUX.1, but its images are noise. No download.
    """

    variant = Param(Choice("dev", "schnell"), "dev",
                    doc="dev: guidance embedding and dynamic-shift schedule; schnell: neither")
    seed = Param(Seed, 0, doc="seed of the random weights (same seed, same model)")
    guidance = Param(float, 1.0, min=0.0, max=100.0, doc=GUIDANCE_DOC)
    quantize = Param(Choice(*SCHEMES), "none", doc=QUANTIZE_DOC)

    def check(self, c):
        check_quantize(c, self.quantize)

    def run(self, ctx):
        from .build import build_tiny

        model = build_tiny(self.seed, self.variant, self.guidance)
        ctx.log(f"built the tiny Flux model ({self.variant}, seed {self.seed})")
        return self.outputs(quantized(ctx, model, self.quantize))


DTYPE = Choice("float32", "float16", "bfloat16")


@node("flux.load_model", title="Load Flux model", category="Model")
class LoadModel(_ModelOutputs):
    """Load a FLUX.1 model (dev, schnell and their fine-tunes) from a diffusers folder (the FluxPipeline layout
    of black-forest-labs/FLUX.1-dev), or from a single-file transformer .safetensors in the original BFL layout
    (flux1-dev.safetensors, ComfyUI's and Forge's transformer files; also a diffusers-layout transformer file).

    A single file holds the transformer only: ``config`` is a local diffusers Flux folder with the VAE, both
    text encoders, tokenizers, scheduler and transformer config, so nothing is downloaded. dev or schnell is
    read from the weights (dev has a guidance embedding).
    """

    path = Param(FileOrDir("open", filter="*.safetensors"),
                 doc="diffusers Flux folder, or a transformer .safetensors (BFL or diffusers layout)")
    config = Param(Dir("open"), optional=True,
                   doc="local diffusers Flux folder for the other parts and configs (single files only)")
    transformer_dtype = Param(DTYPE, "bfloat16", doc="weight dtype of the transformer")
    text_encoder_dtype = Param(DTYPE, "bfloat16", doc="weight dtype of CLIP-L")
    text_encoder_2_dtype = Param(DTYPE, "bfloat16", doc="weight dtype of T5 (T5 overflows in float16)")
    vae_dtype = Param(DTYPE, "float32", doc="weight dtype of the VAE")
    guidance = Param(float, 1.0, min=0.0, max=100.0, doc=GUIDANCE_DOC)
    quantize = Param(Choice(*SCHEMES), "none", doc=QUANTIZE_DOC)

    def check(self, c):
        """Before the run: a single file needs ``config``; folders must have the diffusers sub-folders."""
        from nodes.weights_check import check_model_source

        from .build import FOLDER_PARTS

        check_model_source(c, self.path, self.config, FOLDER_PARTS, "Flux")
        check_quantize(c, self.quantize)

    def run(self, ctx):
        from .build import load_flux

        dtypes = {"transformer": self.transformer_dtype, "text_encoder": self.text_encoder_dtype,
                  "text_encoder_2": self.text_encoder_2_dtype, "vae": self.vae_dtype}
        model = load_flux(self.path, self.config, dtypes, self.guidance)
        ctx.log(f"loaded FLUX.1 {model.variant} from {self.path}")
        return self.outputs(quantized(ctx, model, self.quantize))
