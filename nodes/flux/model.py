"""The Flux model value: transformer, VAE, CLIP-L and T5 text encoders and tokenizers, flow-matching schedule.

The transformer reads T5's last hidden state (``t5_embedding``, B x L x D) as its text sequence and
CLIP-L's pooled output (``pooled_embedding``, B x P): the batch fields ``predict`` reads, beside the
VAE's ``latent`` (B x 16 x h x w, already shifted and scaled by the shared VAE encoder). Packing the
latents into 2x2 patches, the image and text position ids, the noise level as ``timestep`` and dev's
guidance all happen in ``predict``, so the data graph and its caches hold plain latents. When a setup
trains CLIP-L, it runs in the training forward on the CLIP token ids (``tokens``) instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any as _Any

from nodes.diffusers_parts import TextEncoderPart, TokenizerPart, VaePart, fingerprint_of, vae_part
from nodes.lora_adapters import LoraInfo
from nodes.train.bundle import require_field, require_model
from nodes.train.flow import FlowMatchingBundle

#: batch keys the Flux model reads (the output port names of nodes/flux/encode.py and the VAE encoder)
LATENT, T5_EMBEDDING, POOLED, TOKENS = "latent", "t5_embedding", "pooled_embedding", "tokens"
HOW_TO_FEED = {
    LATENT: "connect the VAE encoder's 'latent' output (sd.encode_image with the Flux model's 'vae', or a cache "
            "of it) to the batches node's fields",
    T5_EMBEDDING: "connect flux.encode_text's 't5_embedding' output to the batches node's fields",
    POOLED: "connect flux.encode_text's 'pooled_embedding' output to the batches node's fields",
    TOKENS: "CLIP-L trains, so it runs in the training forward: connect sd.tokenize's 'tokens' output (with the "
            "model's 'tokenizer') to the batches node's fields, named 'tokens'",
}
VARIANTS = ("dev", "schnell")


def text_fields(text_encoder_trains: bool) -> dict[str, str]:
    """The batch fields of the text conditioning (field -> how to provide it): T5's cached sequence, and
    CLIP-L's token ids when it trains in the loop, else its cached pooled output."""
    keys = (T5_EMBEDDING, TOKENS if text_encoder_trains else POOLED)
    return {k: HOW_TO_FEED[k] for k in keys}


# -- packing (what FluxPipeline's _pack_latents / _unpack_latents / _prepare_latent_image_ids do) -------------

