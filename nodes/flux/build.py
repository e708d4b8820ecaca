"""Building Flux models: the tiny random one from assets/tiny_flux, and real ones from disk (diffusers
folders, or a single-file transformer in the original BFL layout with a local diffusers folder for the rest)."""

from __future__ import annotations

import json
from pathlib import Path

from runtime.paths import ASSETS_DIR

from nodes.diffusers_parts import files_fingerprint, fingerprint_of, quiet_libraries

from .model import VARIANTS, FluxModel

TINY_DIR = ASSETS_DIR / "tiny_flux"
FOLDER_PARTS = ("transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")
WEIGHTED = ("transformer", "vae", "text_encoder", "text_encoder_2")
#: what FLUX.1-schnell's scheduler differs in from dev's: no resolution-dependent shift, no shift
SCHNELL_SCHEDULE = {"use_dynamic_shifting": False, "shift": 1.0}


def tiny_config(part: str) -> dict:
    """The config of one part of the tiny Flux model, as diffusers / transformers take it."""
    path = TINY_DIR / part / ("scheduler_config.json" if part == "scheduler" else "config.json")
    config = json.loads(path.read_text(encoding="utf-8"))
    return {k: v for k, v in config.items() if k not in ("architectures", "model_type")}


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown Flux variant {variant!r}: choose one of {', '.join(VARIANTS)}")


