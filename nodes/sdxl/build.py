"""Building SDXL models: the tiny random one from assets/tiny_sdxl, and real ones from disk."""

from __future__ import annotations

import json
from pathlib import Path

from runtime.paths import ASSETS_DIR

from nodes.diffusers_parts import files_fingerprint, fingerprint_of, quiet_libraries

from nodes.train.ddpm import training_scheduler

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


def save_diffusers(model: SDXLModel, folder: str | Path) -> Path:
    """Write ``model`` as a diffusers folder (what ``sdxl.load_model`` reads back), as sdxl.save_diffusers does."""
    from nodes.lora_fusion import part_state_dicts

    from .files import write_diffusers_folder

    quiet_libraries()
    return write_diffusers_folder(model, Path(folder), part_state_dicts(model, "keep"))


# -- loading from disk -------------------------------------------------------------

FOLDER_PARTS = ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")
WEIGHTED = ("unet", "vae", "text_encoder", "text_encoder_2")


def load_sdxl(path: str | Path, config: str | Path | None = None, dtypes: dict | None = None,
              prediction_type: str = "auto", zero_terminal_snr: bool = False) -> SDXLModel:
    """Load an SDXL model (SDXL base, Pony, Illustrious, NoobAI, ...) from a diffusers folder or a single-file
    ``.safetensors`` checkpoint in the original layout (``config``: a local diffusers SDXL folder, offline).

    Raises ``ValueError`` with a plain explanation when the path is not a usable model."""
    from nodes.diffusers_parts import torch_dtype

    path = Path(path)
    dtypes = {**{p: "float32" for p in WEIGHTED}, **(dtypes or {})}
    quiet_libraries()
    if not path.exists():
        raise FileNotFoundError(f"model not found: {path}")
    parts = _load_folder(path) if path.is_dir() else _load_single_file(path, config)
    for name in WEIGHTED:
        module = parts[name]
        module.to(torch_dtype(dtypes[name]))
        module.requires_grad_(False)
        module.eval()
    scheduler, pred = training_scheduler(parts["scheduler"], prediction_type, zero_terminal_snr)
    fp = fingerprint_of("load-sdxl", files_fingerprint(path), str(config or ""), dtypes, pred, zero_terminal_snr)
    return SDXLModel(parts["unet"], parts["vae"], parts["text_encoder"], parts["text_encoder_2"], parts["tokenizer"],
                     parts["tokenizer_2"], scheduler, prediction_type=pred, source=str(path.resolve()), dtypes=dtypes,
                     fingerprint=fp)


def _load_folder(path: Path) -> dict:
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from nodes.weights_check import check_loaded_part, first_line, missing_subfolders

    missing = missing_subfolders(path, FOLDER_PARTS)
    if missing:
        raise ValueError(f"{path} is not a diffusers SDXL folder: it has no {', '.join(missing)} sub-folder(s). "
                         "Give a diffusers folder or a single-file .safetensors checkpoint")
    classes = {"unet": UNet2DConditionModel, "vae": AutoencoderKL, "text_encoder": CLIPTextModel,
               "text_encoder_2": CLIPTextModelWithProjection}
    parts = {}
    for part, cls in classes.items():
        try:
            module, info = cls.from_pretrained(path, subfolder=part, local_files_only=True, output_loading_info=True)
        except (OSError, ValueError, RuntimeError) as e:
            raise ValueError(f"cannot load the {part} of {path}: {first_line(e)}") from e
        check_loaded_part(module, info, f"the {part} of {path} does not match {part}/config.json")
        parts[part] = module
    try:
        for part in ("tokenizer", "tokenizer_2"):
            parts[part] = CLIPTokenizer.from_pretrained(path, subfolder=part, local_files_only=True)
        parts["scheduler"] = EulerDiscreteScheduler.from_pretrained(path, subfolder="scheduler", local_files_only=True)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot load the diffusers folder {path}: {first_line(e)}") from e
    return parts


def _load_single_file(path: Path, config: str | Path | None) -> dict:
    from diffusers import StableDiffusionXLPipeline
    from safetensors import safe_open

    from nodes.weights_check import first_line, listed, meta_tensors, safetensors_problem

    if path.suffix.lower() != ".safetensors":
        raise ValueError(f"{path.name} is not a .safetensors file; only safetensors checkpoints are loaded "
                         "(pickled .ckpt/.pt files can run code, convert them first)")
    why = safetensors_problem(path)
    if why:
        raise ValueError(f"{path.name} is not a safetensors checkpoint: {why}")
    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
    if not any(k.startswith("conditioner.embedders.1.") for k in keys):
        raise ValueError(f"{path.name} is not an SDXL checkpoint (no 'conditioner.embedders.1.' weights: "
                         "an SD 1.x/2.x checkpoint goes to sd.load_model; a LoRA or embedding is not a model)")
    if not config:
        raise ValueError(f"{path.name} is a single-file checkpoint: set 'config' to a local diffusers SDXL folder "
                         "(configs and tokenizers, no weights needed), so loading works offline")
    try:
        pipe = StableDiffusionXLPipeline.from_single_file(str(path), config=str(config), local_files_only=True)
    except Exception as e:  # diffusers raises many kinds here
        raise ValueError(f"{path.name} is not an SDXL checkpoint matching the config {config}: "
                         f"{type(e).__name__}: {first_line(e)}") from e
    empty = {part: meta_tensors(getattr(pipe, part)) for part in WEIGHTED}
    if any(empty.values()):
        raise ValueError(f"{path.name} does not match the config {config}: weights missing from the file: "
                         + "; ".join(f"{part}: {listed(keys)}" for part, keys in empty.items() if keys))
    return {part: getattr(pipe, part) for part in (*WEIGHTED, "tokenizer", "tokenizer_2", "scheduler")}
