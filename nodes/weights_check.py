"""Do a model's weight files fit its configs? Errors that name the part and the keys.

diffusers and transformers load a file whose weights do not fit the config with only
a warning (a missing tensor stays on the ``meta`` device and fails much later with
"Cannot copy out of meta tensor"), or fail on the first mis-shaped key with a long
message. So a load that reports missing or unexpected keys, or leaves tensors on
``meta``, fails at once; and when a library refuses a file, the weights the config
expects (the model built on the ``meta`` device, no memory) are compared with the
shapes in the files' headers (no tensor is read) to list every difference, a bounded
number per kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from runtime import errors

#: keys listed per kind of problem; the rest are counted
MAX_LISTED = 5


def listed(keys, limit: int = MAX_LISTED) -> str:
    """``a, b, c and 4 more``: a bounded, sorted listing."""
    keys = sorted(str(k) for k in keys)
    text = ", ".join(keys[:limit])
    return text + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


@dataclass
class Mismatch:
    """What differs between the weights a model expects and those a file holds."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    #: (key, shape in the file, shape the config wants)
    shapes: list[tuple[str, tuple, tuple]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.shapes)

    def describe(self) -> str:
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing ({listed(self.missing)})")
        if self.shapes:
            shown = sorted(self.shapes)[:MAX_LISTED]
            text = ", ".join(f"{k}: file {list(a)}, config {list(b)}" for k, a, b in shown)
            more = len(self.shapes) - len(shown)
            parts.append(f"{len(self.shapes)} of the wrong shape ({text}{f' and {more} more' if more else ''})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected ({listed(self.unexpected)})")
        return "; ".join(parts)


def _same_shape(a: tuple, b: tuple, squeeze: bool) -> bool:
    if squeeze:  # 1x1 convolutions and linear layers hold the same matrix
        return tuple(d for d in a if d != 1) == tuple(d for d in b if d != 1)
    return tuple(a) == tuple(b)


def compare(expected: dict[str, tuple], found: dict[str, tuple], squeeze: bool = False) -> Mismatch:
    """Keys of ``expected`` not in ``found``, the reverse, and keys in both with other shapes."""
    return Mismatch(
        missing=[k for k in expected if k not in found],
        unexpected=[k for k in found if k not in expected],
        shapes=[(k, tuple(found[k]), tuple(v)) for k, v in expected.items()
                if k in found and not _same_shape(found[k], v, squeeze)])


def header_shapes(files: list[Path]) -> dict[str, tuple]:
    """Tensor name -> shape, read from the safetensors headers of ``files`` (no tensor data is read)."""
    from safetensors import safe_open

    out: dict[str, tuple] = {}
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                out[key] = tuple(f.get_slice(key).get_shape())
    return out


def shapes_of(module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def meta_tensors(module) -> list[str]:
    """Names of parameters and buffers of ``module`` that hold no data (never loaded)."""
    named = list(module.named_parameters()) + list(module.named_buffers())
    return [name for name, t in named if t.is_meta]


def on_meta(build):
    """``build()`` with every tensor on the meta device: the model's layout, no memory."""
    import torch

    with torch.device("meta"):
        return build()


def first_line(error: BaseException, limit: int = 300) -> str:
    """A library error as one short line, without diffusers' advice to load random weights instead."""
    text = errors.first_line(error, limit)
    cut = text.find(" If you want to")
    return text[:cut] if cut > 0 else text


# -- diffusers folders ----------------------------------------------------------------

def weight_files(folder: Path) -> list[Path]:
    """The safetensors files a diffusers/transformers sub-folder loads (sharded or not); [] if none."""
    import json

    for index in sorted(folder.glob("*.safetensors.index.json")):
        if ".fp16." in index.name:
            continue
        try:
            names = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError):
            return []
        return [folder / n for n in names if (folder / n).is_file()]
    for name in ("diffusion_pytorch_model.safetensors", "model.safetensors"):
        if (folder / name).is_file():
            return [folder / name]
    return []


def strip_text_model(found: dict[str, tuple], expected: dict[str, tuple]) -> dict[str, tuple]:
    """CLIP keys as the installed transformers names them: with or without the ``text_model.`` level
    (transformers 4 files, and what we write, have it; transformers 5 modules do not)."""
    want_prefix = any(k.startswith("text_model.") for k in expected)
    if want_prefix:
        return {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in found.items()}
    return {k.removeprefix("text_model."): v for k, v in found.items()}