def pack_latents(latents):
    """(B, C, h, w) latents as (B, h/2 * w/2, 4C) tokens of 2x2 patches, row by row."""
    b, c, h, w = latents.shape
    x = latents.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(tokens, h: int, w: int):
    """The inverse of ``pack_latents``: (B, h/2 * w/2, 4C) tokens as (B, C, h, w) latents."""
    b, _, d = tokens.shape
    x = tokens.reshape(b, h // 2, w // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, d // 4, h, w)


def image_ids(rows: int, cols: int, device=None, dtype=None):
    """Position ids (rows * cols, 3) of the packed image tokens: 0, row, column."""
    import torch

    ids = torch.zeros(rows, cols, 3, device=device, dtype=dtype)
    ids[..., 1] = torch.arange(rows, device=device, dtype=dtype)[:, None]
    ids[..., 2] = torch.arange(cols, device=device, dtype=dtype)[None, :]
    return ids.reshape(rows * cols, 3)


@dataclass(eq=False)
class FluxModel(FlowMatchingBundle):
    """FLUX.1 dev or schnell: transformer, 16-channel VAE, CLIP-L and T5 text encoders, their tokenizers."""

    transformer: _Any
    vae: _Any
    text_encoder: _Any
    text_encoder_2: _Any
    tokenizer: _Any
    tokenizer_2: _Any
    noise_scheduler: _Any
    #: "dev" (guidance-distilled: the transformer embeds a guidance value) or "schnell" (no guidance input)
    variant: str = "dev"
    #: the guidance value dev's transformer is given in training (1.0 as OneTrainer and kohya train)
    guidance: float = 1.0
    source: str = ""
    dtypes: dict = field(default_factory=dict)
    fingerprint: str = ""
    #: CLIP-L runs in the training forward (a setup trains it); T5 is always fed from the data graph
    train_text_encoder: bool = False
    lora: LoraInfo | None = None
    #: part name -> learning rate of its optimizer group; missing or 0 = the optimizer's
    learning_rates: dict = field(default_factory=dict)
    #: how the frozen transformer and T5 are stored (nodes.quantize: none, int8, fp8, nf4)
    quantize: str = "none"
    progress: dict = field(default_factory=dict)

    family = "flux"
    part_names = ("transformer", "vae", "text_encoder", "text_encoder_2")

    @property
    def version(self) -> str:
        return f"flux1-{self.variant}"

    @property
    def guidance_embeds(self) -> bool:
        """Whether the transformer takes a guidance value (dev) or not (schnell)."""
        return bool(self.transformer.config.guidance_embeds)

    # -- parts for the data graph ---------------------------------------------
    def vae_part(self) -> VaePart:
        return vae_part(self.vae, fingerprint_of("vae", self.fingerprint))

    def text_encoder_parts(self) -> tuple[TextEncoderPart, TextEncoderPart]:
        return (TextEncoderPart(self.text_encoder, fingerprint_of("text_encoder", self.fingerprint)),
                TextEncoderPart(self.text_encoder_2, fingerprint_of("text_encoder_2", self.fingerprint,
                                                                    *([self.quantize] if self.quantize != "none" else []))))

    def tokenizer_parts(self) -> tuple[TokenizerPart, TokenizerPart]:
        return (TokenizerPart(self.tokenizer, fingerprint_of("tokenizer", self.fingerprint)),
                TokenizerPart(self.tokenizer_2, fingerprint_of("tokenizer_2", self.fingerprint)))

    # -- training ----------------------------------------------------------------
    def training_parts(self) -> tuple[str, ...]:
        return self.part_names  # the VAE and encoders too: the data graph encodes on the training device

    def transformer_input(self):
        """The transformer's input weight: where a batch goes, in which dtype."""
        return self.transformer.x_embedder.weight

    def latents(self, batch: dict):
        w = self.transformer_input()
        latent = require_field(batch, LATENT, HOW_TO_FEED[LATENT])
        if latent.ndim != 4 or latent.shape[-1] % 2 or latent.shape[-2] % 2:
            raise ValueError(f"the batches' 'latent' has shape {list(latent.shape)}: Flux needs (B, C, h, w) latents "
                             "of even height and width (images whose sides are multiples of 16 px: set the "
                             "bucket quantization to 16)")
        return latent.to(w.device, dtype=w.dtype)

    def conditioning(self, batch: dict):
        """The transformer's text conditioning for a batch: (T5 sequence (B, L, D), CLIP pooled (B, P))."""
        t5 = require_field(batch, T5_EMBEDDING, HOW_TO_FEED[T5_EMBEDDING])
        if not self.train_text_encoder:
            return t5, require_field(batch, POOLED, HOW_TO_FEED[POOLED])
        from .encode import clip_pooled

        return t5, clip_pooled(self.text_encoder, require_field(batch, TOKENS, HOW_TO_FEED[TOKENS]))

    def predict(self, noisy, sigmas, batch: dict):
        """The velocity for ``noisy`` latents (B, C, h, w) at noise levels ``sigmas`` (B,) in [0, 1]."""
        import torch

        w = self.transformer_input()
        b, _, h, wd = noisy.shape
        t5, pooled = (x.to(w.device, dtype=w.dtype) for x in self.conditioning(batch))
        extra = {}
        if self.guidance_embeds:  # dev: required; schnell's transformer refuses it
            extra["guidance"] = torch.full((b,), float(self.guidance), device=w.device, dtype=w.dtype)
        out = self.transformer(
            hidden_states=pack_latents(noisy.to(w.device, dtype=w.dtype)), encoder_hidden_states=t5,
            pooled_projections=pooled, timestep=sigmas.to(w.device, dtype=w.dtype),
            img_ids=image_ids(h // 2, wd // 2, w.device, w.dtype),
            txt_ids=torch.zeros(t5.shape[1], 3, device=w.device, dtype=w.dtype), return_dict=False, **extra)[0]
        return unpack_latents(out, h, wd)

    def describe(self) -> dict:
        return {"family": self.family, "version": self.version, "variant": self.variant,
                "guidance": self.guidance, "quantize": self.quantize, "source": self.source,
                "dtypes": dict(self.dtypes)}


def check_flux_model(model: _Any, node: str) -> FluxModel:
    """``model`` as a FluxModel, or a clear error for another family's model."""
    return require_model(model, FluxModel, node, "a FLUX.1 model")