def build_tiny(seed: int = 0, variant: str = "dev", guidance: float = 1.0) -> FluxModel:
    """The built-in tiny Flux model: random weights from small configs, deterministic in ``seed``.
    ``variant`` dev has the guidance embedding and dev's dynamic-shift schedule; schnell has neither."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel, T5TokenizerFast

    _check_variant(variant)
    quiet_libraries()
    configs = {p: tiny_config(p) for p in ("transformer", "vae", "text_encoder", "text_encoder_2", "scheduler")}
    configs["transformer"]["guidance_embeds"] = variant == "dev"
    if variant == "schnell":
        configs["scheduler"].update(SCHNELL_SCHEDULE)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = FluxTransformer2DModel.from_config(configs["transformer"])
        vae = AutoencoderKL.from_config(configs["vae"])
        te1 = CLIPTextModel(CLIPTextConfig(**configs["text_encoder"]))
        te2 = T5EncoderModel(T5Config(**configs["text_encoder_2"]))
    tok1 = CLIPTokenizer.from_pretrained(str(TINY_DIR / "tokenizer"))
    tok2 = T5TokenizerFast.from_pretrained(str(TINY_DIR / "tokenizer_2"))
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(configs["scheduler"])
    for m in (transformer, vae, te1, te2):
        m.requires_grad_(False)
        m.eval()
    fp = fingerprint_of("tiny-flux", seed, variant, configs)
    return FluxModel(transformer, vae, te1, te2, tok1, tok2, scheduler, variant=variant, guidance=float(guidance),
                     source=f"tiny:flux:{variant}:seed={seed}", dtypes={p: "float32" for p in WEIGHTED},
                     fingerprint=fp)


# -- diffusers folders -------------------------------------------------------------

def write_diffusers_folder(model: FluxModel, folder: Path, state_dicts: dict[str, dict],
                           metadata: dict[str, str] | None = None) -> Path:
    """A diffusers FluxPipeline folder that ``FluxPipeline.from_pretrained`` (and ``flux.load_model``) loads,
    with ``state_dicts`` (part -> plain weights) as the weights."""
    from diffusers import FluxPipeline

    from nodes.pipeline_folder import write_pipeline_folder
    from nodes.placeholder_tokens import plain_tokenizer

    tokenizers = {"tokenizer": plain_tokenizer(model.tokenizer), "tokenizer_2": plain_tokenizer(model.tokenizer_2)}
    pipe = FluxPipeline(scheduler=model.noise_scheduler, vae=model.vae, text_encoder=model.text_encoder,
                        tokenizer=tokenizers["tokenizer"], text_encoder_2=model.text_encoder_2,
                        tokenizer_2=tokenizers["tokenizer_2"], transformer=model.transformer)
    return write_pipeline_folder(Path(folder), pipe, state_dicts, tokenizers, model.noise_scheduler, metadata or {})


def save_diffusers(model: FluxModel, folder: str | Path) -> Path:
    """Write ``model`` as a diffusers FluxPipeline folder (what ``flux.load_model`` reads back)."""
    from nodes.lora_fusion import part_state_dicts

    quiet_libraries()
    return write_diffusers_folder(model, Path(folder), part_state_dicts(model, "keep"))


# -- loading from disk -------------------------------------------------------------

def load_flux(path: str | Path, config: str | Path | None = None, dtypes: dict | None = None,
              guidance: float = 1.0) -> FluxModel:
    """Load a FLUX.1 model from a diffusers folder, or from a single-file transformer ``.safetensors`` (BFL or
    diffusers layout) with ``config``, a local diffusers Flux folder, for the other parts (offline).
    ``dtypes``: part -> float32 / float16 / bfloat16 (default float32). dev or schnell is read from the weights.

    Raises ``ValueError`` with a plain explanation when the path is not a usable model."""
    path = Path(path)
    dtypes = {**{p: "float32" for p in WEIGHTED}, **(dtypes or {})}
    quiet_libraries()
    if not path.exists():
        raise FileNotFoundError(f"model not found: {path}")
    if path.is_dir():
        parts = _load_folder(path, dtypes)
    else:
        if not config:
            raise ValueError(f"{path.name} is a single-file transformer: set 'config' to a local diffusers Flux "
                             "folder (VAE, text encoders, tokenizers, scheduler and configs), so loading works offline")
        transformer = _load_single_file(path, Path(config), dtypes["transformer"])
        parts = {**_load_folder(Path(config), dtypes, skip=("transformer",)), "transformer": transformer}
    for name in WEIGHTED:
        parts[name].requires_grad_(False)
        parts[name].eval()
    transformer = parts["transformer"]
    variant = "dev" if transformer.config.guidance_embeds else "schnell"
    fp = fingerprint_of("load-flux", files_fingerprint(path), str(config or ""), dtypes)
    return FluxModel(transformer, parts["vae"], parts["text_encoder"], parts["text_encoder_2"], parts["tokenizer"],
                     parts["tokenizer_2"], parts["scheduler"], variant=variant, guidance=float(guidance),
                     source=str(path.resolve()), dtypes=dtypes, fingerprint=fp)


def _part_classes() -> dict:
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5EncoderModel

    return {"transformer": FluxTransformer2DModel, "vae": AutoencoderKL, "text_encoder": CLIPTextModel,
            "text_encoder_2": T5EncoderModel}


def _load_folder(path: Path, dtypes: dict, skip: tuple[str, ...] = ()) -> dict:
    """The parts of a diffusers Flux folder (all but ``skip``), each checked against its config."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from transformers import AutoTokenizer, CLIPTokenizer

    from nodes.diffusers_parts import torch_dtype
    from nodes.weights_check import check_loaded_part, first_line, missing_subfolders

    missing = missing_subfolders(path, FOLDER_PARTS)
    if missing:
        raise ValueError(f"{path} is not a diffusers Flux folder: it has no {', '.join(missing)} sub-folder(s). "
                         "Give a diffusers FLUX.1 folder, or a transformer .safetensors with 'config'")
    parts = {}
    for part, cls in _part_classes().items():
        if part in skip:
            continue
        dtype_arg = "torch_dtype" if part in ("transformer", "vae") else "dtype"  # diffusers / transformers 5
        try:
            module, info = cls.from_pretrained(path, subfolder=part, local_files_only=True, output_loading_info=True,
                                               **{dtype_arg: torch_dtype(dtypes[part])})
        except (OSError, ValueError, RuntimeError) as e:
            hint = " (a single file holds the transformer only: the config folder needs the weights of the other " \
                   "parts)" if skip else ""
            raise ValueError(f"cannot load the {part} of {path}: {first_line(e)}{hint}") from e
        check_loaded_part(module, info, f"the {part} of {path} does not match {part}/config.json")
        parts[part] = module.to(torch_dtype(dtypes[part]))
    try:
        parts["tokenizer"] = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", local_files_only=True)
        parts["tokenizer_2"] = AutoTokenizer.from_pretrained(path, subfolder="tokenizer_2", local_files_only=True)
        parts["scheduler"] = FlowMatchEulerDiscreteScheduler.from_pretrained(path, subfolder="scheduler",
                                                                             local_files_only=True)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot load the diffusers folder {path}: {first_line(e)}") from e
    return parts


