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

from runtime import Choice, Device, File, Input, Output, Param, RunPath, Seed, StrList, node
from runtime.port_types import FileList, Sampler

from nodes.sampling import SCHEDULERS, make_scheduler, seeds_of, slug, write_png
from nodes.train.artifacts import ModelSampler

from .types import SDXLModel

ADAPTER = "sample_lora"
LORA_PARTS = ("unet", "text_encoder", "text_encoder_2")


def size_problems(width: int, height: int) -> list[str]:
    return [f"{side} {value} must be a multiple of 8" for side, value in (("width", width), ("height", height))
            if value % 8]


@dataclass
class SDXLSampler(ModelSampler):
    """Sampling settings of ``sdxl.sample``; ``sample`` writes the PNGs (also used by train.sample_hook)."""

    prompts: list
    negative_prompt: str = ""
    seed: int = 0
    steps: int = 25
    cfg: float = 7.0
    width: int = 1024
    height: int = 1024
    scheduler: str = "dpmpp_2m"
    images_per_prompt: int = 1
    clip_skip: int = 0
    lora: str | None = None
    lora_scale: float = 1.0
    folder: str = "samples"
    device: str = "auto"

    def sample(self, ctx, model, step: int | None = None, tag: str = "") -> list[Path]:
        """Write one PNG per prompt and image. During training (``step`` given) file names start with
        the step, no progress events are sent, a stop request does not interrupt the sampling, and it
        runs where the model trains. A LoRA file's adapters are removed again afterwards."""
        from nodes.diffusers_parts import quiet_libraries
        from nodes.train.loop import resolve_device

        model = self._checked(model)
        quiet_libraries()
        device = model.device if step is not None else resolve_device(self.device)
        pipe = self._pipeline(model, device)
        lora_before = {part: self._adapted(getattr(model, part)) for part in LORA_PARTS} if self.lora else None
        try:
            if self.lora:
                self._load_lora(ctx, pipe, lora_before)
            return self._sample_prompts(ctx, pipe, model, device, step, tag)
        finally:
            if self.lora:
                self._unload_lora(pipe, lora_before)

    def seeds_of(self, p_index: int) -> list[int]:
        return seeds_of(self.seed, p_index, self.images_per_prompt)

    # -- steps ------------------------------------------------------------------------
    def _checked(self, model):
        """The model, after the checks that need it: size, clip skip, finite weights, the LoRA file fits."""
        from nodes.lora_check import check_model_weights, read_lora_file

        from .lora_names import check_lora_fits

        from .model import check_sdxl_model

        model = check_sdxl_model(model, "sdxl.sample")
        problems = size_problems(self.width, self.height)
        if problems:
            raise ValueError("; ".join(problems))
        layers = min(model.text_encoder.config.num_hidden_layers, model.text_encoder_2.config.num_hidden_layers)
        if self.clip_skip + 2 > layers:
            raise ValueError(f"param 'clip_skip': {self.clip_skip} is too large for {layers}-layer text encoders")
        check_model_weights(model)
        if self.lora:
            check_lora_fits(read_lora_file(self.lora), model, Path(self.lora).name)
        return model

    def _sample_prompts(self, ctx, pipe, model, device, step, tag) -> list[Path]:
        prefix = f"step{step:06d}-" if step is not None else ""
        suffix = f"-{tag}" if tag else ""
        train_step = int(model.progress.get("step", 0)) if step is None else step
        written = []
        for p_index, prompt in enumerate(self.prompts):
            paths, seeds = [], self.seeds_of(p_index)
            for seed in seeds:
                if step is None:
                    ctx.check_cancelled()
                image = self._generate(pipe, model, prompt, seed, device)
                path = ctx.path(self.folder, f"{prefix}{p_index:02d}-{slug(prompt)}-{seed}{suffix}.png")
                write_png(image, path, self._settings(model, prompt, seed, train_step, tag))
                paths.append(path)
            written += paths
            ctx.sample(paths, prompt, seed=seeds[0], seeds=seeds, steps=self.steps, cfg=self.cfg,
                       scheduler=self.scheduler, step=train_step, tag=tag)
            if step is None:
                ctx.progress(p_index + 1, len(self.prompts))
        return written

    def _settings(self, model, prompt: str, seed: int, train_step: int, tag: str) -> dict:
        return {"prompt": prompt, "negative_prompt": self.negative_prompt, "seed": seed, "steps": self.steps,
                "cfg": self.cfg, "width": self.width, "height": self.height, "scheduler": self.scheduler,
                "clip_skip": self.clip_skip, "model": model.source, "family": "sdxl", "lora": self.lora or "",
                "lora_scale": self.lora_scale, "train_step": train_step, "weights": tag or "live"}

    def _pipeline(self, model, device):
        from diffusers import StableDiffusionXLPipeline

        from nodes.placeholder_tokens import plain_tokenizer

        # prompts are encoded by _encode (with placeholders expanded): the pipeline gets embeddings only
        pipe = StableDiffusionXLPipeline(
            vae=model.vae, text_encoder=model.text_encoder, text_encoder_2=model.text_encoder_2,
            tokenizer=plain_tokenizer(model.tokenizer), tokenizer_2=plain_tokenizer(model.tokenizer_2),
            unet=model.unet, scheduler=make_scheduler(self.scheduler, model.noise_scheduler.config),
            add_watermarker=False)
        pipe.set_progress_bar_config(disable=True)
        pipe.to(device)
        model.prepare_for_inference()
        return pipe

    # -- a LoRA file, for the sampling only ---------------------------------------------
    @staticmethod
    def _adapted(module) -> bool:
        """Whether ``module`` holds peft layers (a LoRA setup's adapters)."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        return any(isinstance(m, BaseTunerLayer) for m in module.modules())

    def _load_lora(self, ctx, pipe, before: dict) -> None:
        import warnings

        active = list(pipe.get_active_adapters()) if any(before.values()) else []
        with ctx.torch_seeded(self.seed, "lora"), warnings.catch_warnings():  # peft initialises the layers it loads
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")  # the model's own adapter
            pipe.load_lora_weights(self.lora, adapter_name=ADAPTER, use_safetensors=True)
        pipe.set_adapters(active + [ADAPTER], adapter_weights=[1.0] * len(active) + [self.lora_scale])

    @staticmethod
    def _unload_lora(pipe, before: dict) -> None:
        """Remove the file's adapter; a part that had no adapters before gets its plain layers back."""
        from diffusers.utils import recurse_remove_peft_layers

        for part in LORA_PARTS:
            module = getattr(pipe, part)
            if before[part]:
                if ADAPTER in (getattr(module, "peft_config", None) or {}):
                    # diffusers' UNet and transformers' encoders name this method differently
                    delete = module.delete_adapters if part == "unet" else module.delete_adapter
                    delete(ADAPTER)
                continue
            recurse_remove_peft_layers(module)
            if hasattr(module, "peft_config"):
                del module.peft_config
            if hasattr(module, "_hf_peft_config_loaded"):
                module._hf_peft_config_loaded = False

    # -- one image ----------------------------------------------------------------------
    def _encode(self, model, prompt: str):
        """(hidden states, pooled embedding) of ``prompt``; an empty negative prompt is zeros."""
        import torch

        from nodes.sd.text import tokenize

        from .encode import encode_both

        with torch.no_grad():
            return encode_both(model.text_encoder, model.text_encoder_2, tokenize(model.tokenizer, [prompt]),
                               tokenize(model.tokenizer_2, [prompt]), self.clip_skip)

    def _generate(self, pipe, model, prompt: str, seed: int, device):
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
class Sample:
    """Generate images with an SDXL model (optionally plus a LoRA file) and write PNGs whose metadata holds
    the prompt and settings (A1111's ``parameters`` text). Emits a ``sample`` event per prompt. Leave
    ``model`` unconnected and wire ``sampler`` to train.sample_hook to sample with these settings during
    training."""

    model = Input(SDXLModel, optional=True, doc="an SDXL model (trained or not)")
    images = Output(FileList, doc="the PNG files written")
    sampler = Output(Sampler, serves=SDXLModel, doc="these settings, for train.sample_hook")
    prompts = Param(StrList, ["a red circle on a blue background"], doc="one image set per prompt")
    negative_prompt = Param(str, "", doc="what to steer away from (used when cfg > 1; empty: none, as zeros)")
    seed = Param(Seed, 0, doc="seed of the first image; each further image adds 1")
    steps = Param(int, 25, min=1, max=1000, doc="denoising steps")
    cfg = Param(float, 7.0, min=0, doc="classifier-free guidance scale (1 = off)")
    width = Param(int, 1024, min=8, max=4096, doc="image width (multiple of 8); also the size conditioning")
    height = Param(int, 1024, min=8, max=4096, doc="image height (multiple of 8); also the size conditioning")
    scheduler = Param(Choice(*SCHEDULERS), "dpmpp_2m", doc="sampling scheduler")
    images_per_prompt = Param(int, 1, min=1, max=64, doc="images per prompt")
    clip_skip = Param(int, 0, min=0, max=12, doc="text-encoder layers to skip before the penultimate one")
    lora = Param(File("open", filter="*.safetensors"), optional=True,
                 doc="a LoRA file to apply (kohya or diffusers format)")
    lora_scale = Param(float, 1.0, doc="strength of the LoRA file")
    folder = Param(RunPath(), "samples", doc="folder inside the run folder")
    device = Param(Device(), "auto", doc="where to sample (during training: where the model trains)")

    def check(self, c):
        """Before the run: the size is a multiple of 8, the LoRA file is a complete safetensors file
        (whether its keys fit needs the model: checked when sampling starts)."""
        from nodes.lora_check import not_safe_message
        from nodes.weights_check import safetensors_problem

        for problem in size_problems(self.width, self.height):
            c.error(problem, param=problem.split()[0])
        if self.lora and Path(self.lora).is_file():
            why = safetensors_problem(self.lora)
            if why:
                c.error(not_safe_message(Path(self.lora), why), param="lora")

    def run(self, ctx, model):
        if self.lora and model is None:  # read now: a bad file fails before training, not at its first preview
            from nodes.lora_check import read_lora_file

            read_lora_file(self.lora)
        sampler = SDXLSampler(**{name: getattr(self, name) for name in type(self).__node_spec__.params})
        paths = sampler.sample(ctx, model) if model is not None else []
        return {"images": [str(p) for p in paths], "sampler": sampler}
