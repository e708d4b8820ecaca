"""Sampling SD 1.x/2.x with diffusers' StableDiffusionPipeline; PNGs carry their prompt and settings
(the prompt loop, LoRA files and params shared with other families: ``nodes.sampling``)."""

from __future__ import annotations

from dataclasses import dataclass

from runtime import Input, Output, Param, node
from runtime.port_types import FileList, Sampler

from nodes.sampling import PromptSampler, SampleParams, make_scheduler

from .types import SDModel


@dataclass
class SDSampler(PromptSampler):
    """Sampling settings of ``sd.sample``; ``sample`` writes the PNGs (also used by train.sample_hook)."""

    family = "sd"
    lora_parts = ("unet", "text_encoder")

    def checked(self, model):
        """The model, after the checks that need it: finite weights, the LoRA file fits."""
        from pathlib import Path

        from nodes.lora_check import check_model_weights, read_lora_file

        from .lora_check import check_lora_fits
        from .model import check_sd_model

        model = check_sd_model(model, "sd.sample")
        check_model_weights(model)
        if self.lora:
            check_lora_fits(read_lora_file(self.lora), model, Path(self.lora).name)
        return model

    def pipeline(self, model, device):
        from diffusers import StableDiffusionPipeline

        from nodes.placeholder_tokens import plain_tokenizer

        # prompts are encoded by generate (with placeholders expanded): the pipeline gets embeddings only
        return StableDiffusionPipeline(
            vae=model.vae, text_encoder=model.text_encoder, tokenizer=plain_tokenizer(model.tokenizer),
            unet=model.unet, scheduler=make_scheduler(self.scheduler, model.noise_scheduler.config),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)

    def generate(self, pipe, model, prompt: str, seed: int, device):
        import contextlib

        import torch

        from .text import encode_tokens, tokenize

        te = pipe.text_encoder
        with torch.no_grad():
            cond = encode_tokens(te, tokenize(model.tokenizer, [prompt]), self.clip_skip)
            uncond = encode_tokens(te, tokenize(model.tokenizer, [self.negative_prompt]), self.clip_skip)
        unet_dtype = model.unet.dtype
        mixed = unet_dtype != torch.float32 or te.dtype != unet_dtype
        amp = torch.autocast(device.type, dtype=unet_dtype) if mixed else contextlib.nullcontext()
        generator = torch.Generator("cpu").manual_seed(seed)
        with torch.no_grad(), amp:
            latents = pipe(prompt_embeds=cond.to(unet_dtype), negative_prompt_embeds=uncond.to(unet_dtype),
                           num_inference_steps=self.steps, guidance_scale=self.cfg, width=self.width,
                           height=self.height, generator=generator, output_type="latent").images
            vae = model.vae
            scaled = latents.to(vae.dtype) / vae.config.scaling_factor
            decoded = vae.decode(scaled, return_dict=False)[0]
        return pipe.image_processor.postprocess(decoded.float(), output_type="pil")[0]


@node("sd.sample", title="Sample SD", category="Sample", sink=True)
class Sample(SampleParams):
    """Generate images with a model (optionally plus a LoRA file) and write PNGs whose metadata holds the
    prompt and settings (A1111's ``parameters`` text). Emits a ``sample`` event per prompt. Leave ``model``
    unconnected and wire ``sampler`` to train.sample_hook to sample with these settings during training."""

    sampler_class = SDSampler
    model = Input(SDModel, optional=True, doc="an SD 1.x/2.x model (trained or not)")
    images = Output(FileList, doc="the PNG files written")
    sampler = Output(Sampler, serves=SDModel, doc="these settings, for train.sample_hook")
    clip_skip = Param(int, 0, min=0, max=12, doc="text-encoder layers to skip (1 = A1111's clip skip 2)")
