"""Sampling SD 1.x/2.x with diffusers' StableDiffusionPipeline; PNGs carry their prompt and settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runtime import Choice, Device, File, Input, Output, Param, RunPath, Seed, StrList, node
from runtime.port_types import FileList, Sampler

from nodes.sampling import SCHEDULERS, make_scheduler, seeds_of, slug, write_png
from nodes.train.artifacts import ModelSampler

from .types import SDModel

@dataclass
class SDSampler(ModelSampler):
    """Sampling settings of ``sd.sample``; ``sample`` writes the PNGs (also used by train.sample_hook)."""

    prompts: list
    negative_prompt: str = ""
    seed: int = 0
    steps: int = 25
    cfg: float = 7.0
    width: int = 512
    height: int = 512
    scheduler: str = "dpmpp_2m"
    images_per_prompt: int = 1
    clip_skip: int = 0
    lora: str | None = None
    lora_scale: float = 1.0
    folder: str = "samples"
    device: str = "auto"

    def sample(self, ctx, model, step: int | None = None, tag: str = "") -> list[Path]:
        """Write one PNG per prompt and image. During training (``step`` given) file names start with
        the step, no progress events are sent and a stop request does not interrupt the sampling."""
        from nodes.train.loop import resolve_device

        from nodes.diffusers_parts import quiet_libraries
        from nodes.lora_check import check_model_weights, read_lora_file
        from .lora_check import check_lora_fits
        from .model import check_sd_model

        model = check_sd_model(model, "sd.sample")
        for side in ("width", "height"):
            if getattr(self, side) % 8:
                raise ValueError(f"{side} {getattr(self, side)} must be a multiple of 8")
        check_model_weights(model)
        if self.lora:
            check_lora_fits(read_lora_file(self.lora), model, Path(self.lora).name)
        quiet_libraries()
        device = model.device if step is not None else resolve_device(self.device)
        pipe = self._pipeline(ctx, model, device)
        prefix = f"step{step:06d}-" if step is not None else ""
        suffix = f"-{tag}" if tag else ""
        train_step = int(model.progress.get("step", 0)) if step is None else step
        written = []
        try:
            for p_index, prompt in enumerate(self.prompts):
                paths, seeds = [], self.seeds_of(p_index)
                for seed in seeds:
                    if step is None:
                        ctx.check_cancelled()
                    image = self._generate(pipe, model, prompt, seed, device)
                    settings = {"prompt": prompt, "negative_prompt": self.negative_prompt, "seed": seed,
                                "steps": self.steps, "cfg": self.cfg, "width": self.width, "height": self.height,
                                "scheduler": self.scheduler, "clip_skip": self.clip_skip, "model": model.source,
                                "lora": self.lora or "", "lora_scale": self.lora_scale,
                                "train_step": train_step, "weights": tag or "live"}
                    path = ctx.path(self.folder, f"{prefix}{p_index:02d}-{slug(prompt)}-{seed}{suffix}.png")
                    write_png(image, path, settings)
                    paths.append(path)
                written += paths
                ctx.sample(paths, prompt, seed=seeds[0], seeds=seeds, steps=self.steps, cfg=self.cfg,
                           scheduler=self.scheduler, step=train_step, tag=tag)
                if step is None:
                    ctx.progress(p_index + 1, len(self.prompts))
        finally:
            if self.lora:
                pipe.delete_adapters("sample_lora")
        return written

    def seeds_of(self, p_index: int) -> list[int]:
        return seeds_of(self.seed, p_index, self.images_per_prompt)

    def _pipeline(self, ctx, model, device):
        from diffusers import StableDiffusionPipeline

        from nodes.placeholder_tokens import plain_tokenizer

        # prompts are encoded by _generate (with placeholders expanded): the pipeline gets embeddings only
        pipe = StableDiffusionPipeline(
            vae=model.vae, text_encoder=model.text_encoder, tokenizer=plain_tokenizer(model.tokenizer),
            unet=model.unet,
            scheduler=make_scheduler(self.scheduler, model.noise_scheduler.config), safety_checker=None,
            feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        pipe.to(device)
        model.prepare_for_inference()
        if self.lora:
            active = list(pipe.get_active_adapters()) if getattr(model.unet, "peft_config", None) else []
            with ctx.torch_seeded(self.seed, "lora"):  # peft initialises the layers it then loads into
                pipe.load_lora_weights(self.lora, adapter_name="sample_lora", use_safetensors=True)
            pipe.set_adapters(active + ["sample_lora"], adapter_weights=[1.0] * len(active) + [self.lora_scale])
        return pipe

    def _generate(self, pipe, model, prompt: str, seed: int, device):
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
class Sample:
    """Generate images with a model (optionally plus a LoRA file) and write PNGs whose metadata holds the
    prompt and settings (A1111's ``parameters`` text). Emits a ``sample`` event per prompt. Leave ``model``
    unconnected and wire ``sampler`` to train.sample_hook to sample with these settings during training."""

    model = Input(SDModel, optional=True, doc="an SD 1.x/2.x model (trained or not)")
    images = Output(FileList, doc="the PNG files written")
    sampler = Output(Sampler, serves=SDModel, doc="these settings, for train.sample_hook")
    prompts = Param(StrList, ["a red circle on a blue background"], doc="one image set per prompt")
    negative_prompt = Param(str, "", doc="what to steer away from (used when cfg > 1)")
    seed = Param(Seed, 0, doc="seed of the first image; each further image adds 1")
    steps = Param(int, 25, min=1, max=1000, doc="denoising steps")
    cfg = Param(float, 7.0, min=0, doc="classifier-free guidance scale (1 = off)")
    width = Param(int, 512, min=8, max=4096, doc="image width (multiple of 8)")
    height = Param(int, 512, min=8, max=4096, doc="image height (multiple of 8)")
    scheduler = Param(Choice(*SCHEDULERS), "dpmpp_2m", doc="sampling scheduler")
    images_per_prompt = Param(int, 1, min=1, max=64, doc="images per prompt")
    clip_skip = Param(int, 0, min=0, max=12, doc="text-encoder layers to skip (1 = A1111's clip skip 2)")
    lora = Param(File("open", filter="*.safetensors"), optional=True, doc="a LoRA file to apply (either format)")
    lora_scale = Param(float, 1.0, doc="strength of the LoRA file")
    folder = Param(RunPath(), "samples", doc="folder inside the run folder")
    device = Param(Device(), "auto",
                   doc="where to sample (during training: where the model trains)")

    def check(self, c):
        """Before the run: the LoRA file is a complete safetensors file (its keys need the model)."""
        from nodes.lora_check import not_safe_message
        from nodes.weights_check import safetensors_problem

        if self.lora and Path(self.lora).is_file():
            why = safetensors_problem(self.lora)
            if why:
                c.error(not_safe_message(Path(self.lora), why), param="lora")

    def run(self, ctx, model):
        if self.lora and model is None:  # read now: a bad file fails before training, not at its first preview
            from nodes.lora_check import read_lora_file

            read_lora_file(self.lora)
        sampler = SDSampler(**{name: getattr(self, name) for name in type(self).__node_spec__.params})
        paths = sampler.sample(ctx, model) if model is not None else []
        return {"images": [str(p) for p in paths], "sampler": sampler}
