"""Model source nodes: the built-in tiny model and the SD 1.x/2.x loader."""

from __future__ import annotations

from runtime import Choice, Dir, Output, Param, Seed, node
from runtime.params import FileOrDir
from runtime.port_types import VAE, TextEncoder, Tokenizer

from .model import LATENT
from .types import SDModel

DTYPE = Choice("float32", "float16", "bfloat16")


class _ModelOutputs:
    """Outputs shared by SD model sources: the bundle and the parts the data graph uses."""

    model = Output(SDModel, doc="the model bundle (UNet, VAE, text encoder, tokenizer, noise scheduler)")
    vae = Output(VAE, doc="the VAE, for sd.encode_image")
    text_encoder = Output(TextEncoder, doc="the CLIP text encoder, for sd.encode_text")
    tokenizer = Output(Tokenizer, doc="the CLIP tokenizer, for sd.tokenize")

    @staticmethod
    def outputs(model) -> dict:
        return {"model": model, "vae": model.vae_part(), "text_encoder": model.text_encoder_part(),
                "tokenizer": model.tokenizer_part()}

    def needed_batch_fields(self) -> dict[str, str]:
        """What train.loop's check asks: the UNet trains on latents."""
        return {LATENT: "connect sd.encode_image's 'latent' output (or a cache of it) to the batches node's fields"}


@node("sd.tiny_model", title="Tiny SD model", category="Model")
class TinyModel(_ModelOutputs):
    """A tiny SD 1.x-shaped model with random weights, built from assets/tiny_model in a fraction of a second.

    For trying graphs and for tests: it learns, saves and samples like a real model,
    but its images are noise. No download.
    """

    seed = Param(Seed, 0, doc="seed of the random weights (same seed, same model)")
    version = Param(Choice("sd1", "sd2"), "sd1", doc="shape like SD 1.x, or SD 2.x (linear attention projections)")
    prediction_type = Param(Choice("epsilon", "v_prediction"), "epsilon", doc="what the UNet predicts")

    def run(self, ctx):
        from .build import build_tiny

        model = build_tiny(self.seed, self.version, self.prediction_type)
        ctx.log(f"built the tiny {self.version} model ({self.prediction_type}, seed {self.seed})")
        return self.outputs(model)


@node("sd.load_model", title="Load SD model", category="Model")
class LoadModel(_ModelOutputs):
    """Load Stable Diffusion 1.x or 2.x (epsilon or v-prediction) from a diffusers folder or a
    single-file .safetensors checkpoint.

    Single files need ``config``: a local diffusers folder of the same model (configs and
    tokenizer; weights are not needed), so nothing is downloaded.
    """

    path = Param(FileOrDir("open", filter="*.safetensors"), doc="diffusers folder or .safetensors checkpoint")
    config = Param(Dir("open"), optional=True, doc="local diffusers folder with the configs (single files only)")
    unet_dtype = Param(DTYPE, "float32", doc="weight dtype of the UNet")
    text_encoder_dtype = Param(DTYPE, "float32", doc="weight dtype of the text encoder")
    vae_dtype = Param(DTYPE, "float32", doc="weight dtype of the VAE (SD 1.x's VAE overflows in float16)")
    prediction_type = Param(Choice("auto", "epsilon", "v_prediction"), "auto",
                            doc="override what the UNet predicts (auto: from the scheduler config)")

    def check(self, c):
        """Before the run: a single file needs ``config``; folders must have the diffusers sub-folders."""
        from nodes.weights_check import check_model_source

        from .build import FOLDER_PARTS

        check_model_source(c, self.path, self.config, FOLDER_PARTS, "Stable Diffusion")

    def run(self, ctx):
        from .build import load_sd

        dtypes = {"unet": self.unet_dtype, "text_encoder": self.text_encoder_dtype, "vae": self.vae_dtype}
        model = load_sd(self.path, self.config, dtypes, self.prediction_type)
        ctx.log(f"loaded {model.version} ({model.prediction_type}) from {self.path}")
        return self.outputs(model)
