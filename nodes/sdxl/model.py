"""The SDXL model value: UNet, VAE, two CLIP text encoders and tokenizers, training noise schedule.

The UNet is conditioned on the concatenated penultimate hidden states of both text
encoders (``embedding``), the second encoder's pooled projection (``pooled_embedding``)
and six size numbers (``time_ids``): the batch fields ``predict`` reads. When a setup trains
a text encoder (LoRA on it, fine-tuning it, a new embedding), both encoders run in the
training forward instead, on the token ids of both tokenizers (``tokens``, ``tokens_2``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any as _Any

from nodes.diffusers_parts import TextEncoderPart, TokenizerPart, VaePart, fingerprint_of, vae_part
from nodes.lora_adapters import LoraInfo
from nodes.train.bundle import require_field, require_model
from nodes.train.ddpm import DDPMBundle

#: batch keys the SDXL model reads (the output port names of nodes/sdxl/encode.py and the VAE encoder)
LATENT, EMBEDDING, POOLED, TIME_IDS = "latent", "embedding", "pooled_embedding", "time_ids"
TOKENS, TOKENS_2 = "tokens", "tokens_2"
HOW_TO_FEED = {
    TOKENS: "a text encoder trains, so it runs in the training forward: connect sd.tokenize's 'tokens' output "
            "(with the model's 'tokenizer') to the batches node's fields, named 'tokens'",
    TOKENS_2: "a text encoder trains, so it runs in the training forward: connect a second sd.tokenize (with "
              "'tokenizer_2') through a cache that renames it (rename: [tokenize_2.tokens=tokens_2]) to the "
              "batches node's fields",
    LATENT: "connect the VAE encoder's 'latent' output (or a cache of it) to the batches node's fields",
    EMBEDDING: "connect sdxl.encode_text's 'embedding' output to the batches node's fields",
    POOLED: "connect sdxl.encode_text's 'pooled_embedding' output to the batches node's fields",
    TIME_IDS: "connect sdxl.size_conditioning's 'time_ids' output to the batches node's fields",
}



def text_fields(text_encoder_trains: bool) -> dict[str, str]:
    """The batch fields of the text conditioning (field -> how to provide it): token ids of both tokenizers
    when a text encoder trains in the loop, else both encoders' cached outputs."""
    keys = (TOKENS, TOKENS_2) if text_encoder_trains else (EMBEDDING, POOLED)
    return {k: HOW_TO_FEED[k] for k in keys}


@dataclass(eq=False)
class SDXLModel(DDPMBundle):
    """Stable Diffusion XL: UNet, VAE, CLIP-L and CLIP-G (with projection) text encoders, their tokenizers."""

    unet: _Any
    vae: _Any
    text_encoder: _Any
    text_encoder_2: _Any
    tokenizer: _Any
    tokenizer_2: _Any
    noise_scheduler: _Any
    prediction_type: str = "epsilon"
    source: str = ""
    dtypes: dict = field(default_factory=dict)
    fingerprint: str = ""
    clip_skip: int = 0
    #: the text encoders run in the training forward (a setup trains one of them)
    train_text_encoder: bool = False
    lora: LoraInfo | None = None
    #: what sdxl.embedding_setup did (nodes.sdxl.embedding.SDXLEmbeddingInfo)
    embedding: _Any = None
    #: part name -> learning rate of its optimizer group (sdxl.finetune_setup); missing or 0 = the optimizer's
    learning_rates: dict = field(default_factory=dict)
    progress: dict = field(default_factory=dict)

    family = "sdxl"
    version = "sdxl"
    part_names = ("unet", "vae", "text_encoder", "text_encoder_2")

    # -- parts for the data graph ---------------------------------------------
    def vae_part(self) -> VaePart:
        return vae_part(self.vae, fingerprint_of("vae", self.fingerprint))

    def text_encoder_parts(self) -> tuple[TextEncoderPart, TextEncoderPart]:
        return (TextEncoderPart(self.text_encoder, fingerprint_of("text_encoder", self.fingerprint)),
                TextEncoderPart(self.text_encoder_2, fingerprint_of("text_encoder_2", self.fingerprint)))

    def tokenizer_parts(self) -> tuple[TokenizerPart, TokenizerPart]:
        return (TokenizerPart(self.tokenizer, fingerprint_of("tokenizer", self.fingerprint)),
                TokenizerPart(self.tokenizer_2, fingerprint_of("tokenizer_2", self.fingerprint)))

    # -- training ----------------------------------------------------------------
    def training_parts(self) -> tuple[str, ...]:
        return self.part_names  # the VAE and encoders too: the data graph encodes on the training device

    def unet_input(self):
        """The UNet's input weight: where a batch goes (diffusers' ``unet.device`` walks every module)."""
        return self.unet.conv_in.weight

    def latents(self, batch: dict):
        w = self.unet_input()
        return require_field(batch, LATENT, HOW_TO_FEED[LATENT]).to(w.device, dtype=w.dtype)

    def conditioning(self, batch: dict):
        """The UNet's text conditioning for a batch: (hidden states, pooled embedding)."""
        if not self.train_text_encoder:
            return tuple(require_field(batch, k, HOW_TO_FEED[k]) for k in (EMBEDDING, POOLED))
        from .encode import encode_both

        ids, ids_2 = (require_field(batch, k, HOW_TO_FEED[k]) for k in (TOKENS, TOKENS_2))
        return encode_both(self.text_encoder, self.text_encoder_2, ids, ids_2, self.clip_skip)

    def predict(self, noisy, timesteps, batch: dict):
        w = self.unet_input()
        cond, pooled = (x.to(w.device, dtype=w.dtype) for x in self.conditioning(batch))
        time_ids = require_field(batch, TIME_IDS, HOW_TO_FEED[TIME_IDS]).to(w.device, dtype=w.dtype)
        return self.unet(noisy.to(w.dtype), timesteps, encoder_hidden_states=cond,
                         added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}, return_dict=False)[0]

    def describe(self) -> dict:
        return {"family": self.family, "version": self.version, "prediction_type": self.prediction_type,
                "source": self.source, "dtypes": dict(self.dtypes)}


def check_sdxl_model(model: _Any, node: str) -> SDXLModel:
    """``model`` as an SDXLModel, or a clear error for another family's model."""
    return require_model(model, SDXLModel, node, "a Stable Diffusion XL model")
