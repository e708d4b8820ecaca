"""The SD 1.x/2.x model value. The part values it hands the data graph (VAE, text encoder,
tokenizer, each with a cache fingerprint) are the shared ones of ``nodes.diffusers_parts``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any as _Any

from nodes.diffusers_parts import TextEncoderPart, TokenizerPart, VaePart, fingerprint_of, vae_part
from nodes.lora_adapters import LoraInfo
from nodes.train.bundle import require_field, require_model
from nodes.train.ddpm import DDPMBundle

__all__ = ["SDModel", "LoraInfo", "EmbeddingInfo", "VaePart", "TextEncoderPart", "TokenizerPart", "fingerprint_of",
           "detect_version", "check_sd_model"]

#: batch keys the SD model reads (the output port names of nodes/sd/encode.py)
TEXT_EMBEDDING, TOKENS, LATENT = "embedding", "tokens", "latent"
#: how to give the batches token ids when a setup trains the text encoder (train.loop's check says it)
TOKENS_FOR_TEXT_ENCODER = ("the text encoder trains (train_text_encoder), so its input must be in the batches: "
                           "connect sd.tokenize's 'tokens' output to the batches node's fields")


@dataclass
class EmbeddingInfo:
    """What ``sd.embedding_setup`` did: savers and samplers read it.

    ``tokens`` are the placeholder's vectors as tokenizer entries (diffusers' multi-vector
    naming: ``<tok>``, ``<tok>_1``, ...), ``token_ids`` their ids, ``base_vocab_size`` the
    text encoder's rows before the setup added any.
    """

    placeholder: str
    tokens: list[str]
    token_ids: list[int]
    initial_text: str
    base_vocab_size: int


@dataclass(eq=False)
class SDModel(DDPMBundle):
    """Stable Diffusion 1.x/2.x: UNet, VAE, CLIP text encoder, tokenizer and training noise scheduler."""

    unet: _Any
    vae: _Any
    text_encoder: _Any
    tokenizer: _Any
    noise_scheduler: _Any
    prediction_type: str = "epsilon"
    version: str = "sd1"
    source: str = ""
    dtypes: dict = field(default_factory=dict)
    fingerprint: str = ""
    clip_skip: int = 0
    train_text_encoder: bool = False
    lora: LoraInfo | None = None
    embedding: EmbeddingInfo | None = None
    #: part name -> learning rate of its optimizer group (sd.finetune_setup); missing or 0 = the optimizer's
    learning_rates: dict = field(default_factory=dict)
    progress: dict = field(default_factory=dict)

    family = "sd"
    part_names = ("unet", "vae", "text_encoder")

    # -- parts for the data graph ---------------------------------------------
    def vae_part(self) -> VaePart:
        return vae_part(self.vae, fingerprint_of("vae", self.fingerprint))

    def text_encoder_part(self) -> TextEncoderPart:
        return TextEncoderPart(self.text_encoder, fingerprint_of("text_encoder", self.fingerprint))

    def tokenizer_part(self) -> TokenizerPart:
        return TokenizerPart(self.tokenizer, fingerprint_of("tokenizer", self.fingerprint))

    # -- training ----------------------------------------------------------------
    def embedding_vectors(self):
        """The trained vectors of the placeholder (n_vectors x dim), or None without sd.embedding_setup."""
        if self.embedding is None:
            return None
        return self.text_encoder.get_input_embeddings().vectors

    def training_parts(self) -> tuple[str, ...]:
        return ("unet", "vae", "text_encoder")  # the VAE too: the data graph encodes on the training device

    def unet_input(self):
        """The UNet's input weight: its device and dtype are where a batch goes. Read it, not
        ``unet.device``/``unet.dtype``: diffusers walks every module for those (milliseconds per step)."""
        return self.unet.conv_in.weight

    def latents(self, batch: dict):
        latent = require_field(batch, LATENT, "connect sd.encode_image's 'latent' output to the batches node")
        w = self.unet_input()
        return latent.to(w.device, dtype=w.dtype)

    def conditioning(self, batch: dict):
        """The UNet's encoder hidden states for a batch."""
        from .text import encode_tokens

        if self.train_text_encoder:
            tokens = require_field(batch, TOKENS, "the text encoder is trained, so connect sd.tokenize's 'tokens' "
                                                  "output to the batches node")
            return encode_tokens(self.text_encoder, tokens, self.clip_skip)
        if TEXT_EMBEDDING not in batch and TOKENS in batch:
            import torch

            with torch.no_grad():
                return encode_tokens(self.text_encoder, batch[TOKENS], self.clip_skip)
        embedding = require_field(batch, TEXT_EMBEDDING, "connect sd.encode_text's 'embedding' output (or "
                                                         "sd.tokenize's 'tokens') to the batches node")
        return embedding.to(self.unet_input().device)

    def predict(self, noisy, timesteps, batch: dict):
        cond = self.conditioning(batch)
        dtype = self.unet_input().dtype
        out = self.unet(noisy.to(dtype), timesteps, encoder_hidden_states=cond.to(dtype), return_dict=False)[0]
        return out

    def describe(self) -> dict:
        return {"family": self.family, "version": self.version, "prediction_type": self.prediction_type,
                "source": self.source, "dtypes": dict(self.dtypes)}


def detect_version(unet) -> str:
    """'sd2' for UNets with linear attention projections (SD 2.x), else 'sd1'."""
    return "sd2" if getattr(unet.config, "use_linear_projection", False) else "sd1"


def check_sd_model(model: _Any, node: str) -> SDModel:
    """``model`` as an SDModel, or a clear error for another family's model."""
    return require_model(model, SDModel, node, "a Stable Diffusion 1.x/2.x model")
