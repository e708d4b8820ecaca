"""SDXL model sources: the built-in tiny model and the loader (diffusers folders, single files)."""

from __future__ import annotations

from runtime import Choice, Dir, FileOrDir, Output, Param, Seed, node
from runtime.port_types import VAE, TextEncoder, Tokenizer

from .model import HOW_TO_FEED, LATENT, TIME_IDS
from .types import SDXLModel


class _ModelOutputs:
    """Outputs shared by SDXL model sources: the bundle and the parts the data graph uses."""

    model = Output(SDXLModel, doc="the model bundle (UNet, VAE, both text encoders and tokenizers, noise scheduler)")
    vae = Output(VAE, doc="the VAE, for the VAE encoder (sd.encode_image)")
    text_encoder = Output(TextEncoder, doc="the first text encoder (CLIP-L), for sdxl.encode_text")
    text_encoder_2 = Output(TextEncoder, doc="the second text encoder (CLIP-G with projection), for sdxl.encode_text")
    tokenizer = Output(Tokenizer, doc="the first tokenizer, for sd.tokenize")
    tokenizer_2 = Output(Tokenizer, doc="the second tokenizer, for sd.tokenize")

    @staticmethod
    def outputs(model) -> dict:
        (te1, te2), (tok1, tok2) = model.text_encoder_parts(), model.tokenizer_parts()
        return {"model": model, "vae": model.vae_part(), "text_encoder": te1, "text_encoder_2": te2,
                "tokenizer": tok1, "tokenizer_2": tok2}

    def needed_batch_fields(self) -> dict[str, str]:
        """What train.loop's check asks: the UNet trains on latents and sizes (the text conditioning the
        batches need depends on the setup: cached embeddings, or token ids when a text encoder trains)."""
        return {k: HOW_TO_FEED[k] for k in (LATENT, TIME_IDS)}


@node("sdxl.tiny_model", title="Tiny SDXL model", category="Model")
class TinyModel(_ModelOutputs):
    """A tiny SDXL-shaped model with random weights (two CLIP text encoders, pooled embeddings, size
    conditioning), built from assets/tiny_sdxl once diffusers and transformers are imported.

    For trying graphs and for tests: it trains like a real SDXL, but its images are noise. No download.
    """

    seed = Param(Seed, 0, doc="seed of the random weights (same seed, same model)")
    prediction_type = Param(Choice("epsilon", "v_prediction"), "epsilon", doc="what the UNet predicts")

    def run(self, ctx):
        from .build import build_tiny

        model = build_tiny(self.seed, self.prediction_type)
        ctx.log(f"built the tiny SDXL model ({self.prediction_type}, seed {self.seed})")
        return self.outputs(model)


DTYPE = Choice("float32", "float16", "bfloat16")


@node("sdxl.load_model", title="Load SDXL model", category="Model")
class LoadModel(_ModelOutputs):
    """Load an SDXL model (SDXL base, Pony, Illustrious, NoobAI, ...) from a diffusers folder or a single-file
    .safetensors checkpoint in the original layout (what Civitai distributes).

    Single files need ``config``: a local diffusers SDXL folder (configs and tokenizers; weights are not
    needed), so nothing is downloaded. v-prediction models (NoobAI-v-pred style) set prediction_type
    v_prediction and zero_terminal_snr.
    """

    path = Param(FileOrDir("open", filter="*.safetensors"), doc="diffusers SDXL folder or .safetensors checkpoint")
    config = Param(Dir("open"), optional=True, doc="local diffusers SDXL folder with the configs (single files only)")
    unet_dtype = Param(DTYPE, "float32", doc="weight dtype of the UNet")
    text_encoder_dtype = Param(DTYPE, "float32", doc="weight dtype of the first text encoder (CLIP-L)")
    text_encoder_2_dtype = Param(DTYPE, "float32", doc="weight dtype of the second text encoder (CLIP-G)")
    vae_dtype = Param(DTYPE, "float32", doc="weight dtype of the VAE (SDXL's VAE overflows in float16)")
    prediction_type = Param(Choice("auto", "epsilon", "v_prediction"), "auto",
                            doc="what the UNet predicts (auto: from the scheduler config)")
    zero_terminal_snr = Param(bool, False, doc="rescale the noise schedule to zero terminal SNR (v-prediction "
                                               "models trained that way)")

    def check(self, c):
        """Before the run: a single file needs ``config``; folders must have the diffusers sub-folders."""
        from nodes.weights_check import check_model_source

        from .build import FOLDER_PARTS

        check_model_source(c, self.path, self.config, FOLDER_PARTS, "SDXL")

    def run(self, ctx):
        from .build import load_sdxl

        dtypes = {"unet": self.unet_dtype, "text_encoder": self.text_encoder_dtype,
                  "text_encoder_2": self.text_encoder_2_dtype, "vae": self.vae_dtype}
        model = load_sdxl(self.path, self.config, dtypes, self.prediction_type, self.zero_terminal_snr)
        ctx.log(f"loaded SDXL ({model.prediction_type}) from {self.path}")
        return self.outputs(model)
