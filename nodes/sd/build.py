"""Building SD models: the tiny random one from assets/tiny_model, and real ones from disk."""

from __future__ import annotations

import json
from pathlib import Path

from runtime.paths import ASSETS_DIR

from nodes.diffusers_parts import files_fingerprint, fingerprint_of, quiet_libraries, torch_dtype
from nodes.weights_check import (check_loaded_part, first_line, folder_part_mismatch, listed, meta_tensors,
                                 missing_subfolders, safetensors_problem)

from nodes.train.ddpm import training_scheduler

from .model import SDModel, detect_version
from .single_file_check import SINGLE_FILE_PARTS, describe_parts, single_file_mismatch

TINY_DIR = ASSETS_DIR / "tiny_model"
DTYPES = ("float32", "float16", "bfloat16")


def tiny_config(part: str) -> dict:
    path = TINY_DIR / part / ("scheduler_config.json" if part == "scheduler" else "config.json")
    return json.loads(path.read_text(encoding="utf-8"))


def build_tiny(seed: int = 0, version: str = "sd1", prediction_type: str = "epsilon") -> SDModel:
    """The built-in tiny SD model: random weights from small configs, deterministic in ``seed``."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    quiet_libraries()
    unet_cfg = tiny_config("unet")
    if version == "sd2":
        unet_cfg["use_linear_projection"] = True
    vae_cfg = tiny_config("vae")
    te_cfg = {k: v for k, v in tiny_config("text_encoder").items() if k not in ("architectures", "model_type")}
    if version == "sd2":
        te_cfg["hidden_act"] = "gelu"
    sched_cfg = tiny_config("scheduler")
    sched_cfg["prediction_type"] = prediction_type
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel.from_config(unet_cfg)
        vae = AutoencoderKL.from_config(vae_cfg)
        text_encoder = CLIPTextModel(CLIPTextConfig(**te_cfg))
    tokenizer = CLIPTokenizer.from_pretrained(str(TINY_DIR / "tokenizer"))
    scheduler = DDPMScheduler.from_config(sched_cfg)
    for m in (unet, vae, text_encoder):
        m.requires_grad_(False)
        m.eval()
    fp = fingerprint_of("tiny", seed, version, prediction_type, unet_cfg, vae_cfg, te_cfg)
    return SDModel(unet, vae, text_encoder, tokenizer, scheduler, prediction_type=prediction_type,
                   version=version, source=f"tiny:{version}:{prediction_type}:seed={seed}",
                   dtypes={"unet": "float32", "vae": "float32", "text_encoder": "float32"}, fingerprint=fp)


def save_diffusers(model: SDModel, folder: str | Path) -> Path:
    """Write ``model`` as a diffusers folder (what ``sd.load_model`` reads back), as sd.save_diffusers does."""
    from nodes.lora_fusion import part_state_dicts
    from .full_model import write_diffusers_folder

    quiet_libraries()
    return write_diffusers_folder(model, Path(folder), part_state_dicts(model, "keep"))


# -- loading from disk -------------------------------------------------------------

def load_sd(path: str | Path, config: str | Path | None = None, dtypes: dict | None = None,
            prediction_type: str = "auto") -> SDModel:
    """Load an SD 1.x/2.x model from a diffusers folder or a single-file ``.safetensors`` checkpoint.

    Raises ``ValueError`` with a plain explanation when the path is not a usable model.
    """
    path = Path(path)
    dtypes = {"unet": "float32", "vae": "float32", "text_encoder": "float32", **(dtypes or {})}
    quiet_libraries()
    if not path.exists():
        raise FileNotFoundError(f"model not found: {path}")
    if path.is_dir():
        parts = _load_folder(path)
    else:
        parts = _load_single_file(path, config)
    unet, vae, text_encoder, tokenizer, scheduler = parts
    for name, module in (("unet", unet), ("vae", vae), ("text_encoder", text_encoder)):
        module.to(torch_dtype(dtypes[name]))
        module.requires_grad_(False)
        module.eval()
    scheduler, pred = training_scheduler(scheduler, prediction_type)
    fp = fingerprint_of("load", files_fingerprint(path), str(config or ""), dtypes)
    return SDModel(unet, vae, text_encoder, tokenizer, scheduler, prediction_type=pred,
                   version=detect_version(unet), source=str(path.resolve()), dtypes=dtypes, fingerprint=fp)


FOLDER_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def _load_folder(path: Path):
    from diffusers import DDPMScheduler
    from transformers import CLIPTokenizer

    missing = missing_subfolders(path, FOLDER_PARTS)
    if missing:
        raise ValueError(f"{path} is not a diffusers Stable Diffusion folder: it has no {', '.join(missing)} "
                         f"sub-folder(s). Give a diffusers folder or a single-file .safetensors checkpoint")
    unet, vae, text_encoder = (_load_folder_part(path, part) for part in ("unet", "vae", "text_encoder"))
    try:
        tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", local_files_only=True)
        scheduler = DDPMScheduler.from_pretrained(path, subfolder="scheduler", local_files_only=True)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot load the diffusers folder {path}: {first_line(e)}") from e
    return unet, vae, text_encoder, tokenizer, scheduler


def _load_folder_part(path: Path, part: str):
    """One weighted part, checked: every weight its config expects is in the files, in its shape,
    and nothing else is (a mismatch fails here, naming the keys, not steps later)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    cls = {"unet": UNet2DConditionModel, "vae": AutoencoderKL, "text_encoder": CLIPTextModel}[part]
    where = f"the {part} of {path} does not match {part}/config.json"
    try:
        module, info = cls.from_pretrained(path, subfolder=part, local_files_only=True, output_loading_info=True)
    except (OSError, ValueError, RuntimeError) as e:
        problem = folder_part_mismatch(path, part)
        if problem:
            raise ValueError(f"{where}: {problem.describe()}") from None
        raise ValueError(f"cannot load the {part} of {path}: {first_line(e)}") from e
    check_loaded_part(module, info, where)
    return module


