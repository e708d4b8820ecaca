"""Data-graph stages of SDXL: both CLIP encoders' conditioning, and the size conditioning.

Their output port names are the batch keys the SDXL model reads (``embedding``,
``pooled_embedding``, ``time_ids``). Images go through the shared VAE encoder
(``sd.encode_image`` works for any diffusers VAE) and captions through ``sd.tokenize``
once per tokenizer.
"""

from __future__ import annotations

from runtime import Input, Output, Param, node
from runtime.data import PerSampleStage
from runtime.port_types import Offset, Resolution, TextEmbedding, TextEncoder, TokenIds

from .types import PooledEmbedding, SizeConditioning


def encode_both(text_encoder, text_encoder_2, ids, ids_2, clip_skip: int = 0):
    """SDXL's conditioning for token ids (N, 77) of each tokenizer: the two encoders' hidden states
    ``clip_skip`` layers before the penultimate one, concatenated (N, 77, D1 + D2), and the second
    encoder's pooled projection (N, P)."""
    import torch

    first = text_encoder(ids.to(text_encoder.device), output_hidden_states=True)
    second = text_encoder_2(ids_2.to(text_encoder_2.device), output_hidden_states=True)
    layer = -(clip_skip + 2)
    hidden = torch.cat([first.hidden_states[layer], second.hidden_states[layer].to(first.hidden_states[layer].device)],
                       dim=-1)
    return hidden, second.text_embeds


def time_ids(size, crop_offset, bucket) -> list[float]:
    """SDXL's six size numbers from (width, height) pairs and an (x, y) offset: original height and
    width, crop top and left, target height and width."""
    (ow, oh), (x, y), (tw, th) = size, crop_offset, bucket
    return [float(oh), float(ow), float(y), float(x), float(th), float(tw)]


@node("sdxl.encode_text", title="Encode text (SDXL)", category="Data")
class EncodeText(PerSampleStage):
    """Encode token ids with both SDXL text encoders: the UNet's conditioning (77 x D1+D2) and the
    second encoder's pooled embedding."""

    tokens = Input(TokenIds, doc="token ids of the first tokenizer (sd.tokenize with the model's 'tokenizer')")
    tokens_2 = Input(TokenIds, doc="token ids of the second tokenizer (sd.tokenize with 'tokenizer_2')")
    text_encoder = Input(TextEncoder, doc="the first text encoder (CLIP-L) from the model loader")
    text_encoder_2 = Input(TextEncoder, doc="the second text encoder (CLIP-G, with projection)")
    embedding = Output(TextEmbedding, doc="both encoders' hidden states, concatenated: 77 x (D1 + D2)")
    pooled_embedding = Output(PooledEmbedding, doc="the second encoder's pooled projection")
    clip_skip = Param(int, 0, min=0, max=12, doc="layers to skip before the penultimate one (SDXL uses that)")
    random = False
    parallel = False

    def setup(self, ctx, text_encoder, text_encoder_2):
        for port, part in (("text_encoder", text_encoder), ("text_encoder_2", text_encoder_2)):
            if not hasattr(part, "module"):
                raise TypeError(f"input {port!r} must come from an SDXL model loader (got {type(part).__name__})")
        if not hasattr(text_encoder_2.module, "text_projection"):
            raise TypeError("input 'text_encoder_2' has no projection: connect the loader's 'text_encoder_2' "
                            "(CLIP-G), not 'text_encoder'")
        layers = min(text_encoder.module.config.num_hidden_layers, text_encoder_2.module.config.num_hidden_layers)
        if self.clip_skip + 2 > layers:
            raise ValueError(f"param 'clip_skip': {self.clip_skip} is too large for {layers}-layer text encoders")

    def process(self, item, tokens, tokens_2, text_encoder, text_encoder_2):
        import torch

        with torch.no_grad():
            hidden, pooled = encode_both(text_encoder.module, text_encoder_2.module, tokens[None], tokens_2[None],
                                         self.clip_skip)
        return {"embedding": hidden[0].to("cpu", torch.float32), "pooled_embedding": pooled[0].to("cpu", torch.float32)}


@node("sdxl.size_conditioning", title="Size conditioning (SDXL)", category="Data")
class SizeConditioningStage(PerSampleStage):
    """SDXL's size conditioning per sample: the image's original size, where its crop starts in the
    scaled image (Scale & crop's 'crop_offset') and the bucket it trains at."""

    size = Input(Resolution, doc="original (width, height) of the image file (the concept source's 'size')")
    crop_offset = Input(Offset, doc="(x, y) of the crop in the scaled image (data.scale_crop)")
    bucket = Input(Resolution, doc="target (width, height): the bucket (data.aspect_bucket)")
    time_ids = Output(SizeConditioning, doc="original h, w, crop top, left, target h, w (6 numbers)")
    random = False

    def process(self, item, size, crop_offset, bucket):
        import torch

        return {"time_ids": torch.tensor(time_ids(size, crop_offset, bucket), dtype=torch.float32)}
