"""What the families' samplers share: scheduler choices, seeds, PNGs with settings, the prompt loop, a LoRA
file applied for the sampling only, and the sampler node's params."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from nodes.train.artifacts import ModelSampler
from runtime import Choice, Device, File, Param, RunPath, Seed, StrList

SCHEDULERS = ("ddim", "euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "unipc")
#: A1111's names for the PNG "parameters" text
A1111_NAMES = {"ddim": "DDIM", "euler": "Euler", "euler_a": "Euler a", "dpmpp_2m": "DPM++ 2M",
               "dpmpp_2m_karras": "DPM++ 2M Karras", "unipc": "UniPC"}


def make_scheduler(name: str, config):
    """A sampling scheduler (one of ``SCHEDULERS``) from a DDPM model's noise-schedule config."""
    from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                           EulerDiscreteScheduler, UniPCMultistepScheduler)

    if name == "ddim":
        return DDIMScheduler.from_config(config)
    if name == "euler":
        return EulerDiscreteScheduler.from_config(config)
    if name == "euler_a":
        return EulerAncestralDiscreteScheduler.from_config(config)
    if name in ("dpmpp_2m", "dpmpp_2m_karras"):
        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2,
                                                       use_karras_sigmas=name.endswith("karras"))
    if name == "unipc":
        return UniPCMultistepScheduler.from_config(config)
    raise ValueError(f"unknown scheduler {name!r} (known: {', '.join(SCHEDULERS)})")


def png_info(settings: dict):
    """PNG text chunks: A1111's ``parameters`` line and the full settings as JSON."""
    from PIL.PngImagePlugin import PngInfo

    s = settings
    text = s["prompt"]
    if s.get("negative_prompt"):
        text += f"\nNegative prompt: {s['negative_prompt']}"
    text += f"\nSteps: {s['steps']}, Sampler: {A1111_NAMES.get(s['scheduler'], s['scheduler'])}, CFG scale: {s['cfg']}"
    if s.get("guidance") is not None:  # a guidance-distilled model's embedded guidance (Forge's name)
        text += f", Distilled CFG Scale: {s['guidance']}"
    text += f", Seed: {s['seed']}, Size: {s['width']}x{s['height']}, Model: {s['model']}"
    if s.get("lora"):
        text += f", LoRA: {Path(s['lora']).name}"
    info = PngInfo()
    info.add_text("parameters", text)
    info.add_text("nodetrainer", json.dumps(s, sort_keys=True))
    return info


def slug(text: str, n: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:n] or "sample"


def seeds_of(seed: int, p_index: int, images_per_prompt: int) -> list[int]:
    """The seeds of prompt ``p_index``'s images: one per image, counting on from ``seed``."""
    first = seed + p_index * images_per_prompt
    return [(first + i) % (2**32) for i in range(images_per_prompt)]


def write_png(image, path: Path, settings: dict) -> None:
    """Write ``image`` atomically as a PNG carrying ``settings`` (see ``png_info``)."""
    from runtime.fileio import atomic_path

    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", pnginfo=png_info(settings))


def size_problems(width: int, height: int, multiple: int = 8) -> list[str]:
    """What is wrong with an image size whose sides must be multiples of ``multiple`` (8 for a
    latent-diffusion VAE; 16 where latents are also cut into 2x2 patches)."""
    return [f"{side} {value} must be a multiple of {multiple}" for side, value in (("width", width), ("height", height))
            if value % multiple]


LORA_ADAPTER = "sample_lora"


