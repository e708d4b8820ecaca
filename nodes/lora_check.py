"""Checks on a LoRA file before diffusers loads it, and on a model's trained weights before sampling.

Shared by the diffusers families. A LoRA file must be safetensors (never unpickled), hold
finite numbers, and name layers of the model in the kohya (``lora_unet_*``, ...) or
diffusers/peft (``unet.*``, ...) format, with shapes that fit those layers. Without these
checks diffusers skips unknown keys silently and a NaN weight only shows as a black image
with a numpy warning. The adapter kinds diffusers cannot apply (LoHa, LoKr, OFT files, and DoRA's
``dora_scale``, which its kohya reader drops without a word) are refused by name
(``unsupported_kind``). A family gives its table of parts (``LoraPart``) and, where kohya's
names differ from the modules' names (SDXL's UNet), more names per layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any as _Any, Callable

from nodes.weights_check import MAX_LISTED, listed, safetensors_problem

#: key ending -> role; longest first so '.lora.down.weight' is not read as '.weight'
SUFFIXES = {".lora_down.weight": "down", ".lora_up.weight": "up", ".lora_A.weight": "down",
            ".lora_B.weight": "up", ".lora.down.weight": "down", ".lora.up.weight": "up", ".alpha": "alpha"}


@dataclass(frozen=True)
class LoraPart:
    """One adaptable part of a family's model, and the prefixes LoRA files give its layers."""

    #: the model's attribute (``unet``, ``text_encoder``, ``text_encoder_2``)
    attr: str
    #: kohya's prefix (``lora_unet_``, ``lora_te1_``); the module name follows with ``_`` for ``.``
    kohya: str
    #: diffusers' prefix (``unet.``); the peft module name follows
    diffusers: str
    #: a CLIP text encoder: files name its layers under ``text_model.``, which transformers 5 dropped
    #: from ``CLIPTextModel``
    clip_text: bool = False


def not_safe_message(path: Path, why: str) -> str:
    return (f"{path.name} is not a safe weights file (safetensors): {why}. Give a .safetensors LoRA "
            f"(kohya or diffusers format); pickled files are never loaded")


def read_lora_file(path: str | Path) -> dict:
    """The tensors of a LoRA file, checked to be safetensors and finite. Never unpickles."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LoRA file not found: {path}")
    why = safetensors_problem(path)
    if why:
        raise ValueError(not_safe_message(path, why))
    try:
        tensors = load_file(str(path))
    except Exception as e:  # safetensors' own checks beyond the header
        raise ValueError(not_safe_message(path, f"{type(e).__name__}: {e}")) from None
    if not tensors:
        raise ValueError(f"{path.name} holds no weights")
    check_finite(tensors.items(), f"the LoRA file {path.name}",
                 "the LoRA is broken (a diverged training?); use an earlier save", ValueError)
    return tensors


def check_finite(named, what: str, advice: str, error: type[Exception] = FloatingPointError,
                 noun: str = "tensors") -> None:
    """Raise naming a key when any floating-point tensor of ``named`` (name, tensor) holds NaN or inf."""
    import torch

    named = [(k, t) for k, t in named if t.is_floating_point()]
    if not named:
        return
    finite = torch.stack([torch.isfinite(t.detach()).all() for _, t in named]).cpu().tolist()
    bad = [k for (k, _), ok in zip(named, finite) if not ok]
    if bad:
        raise error(f"{what} holds NaN or infinite values in {len(bad)} of its {len(named)} {noun} "
                    f"({listed(bad)}): {advice}")


def check_model_weights(model) -> None:
    """The trained weights of ``model`` are finite (else its samples would be black)."""
    check_finite(model.named_trainable_parameters(), "the model",
                 "training has diverged; lower the learning rate, or train in bf16/fp32 instead of fp16",
                 noun="trained tensors")


# -- can this model place the file's keys? ------------------------------------------------

def is_adapter_child(name: str) -> bool:
    """peft's own sub-modules of an adapted layer (base_layer, lora_A.default, ...)."""
    return any(seg == "base_layer" or seg.startswith("lora_") for seg in name.split("."))


def base_layer(module):
    """The Linear or Conv2d a LoRA can adapt (under peft's wrapper, if any), else None."""
    import torch

    base = module.get_base_layer() if hasattr(module, "get_base_layer") else module
    return base if isinstance(base, (torch.nn.Linear, torch.nn.Conv2d)) else None


