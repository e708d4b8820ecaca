"""SDXL model sources: the built-in tiny model."""

from __future__ import annotations

from runtime import Choice, Output, Param, Seed, node
from runtime.port_types import VAE, TextEncoder, Tokenizer

from .model import HOW_TO_FEED
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
        """What train.loop's check asks: the UNet trains on latents, both encoders' conditioning and sizes."""
        return dict(HOW_TO_FEED)


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