@dataclass
class PromptSampler(ModelSampler):
    """Sampling settings of a family's sampler node; ``sample`` writes the PNGs (also used by
    train.sample_hook). A family implements ``checked`` (the model, after the checks that need it),
    ``pipeline`` (a diffusers pipeline over the model's parts) and ``generate`` (one image), and names
    the parts a LoRA file may adapt in ``lora_parts``."""

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
    family = ""
    size_multiple = 8
    lora_parts = ()  # not a field: the parts a LoRA file may adapt, set by each family

    def checked(self, model):
        raise NotImplementedError

    def pipeline(self, model, device):
        raise NotImplementedError

    def generate(self, pipe, model, prompt: str, seed: int, device):
        raise NotImplementedError

    def sample(self, ctx, model, step: int | None = None, tag: str = "") -> list[Path]:
        """Write one PNG per prompt and image. During training (``step`` given) file names start with
        the step, no progress events are sent, a stop request does not interrupt the sampling, and it
        runs where the model trains. A LoRA file's adapters are removed again afterwards."""
        from nodes.diffusers_parts import quiet_libraries
        from nodes.train.loop import resolve_device

        problems = size_problems(self.width, self.height, self.size_multiple)
        if problems:
            raise ValueError("; ".join(problems))
        model = self.checked(model)
        quiet_libraries()
        device = model.device if step is not None else resolve_device(self.device)
        pipe = self.pipeline(model, device)
        pipe.set_progress_bar_config(disable=True)
        pipe.to(device)
        model.prepare_for_inference()
        before = {part: adapted(getattr(model, part)) for part in self.lora_parts} if self.lora else None
        try:
            if self.lora:
                self._load_lora(ctx, pipe, model, before)
            return self._sample_prompts(ctx, pipe, model, device, step, tag)
        finally:
            if self.lora:
                self._unload_lora(pipe, before)

    def seeds_of(self, p_index: int) -> list[int]:
        return seeds_of(self.seed, p_index, self.images_per_prompt)

    def lora_weights(self, model):
        """What the pipeline's ``load_lora_weights`` gets for the ``lora`` file: its path (a family whose
        file format diffusers cannot convert for every model size gives a state dict instead)."""
        return self.lora

    def settings(self, model, prompt: str, seed: int, train_step: int, tag: str) -> dict:
        """What a PNG records of how it was made."""
        return {"prompt": prompt, "negative_prompt": self.negative_prompt, "seed": seed, "steps": self.steps,
                "cfg": self.cfg, "width": self.width, "height": self.height, "scheduler": self.scheduler,
                "clip_skip": self.clip_skip, "model": model.source, "family": self.family, "lora": self.lora or "",
                "lora_scale": self.lora_scale, "train_step": train_step, "weights": tag or "live"}

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
                image = self.generate(pipe, model, prompt, seed, device)
                path = ctx.path(self.folder, f"{prefix}{p_index:02d}-{slug(prompt)}-{seed}{suffix}.png")
                write_png(image, path, self.settings(model, prompt, seed, train_step, tag))
                paths.append(path)
            written += paths
            ctx.sample(paths, prompt, seed=seeds[0], seeds=seeds, steps=self.steps, cfg=self.cfg,
                       scheduler=self.scheduler, step=train_step, tag=tag)
            if step is None:
                ctx.progress(p_index + 1, len(self.prompts))
        return written

    # -- a LoRA file, for the sampling only ---------------------------------------------
    def _load_lora(self, ctx, pipe, model, before: dict) -> None:
        import warnings

        active = list(pipe.get_active_adapters()) if any(before.values()) else []
        with ctx.torch_seeded(self.seed, "lora"), warnings.catch_warnings():  # peft initialises the layers it loads
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")  # the model's own adapter
            pipe.load_lora_weights(self.lora_weights(model), adapter_name=LORA_ADAPTER, use_safetensors=True)
        pipe.set_adapters(active + [LORA_ADAPTER], adapter_weights=[1.0] * len(active) + [self.lora_scale])

    def _unload_lora(self, pipe, before: dict) -> None:
        """Remove the file's adapter; a part that had no adapters before gets its plain layers back."""
        from diffusers.utils import recurse_remove_peft_layers

        for part in self.lora_parts:
            module = getattr(pipe, part)
            if before[part]:
                if LORA_ADAPTER in (getattr(module, "peft_config", None) or {}):
                    # diffusers' UNet and transformers' encoders name this method differently
                    delete = module.delete_adapters if hasattr(module, "delete_adapters") else module.delete_adapter
                    delete(LORA_ADAPTER)
                continue
            recurse_remove_peft_layers(module)
            if hasattr(module, "peft_config"):
                del module.peft_config
            if hasattr(module, "_hf_peft_config_loaded"):
                module._hf_peft_config_loaded = False


def adapted(module) -> bool:
    """Whether ``module`` holds peft layers (a LoRA setup's adapters)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(m, BaseTunerLayer) for m in module.modules())


class PromptParams:
    """Params of every family's sampler node (a node sets ``sampler_class`` and its ``model`` input, the
    ``sampler`` output serving its model type, and may override the size defaults)."""

    sampler_class: type = PromptSampler
    prompts = Param(StrList, ["a red circle on a blue background"], doc="one image set per prompt")
    seed = Param(Seed, 0, doc="seed of the first image; each further image adds 1")
    steps = Param(int, 25, min=1, max=1000, doc="denoising steps")
    width = Param(int, 512, min=8, max=4096, doc="image width (multiple of 8)")
    height = Param(int, 512, min=8, max=4096, doc="image height (multiple of 8)")
    images_per_prompt = Param(int, 1, min=1, max=64, doc="images per prompt")
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

        for problem in size_problems(self.width, self.height, self.sampler_class.size_multiple):
            c.error(problem, param=problem.split()[0])
        if self.lora and Path(self.lora).is_file():
            why = safetensors_problem(self.lora)
            if why:
                c.error(not_safe_message(Path(self.lora), why), param="lora")

    def run(self, ctx, model=None):
        if self.lora and model is None:  # read now: a bad file fails before training, not at its first preview
            from nodes.lora_check import read_lora_file

            read_lora_file(self.lora)
        sampler = self.sampler_class(**{name: getattr(self, name) for name in type(self).__node_spec__.params})
        paths = sampler.sample(ctx, model) if model is not None and ctx.is_main else []  # rank 0's previews
        return {"images": [str(p) for p in paths], "sampler": sampler}


class SampleParams(PromptParams):
    """Params of a sampler node with classifier-free guidance and a choice of DDPM schedulers (SD, SDXL)."""

    negative_prompt = Param(str, "", doc="what to steer away from (used when cfg > 1)")
    cfg = Param(float, 7.0, min=0, doc="classifier-free guidance scale (1 = off)")
    scheduler = Param(Choice(*SCHEDULERS), "dpmpp_2m", doc="sampling scheduler")
    clip_skip = Param(int, 0, min=0, max=12, doc="text-encoder layers to skip")
