"""Sampling FLUX.1 with diffusers' FluxPipeline and its flow-matching Euler scheduler; PNGs carry their
prompt and settings (Forge's "Distilled CFG Scale" for dev's guidance).

Prompts are encoded here (T5 sequence and CLIP-L pooled, as the pipeline's ``encode_prompt``), so
the same encoders the training saw are used. dev embeds a guidance value (no second pass, no
negative prompt); schnell takes none. The scheduler's resolution-dependent shift comes from the
pipeline (``mu`` from the image's token count).
"""

from __future__ import annotations

from dataclasses import dataclass

from runtime import Input, Output, Param, node
from runtime.port_types import FileList, Sampler

from nodes.sampling import PromptParams, PromptSampler

from .types import FluxModel

SCHEDULER = "flow_euler"


@dataclass
class FluxSampler(PromptSampler):
    """Sampling settings of ``flux.sample``; ``sample`` writes the PNGs (also used by train.sample_hook)."""

    width: int = 1024
    height: int = 1024
    steps: int = 28
    guidance: float = 3.5
    max_length: int = 512
    scheduler: str = SCHEDULER
    cfg: float = 1.0
    family = "flux"
    size_multiple = 16  # 8 px per latent, 2x2 latents per token
    lora_parts = ("transformer", "text_encoder")

    def checked(self, model):
        """The model, after the checks that need it: finite weights, the LoRA file fits."""
        from nodes.lora_check import check_model_weights

        from .model import check_flux_model

        model = check_flux_model(model, "flux.sample")
        check_model_weights(model)
        if self.lora:
            from pathlib import Path

            from nodes.lora_check import read_lora_file

            from .lora_names import check_lora_fits

            check_lora_fits(read_lora_file(self.lora), model, Path(self.lora).name)
        return model

    def lora_weights(self, model):
        """A kohya/BFL file as a diffusers state dict, split by our reader: diffusers' own converter
        assumes FLUX.1's full widths. A diffusers-format file goes by its path."""
        from nodes.lora_check import read_lora_file

        from .lora_names import diffusers_state_dict, read_kohya

        tensors = read_lora_file(self.lora)
        if not any(k.endswith(".lora_down.weight") for k in tensors):
            return self.lora
        return diffusers_state_dict(read_kohya(tensors, model))

    def settings(self, model, prompt: str, seed: int, train_step: int, tag: str) -> dict:
        out = super().settings(model, prompt, seed, train_step, tag)
        out.update(guidance=self.guidance if model.guidance_embeds else None, variant=model.variant)
        return out

    def pipeline(self, model, device):
        from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

        from nodes.placeholder_tokens import plain_tokenizer

        # prompts are encoded by generate: the pipeline gets embeddings only
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(model.noise_scheduler.config)
        return FluxPipeline(scheduler=scheduler, vae=model.vae, text_encoder=model.text_encoder,
                            tokenizer=plain_tokenizer(model.tokenizer), text_encoder_2=model.text_encoder_2,
                            tokenizer_2=plain_tokenizer(model.tokenizer_2), transformer=model.transformer)

    def generate(self, pipe, model, prompt: str, seed: int, device):
        import contextlib

        import torch

        from .encode import encode_prompts

        t5, pooled = encode_prompts(model, [prompt], self.max_length)
        dtype = model.transformer_input().dtype
        low = sorted({p.dtype for p in model.transformer.parameters() if p.is_floating_point()} - {torch.float32},
                     key=str)
        amp = torch.autocast(device.type, dtype=low[0]) if low else contextlib.nullcontext()
        extra = {"guidance_scale": self.guidance} if model.guidance_embeds else {}
        generator = torch.Generator("cpu").manual_seed(seed)
        with torch.no_grad(), amp:
            latents = pipe(prompt_embeds=t5.to(device, dtype), pooled_prompt_embeds=pooled.to(device, dtype),
                           num_inference_steps=self.steps, width=self.width, height=self.height,
                           generator=generator, output_type="latent", max_sequence_length=t5.shape[1],
                           **extra).images
        with torch.no_grad():
            decoded = decode(pipe, model.vae, latents, self.height, self.width)
        return pipe.image_processor.postprocess(decoded.float(), output_type="pil")[0]


def decode(pipe, vae, packed, height: int, width: int):
    """Images from the pipeline's packed latents: unpacked, unscaled and unshifted, through the VAE."""
    latents = pipe._unpack_latents(packed, height, width, pipe.vae_scale_factor)
    weight = next(vae.post_quant_conv.parameters()) if vae.post_quant_conv is not None else next(vae.parameters())
    latents = latents.to(weight.device, weight.dtype)
    latents = latents / vae.config.scaling_factor + (vae.config.shift_factor or 0.0)
    return vae.decode(latents, return_dict=False)[0]


@node("flux.sample", title="Sample Flux", category="Sample", sink=True)
class Sample(PromptParams):
    """Generate images with a FLUX.1 model (optionally plus a LoRA file) with the flow-matching Euler
    scheduler, and write PNGs whose metadata holds the prompt and settings (A1111/Forge ``parameters``
    text). Emits a ``sample`` event per prompt. Leave ``model`` unconnected and wire ``sampler`` to
    train.sample_hook to sample with these settings during training."""

    sampler_class = FluxSampler
    model = Input(FluxModel, optional=True, doc="a FLUX.1 model (trained or not)")
    images = Output(FileList, doc="the PNG files written")
    sampler = Output(Sampler, serves=FluxModel, doc="these settings, for train.sample_hook")
    steps = Param(int, 28, min=1, max=1000, doc="denoising steps (schnell: 4)")
    width = Param(int, 1024, min=16, max=4096, doc="image width (multiple of 16)")
    height = Param(int, 1024, min=16, max=4096, doc="image height (multiple of 16)")
    guidance = Param(float, 3.5, min=0, doc="dev's embedded guidance (Forge's Distilled CFG Scale); schnell "
                                            "ignores it")
    max_length = Param(int, 512, min=1, max=512, doc="T5 tokens of the prompt (512 as dev was trained; schnell "
                                                     "256)")
