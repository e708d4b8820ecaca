"""Sampling SDXL with diffusers' StableDiffusionXLPipeline; PNGs carry their prompt and settings.

Prompts are encoded here (so a trained embedding's placeholder tokens expand) with both
encoders, as the pipeline's ``encode_prompt`` does: hidden states, the second encoder's pooled
projection; an empty negative prompt is all zeros (the pipeline's ``force_zeros_for_empty_prompt``,
what SDXL was trained with for dropped captions). The pipeline adds the size conditioning of
the image size (original = target = width x height, crop 0, 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runtime import Input, Output, Param, node
from runtime.port_types import FileList, Sampler

from nodes.sampling import PromptSampler, SampleParams, make_scheduler

from .types import SDXLModel


@dataclass
class SDXLSampler(PromptSampler):
    """Sampling settings of ``sdxl.sample``; ``sample`` writes the PNGs (also used by train.sample_hook)."""

    width: int = 1024
    height: int = 1024
    family = "sdxl"
    lora_parts = ("unet", "text_encoder", "text_encoder_2")

    def checked(self, model):
        """The model, after the checks that need it: clip skip, finite weights, the LoRA file fits."""
        from nodes.lora_check import check_model_weights, read_lora_file

        from .lora_names import check_lora_fits
        from .model import check_sdxl_model

        model = check_sdxl_model(model, "sdxl.sample")
        layers = min(model.text_encoder.config.num_hidden_layers, model.text_encoder_2.config.num_hidden_layers)
        if self.clip_skip + 2 > layers:
            raise ValueError(f"param 'clip_skip': {self.clip_skip} is too large for {layers}-layer text encoders")
        check_model_weights(model)
        if self.lora:
            check_lora_fits(read_lora_file(self.lora), model, Path(self.lora).name)
        return model

    def pipeline(self, model, device):
        from diffusers import StableDiffusionXLPipeline

        from nodes.placeholder_tokens import plain_tokenizer

        # prompts are encoded by _encode (with placeholders expanded): the pipeline gets embeddings only
        return StableDiffusionXLPipeline(
            vae=model.vae, text_encoder=model.text_encoder, text_encoder_2=model.text_encoder_2,
            tokenizer=plain_tokenizer(model.tokenizer), tokenizer_2=plain_tokenizer(model.tokenizer_2),
            unet=model.unet, scheduler=make_scheduler(self.scheduler, model.noise_scheduler.config),
            add_watermarker=False)

    # -- one image ----------------------------------------------------------------------
    def _encode(self, model, prompt: str):
        """(hidden states, pooled embedding) of ``prompt``; an empty negative prompt is zeros."""
        import torch

        from nodes.sd.text import tokenize

        from .encode import encode_both

        with torch.no_grad():
            return encode_both(model.text_encoder, model.text_encoder_2, tokenize(model.tokenizer, [prompt]),
                               tokenize(model.tokenizer_2, [prompt]), self.clip_skip)

    def generate(self, pipe, model, prompt: str, seed: int, device):
        import contextlib

        import torch

        cond, pooled = self._encode(model, prompt)
        if self.negative_prompt:
            uncond, uncond_pooled = self._encode(model, self.negative_prompt)
        else:
            uncond, uncond_pooled = torch.zeros_like(cond), torch.zeros_like(pooled)
        dtype = model.unet_input().dtype
        low = sorted({p.dtype for p in model.unet.parameters()} - {torch.float32}, key=str)
        amp = torch.autocast(device.type, dtype=low[0]) if low else contextlib.nullcontext()
        generator = torch.Generator("cpu").manual_seed(seed)
        with torch.no_grad(), amp:
            latents = pipe(prompt_embeds=cond.to(dtype), pooled_prompt_embeds=pooled.to(dtype),
                           negative_prompt_embeds=uncond.to(dtype), negative_pooled_prompt_embeds=uncond_pooled.to(dtype),
                           num_inference_steps=self.steps, guidance_scale=self.cfg, width=self.width,
                           height=self.height, generator=generator, output_type="latent").images
        with torch.no_grad():
            decoded = decode(model.vae, latents)
        return pipe.image_processor.postprocess(decoded.float(), output_type="pil")[0]


def decode(vae, latents):
    """Images from SDXL latents as the pipeline decodes them: a float16 VAE that overflows there
    (``force_upcast``) decodes in float32 and is float16 again afterwards."""
    import torch

    upcast = vae.dtype == torch.float16 and vae.config.get("force_upcast", False)
    if upcast:
        vae.to(torch.float32)
    try:
        weight = next(vae.post_quant_conv.parameters())
        latents = latents.to(weight.device, weight.dtype)
        mean, std = vae.config.get("latents_mean"), vae.config.get("latents_std")
        if mean is not None and std is not None:
            mean, std = (torch.tensor(v).view(1, -1, 1, 1).to(latents) for v in (mean, std))
            latents = latents * std / vae.config.scaling_factor + mean
        else:
            latents = latents / vae.config.scaling_factor
        return vae.decode(latents, return_dict=False)[0]
    finally:
        if upcast:
            vae.to(torch.float16)


@node("sdxl.sample", title="Sample SDXL", category="Sample", sink=True)
class Sample(SampleParams):
    """Generate images with an SDXL model (optionally plus a LoRA file) and write PNGs whose metadata holds
    the prompt and settings (A1111's ``parameters`` text). Emits a ``sample`` event per prompt. Leave
    ``model`` unconnected and wire ``sampler`` to train.sample_hook to sample with these settings during
    training."""

    sampler_class = SDXLSampler
    model = Input(SDXLModel, optional=True, doc="an SDXL model (trained or not)")
    images = Output(FileList, doc="the PNG files written")
    sampler = Output(Sampler, serves=SDXLModel, doc="these settings, for train.sample_hook")
    negative_prompt = Param(str, "", doc="what to steer away from (used when cfg > 1; empty: none, as zeros)")
    width = Param(int, 1024, min=8, max=4096, doc="image width (multiple of 8); also the size conditioning")
    height = Param(int, 1024, min=8, max=4096, doc="image height (multiple of 8); also the size conditioning")
    clip_skip = Param(int, 0, min=0, max=12, doc="text-encoder layers to skip before the penultimate one")
