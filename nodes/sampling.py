"""Sampling pieces shared by the families' samplers: scheduler choices, seeds, PNGs with settings."""

from __future__ import annotations

import json
import re
from pathlib import Path

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
    if s["negative_prompt"]:
        text += f"\nNegative prompt: {s['negative_prompt']}"
    text += (f"\nSteps: {s['steps']}, Sampler: {A1111_NAMES[s['scheduler']]}, CFG scale: {s['cfg']}, "
             f"Seed: {s['seed']}, Size: {s['width']}x{s['height']}, Model: {s['model']}")
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
