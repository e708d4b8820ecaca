"""Building SDXL models: the tiny random one from assets/tiny_sdxl."""

from __future__ import annotations

import json

from runtime.paths import ASSETS_DIR

from nodes.diffusers_parts import fingerprint_of

from .model import SDXLModel

TINY_DIR = ASSETS_DIR / "tiny_sdxl"


def tiny_config(part: str) -> dict:
    """The config of one part of the tiny SDXL model, as diffusers / transformers take it."""
    path = TINY_DIR / part / ("scheduler_config.json" if part == "scheduler" else "config.json")
    config = json.loads(path.read_text(encoding="utf-8"))
    return {k: v for k, v in config.items() if k not in ("architectures", "model_type")}


def build_tiny(seed: int = 0, prediction_type: str = "epsilon") -> SDXLModel:
    """The built-in tiny SDXL model: random weights from small configs, deterministic in ``seed``."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from nodes.sd.build import quiet_libraries

    quiet_libraries()
    configs = {p: tiny_config(p) for p in ("unet", "vae", "text_encoder", "text_encoder_2", "scheduler")}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel.from_config(configs["unet"])
        vae = AutoencoderKL.from_config(configs["vae"])
        te1 = CLIPTextModel(CLIPTextConfig(**configs["text_encoder"]))
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(**configs["text_encoder_2"]))
    tok1 = CLIPTokenizer.from_pretrained(str(TINY_DIR / "tokenizer"))
    tok2 = CLIPTokenizer.from_pretrained(str(TINY_DIR / "tokenizer_2"))
    scheduler = DDPMScheduler.from_config({k: v for k, v in configs["scheduler"].items() if k != "_class_name"},
                                          prediction_type=prediction_type)
    for m in (unet, vae, te1, te2):
        m.requires_grad_(False)
        m.eval()
    fp = fingerprint_of("tiny-sdxl", seed, prediction_type, configs)
    return SDXLModel(unet, vae, te1, te2, tok1, tok2, scheduler, prediction_type=prediction_type,
                     source=f"tiny:sdxl:{prediction_type}:seed={seed}",
                     dtypes={p: "float32" for p in ("unet", "vae", "text_encoder", "text_encoder_2")}, fingerprint=fp)