def _read_transformer_file(path: Path) -> dict:
    """The transformer tensors of ``path`` in diffusers' names (a BFL-layout file is converted)."""
    from safetensors import safe_open

    from nodes.weights_check import safetensors_problem

    from .bfl_layout import PREFIX, bfl_to_diffusers, is_bfl

    if path.suffix.lower() != ".safetensors":
        raise ValueError(f"{path.name} is not a .safetensors file; only safetensors files are loaded "
                         "(pickled .ckpt/.pt files can run code, convert them first)")
    why = safetensors_problem(path)
    if why:
        raise ValueError(f"{path.name} is not a safetensors file: {why}")
    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
        bfl = is_bfl(keys)
        if not bfl and "transformer_blocks.0.attn.norm_k.weight" not in keys:
            raise ValueError(f"{path.name} is not a FLUX.1 transformer (neither BFL names like "
                             "'double_blocks.0.img_attn.qkv' nor diffusers names like 'transformer_blocks.0.attn.to_q'"
                             "; a LoRA, a VAE or another model's checkpoint is not one)")
        prefixed = bfl and any(k.startswith(PREFIX) for k in keys)
        tensors = {k: f.get_tensor(k) for k in keys if not prefixed or k.startswith(PREFIX)}
    if not bfl:
        return tensors
    try:
        return bfl_to_diffusers(tensors)
    except ValueError as e:
        raise ValueError(f"{path.name}: {e}") from e


def _load_single_file(path: Path, config: Path, dtype_name: str):
    """The transformer of a single file, built from ``config``'s transformer config (with the guidance
    embedding when the file has one) and checked against it."""
    import torch
    from diffusers import FluxTransformer2DModel

    from nodes.diffusers_parts import torch_dtype
    from nodes.weights_check import compare, first_line, missing_subfolders, on_meta

    missing = missing_subfolders(config, FOLDER_PARTS)
    if missing:
        raise ValueError(f"the config {config} is not a diffusers Flux folder: it has no {', '.join(missing)} "
                         "sub-folder(s)")
    tensors = _read_transformer_file(path)
    try:
        cfg = dict(FluxTransformer2DModel.load_config(str(config / "transformer")))
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read the transformer config of {config}: {first_line(e)}") from e
    cfg["guidance_embeds"] = "time_text_embed.guidance_embedder.linear_1.weight" in tensors  # dev or schnell
    model = on_meta(lambda: FluxTransformer2DModel.from_config(cfg))
    problem = compare({k: tuple(v.shape) for k, v in model.state_dict().items()},
                      {k: tuple(v.shape) for k, v in tensors.items()})
    if problem:
        raise ValueError(f"{path.name} does not match the transformer config of {config}: {problem.describe()}")
    dtype = torch_dtype(dtype_name)
    model.load_state_dict({k: v.to(dtype) for k, v in tensors.items()}, strict=True, assign=True)
    with torch.no_grad():  # buffers not in the file (none today) would still be on meta: fail loudly
        leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:
        raise ValueError(f"{path.name}: the transformer has weights the file does not hold: {leftover[:5]}")
    return model