def adaptable_layers(module) -> dict[str, _Any]:
    """Module name -> Linear/Conv2d layer of ``module``, peft's wrappers seen through."""
    out = {}
    for name, child in module.named_modules():
        layer = base_layer(child) if name and not is_adapter_child(name) else None
        if layer is not None:
            out[name] = layer
    return out


def lora_layers(model, parts: tuple[LoraPart, ...],
                kohya_names: Callable[[LoraPart, str], list[str]] | None = None) -> dict[str, _Any]:
    """Every name a LoRA file may give a layer of ``model`` (kohya's and diffusers') -> the layer.
    ``kohya_names(part, module name)`` gives further dotted module names kohya files use for it."""
    out = {}
    for part in parts:
        module = getattr(model, part.attr, None)
        if module is None:
            continue
        for name, layer in adaptable_layers(module).items():
            full = f"text_model.{name}" if part.clip_text and not name.startswith("text_model.") else name
            for kohya in (full, *(kohya_names(part, name) if kohya_names else ())):
                out[part.kohya + kohya.replace(".", "_")] = layer
            out[part.diffusers + full] = layer
            out[part.diffusers + name] = layer
    return out


def split_key(key: str) -> tuple[str, str] | None:
    """``(module name, role)`` of a LoRA file's key (role: down, up or alpha), or None."""
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if key.endswith(suffix):
            return key[: -len(suffix)], SUFFIXES[suffix]
    return None


def _needed(layer, role: str, rank: int) -> tuple:
    import torch

    if isinstance(layer, torch.nn.Linear):
        return (rank, layer.in_features) if role == "down" else (layer.out_features, rank)
    if role == "down":
        return (rank, layer.in_channels, *layer.kernel_size)
    return (layer.out_channels, rank, 1, 1)


def unsupported_kind(tensors: dict, name: str) -> str | None:
    """Why a file's adapter kind cannot be applied for sampling through diffusers, or None (LoRA, LoCon).
    DoRA is refused in both formats: diffusers drops a kohya file's magnitudes, and a diffusers file's
    text-encoder magnitudes, without a word."""
    from nodes.adapter_formats import file_kind
    from nodes.lora_adapters import KIND_NAMES

    kind = file_kind(tensors)
    if kind == "lora":
        return None
    why = "drops DoRA magnitudes without a word" if kind == "dora" else f"cannot load {kind}"
    return (f"{name} is a {KIND_NAMES[kind]} file: the sampler applies LoRA and LoCon files (diffusers {why}); "
            f"sample the trained model itself, or load the file in ComfyUI, A1111 or Forge")


def check_fits(tensors: dict, layers: dict[str, _Any], name: str, family: str) -> None:
    """Raise unless every key of ``tensors`` is a LoRA weight of one of ``layers`` (file name -> layer,
    from ``lora_layers``), in its shape. ``family`` names the model in the message (``SD 1.x``)."""
    why = unsupported_kind(tensors, name)
    if why:
        raise ValueError(why)
    found: dict[str, dict[str, _Any]] = {}
    unknown = []
    for key, value in tensors.items():
        split = split_key(key)
        if split is None or split[0] not in layers:
            unknown.append(key)
            continue
        found.setdefault(split[0], {})[split[1]] = value
    if unknown:
        raise ValueError(f"{name}: {len(unknown)} of its {len(tensors)} weights are not LoRA weights this {family} "
                         f"model can place ({listed(unknown)}); is it for another model, or in a format other than "
                         f"kohya or diffusers LoRA?")
    wrong = []
    for module, parts in sorted(found.items()):
        if "down" not in parts or "up" not in parts:
            wrong.append(f"{module}: has no {'up' if 'down' in parts else 'down'} weight")
            continue
        rank = parts["down"].shape[0]
        for role in ("down", "up"):
            need = _needed(layers[module], role, rank)
            if tuple(parts[role].shape) != need:
                wrong.append(f"{module} {role}: file {list(parts[role].shape)}, the layer needs {list(need)}")
        if "alpha" in parts and parts["alpha"].numel() != 1:
            wrong.append(f"{module} alpha: {parts['alpha'].numel()} values, not one")
    if wrong:
        more = f" and {len(wrong) - MAX_LISTED} more" if len(wrong) > MAX_LISTED else ""
        problems = f"{len(wrong)} problem{'s' if len(wrong) > 1 else ''}"
        raise ValueError(f"{name} does not fit this model ({problems}: {'; '.join(wrong[:MAX_LISTED])}{more}); "
                         f"was it trained for another base model?")