def folder_part_mismatch(folder: Path, part: str) -> Mismatch | None:
    """How ``folder/part``'s safetensors weights differ from its config; None when it cannot tell
    (no safetensors file, unreadable config)."""
    sub = folder / part
    files = weight_files(sub)
    if not files:
        return None
    try:
        expected = shapes_of(on_meta(lambda: part_from_config(sub, part)))
        found = header_shapes(files)
    except Exception:  # an unreadable config or header: the library's own error is reported instead
        return None
    if part.startswith("text_encoder"):
        found = strip_text_model(found, expected)
        found = {k: v for k, v in found.items() if not k.endswith("embeddings.position_ids")}
    return compare(expected, found)


def part_from_config(sub: Path, part: str):
    """A diffusers/transformers part built from the config in ``sub`` (random weights; use ``on_meta``)."""
    if part.startswith("text_encoder"):  # CLIP-L, or CLIP-G with its pooled projection (SDXL's second)
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

        config = CLIPTextConfig.from_pretrained(str(sub))
        projected = "CLIPTextModelWithProjection" in (config.architectures or ())
        return (CLIPTextModelWithProjection if projected else CLIPTextModel)(config)
    from diffusers import AutoencoderKL, UNet2DConditionModel

    cls = {"unet": UNet2DConditionModel, "vae": AutoencoderKL}[part]
    return cls.from_config(cls.load_config(str(sub)))


def check_loaded_part(module, info: dict, where: str) -> None:
    """Raise if a library load reported missing or unexpected keys, or left tensors without data.
    (Mis-shaped keys make the libraries raise: ``folder_part_mismatch`` explains those.)"""
    problem = Mismatch(missing=sorted(set(info.get("missing_keys") or ()) | set(meta_tensors(module))),
                       unexpected=sorted(info.get("unexpected_keys") or ()))
    if problem:
        raise ValueError(f"{where}: {problem.describe()}")


# -- before the run: is the path a model at all? --------------------------------------------

def missing_subfolders(path: Path, parts) -> list[str]:
    """The sub-folders ``parts`` of a diffusers pipeline folder that ``path`` lacks (no torch)."""
    return [p for p in parts if not (path / p).is_dir()]


def check_model_source(c, path: str, config: str | None, parts, what: str) -> None:
    """A loader node's check: a single file needs ``config``, and folders (``path``, ``config``) have the
    diffusers sub-folders ``parts`` of ``what`` (e.g. 'SDXL'). ``c`` is the node's check context."""
    path_ = Path(path)
    if path_.is_file() and not config:
        c.error(f"{path_.name} is a single-file checkpoint: set 'config' to a local diffusers {what} folder "
                "(configs and tokenizers, no weights needed), so loading works offline", param="config")
    for param, folder in (("path", path_), ("config", Path(config) if config else None)):
        missing = missing_subfolders(folder, parts) if folder is not None and folder.is_dir() else []
        if missing:
            c.error(f"{folder} is not a diffusers {what} folder: it has no {', '.join(missing)} sub-folder(s)",
                    param=param)


# -- is it a safetensors file at all? ----------------------------------------------------

#: safetensors refuses headers above 100 MB; so do we, before reading one
MAX_HEADER = 100_000_000


def safetensors_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a complete safetensors file (a pickle, truncated, text), or None.

    Reads the header only, with no torch import: node checks at validation use it.
    """
    import json

    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(9)
            length = int.from_bytes(head[:8], "little")
            # a safetensors header's length may begin with the bytes a pickle does (0x80, "PK"): only a
            # length that cannot be, or a header that does not open a JSON object, makes it a pickle
            plausible = len(head) == 9 and 2 <= length <= MAX_HEADER and 8 + length <= size and head[8:] == b"{"
            if not plausible and (head[:2] == b"PK" or head[:1] == b"\x80"):
                return "it is a pickle (torch.save's .pt/.ckpt/.bin format), which can run code when loaded"
            if len(head) < 8:
                return f"it has only {size} bytes"
            if length < 2 or length > MAX_HEADER or 8 + length > size:
                return "it is truncated or is not safetensors data"
            f.seek(8)
            header = json.loads(f.read(length))
    except OSError as e:
        return f"it cannot be read ({e.strerror or e})"
    except ValueError:
        return "its header is not valid safetensors JSON"
    if not isinstance(header, dict):
        return "its header is not valid safetensors JSON"
    try:
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (TypeError, KeyError, IndexError, ValueError):
        return "its header is damaged"
    if 8 + length + end > size:
        return f"it is truncated: the header lists {8 + length + end} bytes, the file has {size}"
    return None