def _load_single_file(path: Path, config: str | Path | None):
    from diffusers import StableDiffusionPipeline

    if path.suffix.lower() != ".safetensors":
        raise ValueError(f"{path.name} is not a .safetensors file; only safetensors checkpoints are loaded "
                         f"(pickled .ckpt/.pt files can run code, convert them first)")
    _check_safetensors(path)
    if not config:
        raise ValueError(f"{path.name} is a single-file checkpoint: set 'config' to a local diffusers folder of "
                         f"the same model (configs and tokenizer, no weights needed), so loading works offline")
    try:
        pipe = StableDiffusionPipeline.from_single_file(str(path), config=str(config), local_files_only=True,
                                                        safety_checker=None, requires_safety_checker=False)
    except Exception as e:  # diffusers raises many kinds here
        _raise_single_file_mismatch(path, config)
        raise ValueError(f"{path.name} is not a Stable Diffusion 1.x/2.x checkpoint matching the config "
                         f"{config}: {type(e).__name__}: {first_line(e)}") from e
    if any(meta_tensors(getattr(pipe, part)) for part in SINGLE_FILE_PARTS):
        _raise_single_file_mismatch(path, config)
        empty = {part: meta_tensors(getattr(pipe, part)) for part in SINGLE_FILE_PARTS}
        raise ValueError(f"{path.name} does not match the config {config}: weights missing from the file: "
                         + "; ".join(f"{part}: {listed(keys)}" for part, keys in empty.items() if keys))
    return pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.scheduler


def _raise_single_file_mismatch(path: Path, config) -> None:
    problems = single_file_mismatch(path, Path(config))
    if problems:
        raise ValueError(f"{path.name} does not match the config {config}: {describe_parts(problems)}") from None


def _check_safetensors(path: Path) -> None:
    from safetensors import safe_open

    why = safetensors_problem(path)
    if why:
        raise ValueError(f"{path.name} is not a safetensors checkpoint: {why}")
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
    except Exception as e:
        raise ValueError(f"{path.name} is not a safetensors checkpoint ({type(e).__name__}: {e})") from e
    if not any(k.startswith("model.diffusion_model.") for k in keys):
        raise ValueError(f"{path.name} is a safetensors file but not a Stable Diffusion checkpoint "
                         f"(no 'model.diffusion_model.' weights; is it a LoRA or an embedding?)")
