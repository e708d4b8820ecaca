"""Data-graph stages of SD 1.x/2.x: VAE-encode images, tokenize captions, CLIP-encode tokens.

Their output port names are the batch keys the SD model reads: ``latent``,
``tokens`` and ``embedding`` (also the slot names of the data caches, so a
cache in between keeps them). Put a cache after them and the VAE and the text
encoder run once per item, not once per epoch.
"""

from __future__ import annotations

from runtime import Choice, Input, Output, Param, node
from runtime.data import PerSampleStage
from runtime.port_types import VAE, Caption, ImageTensor, Latent, TextEmbedding, TextEncoder, TokenIds, Tokenizer


def _check(value, cls_name: str, port: str, source: str):
    if type(value).__name__ != cls_name:
        raise TypeError(f"input {port!r} must come from {source} (got {type(value).__name__})")


@node("sd.encode_image", title="Encode image (VAE)", category="Data")
class EncodeImage(PerSampleStage):
    """Encode an image tensor (CHW in -1..1) to a VAE latent, scaled by the VAE's scaling factor."""

    image = Input(ImageTensor, doc="image tensor in -1..1 (data.to_tensor)")
    vae = Input(VAE, doc="the VAE (from the model loader)")
    latent = Output(Latent, doc="the scaled latent (C x H/8 x W/8 for SD)")
    mode = Param(Choice("mean", "sample"), "mean",
                 doc="latent = the distribution's mean, or a fresh sample of it per epoch")
    parallel = False

    @property
    def random(self):
        return self.mode == "sample"

    def setup(self, ctx, vae):
        _check(vae, "VaePart", "vae", "an SD model loader's 'vae' output")

    def process(self, item, image, vae):
        import torch

        module = vae.module
        with torch.no_grad():
            x = image[None].to(module.device, module.dtype)
            dist = module.encode(x).latent_dist
            z = dist.mean if self.mode == "mean" else dist.sample(generator=item.torch_generator())
            z = (z - vae.shift_factor) * vae.scaling_factor
        return {"latent": z[0].to("cpu", torch.float32)}


@node("sd.tokenize", title="Tokenize", category="Data")
class Tokenize(PerSampleStage):
    """Turn a caption into token ids (CLIP's, or T5's for Flux), padded and truncated to ``max_length``
    or the tokenizer's own length (CLIP 77, T5 512)."""

    caption = Input(Caption, doc="caption text")
    tokenizer = Input(Tokenizer, doc="the tokenizer (from the model loader)")
    tokens = Output(TokenIds, doc="token ids (1-D, max_length long)")
    max_length = Param(int, 0, min=0, max=4096, doc="pad or cut to this many tokens (0: the tokenizer's own: "
                                                    "77 for CLIP, 512 for T5)")
    random = False

    def setup(self, ctx, tokenizer):
        _check(tokenizer, "TokenizerPart", "tokenizer", "an SD model loader's 'tokenizer' output")

    def process(self, item, caption, tokenizer):
        from .text import tokenize

        return {"tokens": tokenize(tokenizer.tokenizer, [caption or ""], self.max_length or None)[0]}


@node("sd.encode_text", title="Encode text (CLIP)", category="Data")
class EncodeText(PerSampleStage):
    """Encode token ids with the CLIP text encoder into the UNet's conditioning (77 x D)."""

    tokens = Input(TokenIds, doc="token ids (sd.tokenize)")
    text_encoder = Input(TextEncoder, doc="the text encoder (from the model loader)")
    embedding = Output(TextEmbedding, doc="hidden states, 77 x D")
    clip_skip = Param(int, 0, min=0, max=12, doc="final layers to skip (1 = A1111's clip skip 2)")
    random = False
    parallel = False

    def setup(self, ctx, text_encoder):
        _check(text_encoder, "TextEncoderPart", "text_encoder", "an SD model loader's 'text_encoder' output")
        layers = text_encoder.module.config.num_hidden_layers
        if self.clip_skip >= layers:
            raise ValueError(f"param 'clip_skip': {self.clip_skip} is too large for a {layers}-layer text encoder")

    def process(self, item, tokens, text_encoder):
        import torch

        from .text import encode_tokens

        with torch.no_grad():
            out = encode_tokens(text_encoder.module, tokens[None], self.clip_skip)
        return {"embedding": out[0].to("cpu", torch.float32)}
