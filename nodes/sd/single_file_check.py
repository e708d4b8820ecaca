"""Does an SD 1.x/2.x single-file checkpoint fit a diffusers config? Per part, the keys it lacks or holds
in another shape (read from the file's header, models built on the meta device)."""

from __future__ import annotations

from pathlib import Path

from nodes.weights_check import Mismatch, compare, header_shapes, on_meta, part_from_config

#: part -> key prefix of its weights in an SD 1.x/2.x single-file checkpoint
SINGLE_FILE_PARTS = {"unet": "model.diffusion_model.", "vae": "first_stage_model.",
                     "text_encoder": "cond_stage_model."}


def single_file_mismatch(path: Path, config: Path) -> dict[str, Mismatch]:
    """Per part, the weights the config's models need that ``path`` lacks or holds in another shape
    (in the checkpoint's own key names). Extra keys are not reported: real checkpoints carry EMA
    copies, noise-schedule buffers and OpenCLIP's unused last layer, which loaders ignore."""
    from nodes.ldm_layout import ldm_state_dict
    from .model import detect_version

    try:
        unet, vae, te = (on_meta(lambda p=p: part_from_config(Path(config) / p, p))
                         for p in ("unet", "vae", "text_encoder"))
        layout = ldm_state_dict(unet.state_dict(), unet.config, vae.state_dict(), vae.config,
                                te.state_dict(), detect_version(unet))
        found = header_shapes([path])
    except Exception:  # a layout we cannot derive: the library's own error is reported instead
        return {}
    found = {_sd1_text_key(k): v for k, v in found.items()}
    expected = {k: tuple(v.shape) for k, v in layout.items()}
    out = {}
    for part, prefix in SINGLE_FILE_PARTS.items():
        mine = {k: v for k, v in expected.items() if k.startswith(prefix)}
        theirs = {k: v for k, v in found.items() if k.startswith(prefix)}
        problem = compare(mine, theirs, squeeze=True)
        problem.unexpected = []
        if problem:
            out[part] = problem
    return out


def _sd1_text_key(key: str) -> str:
    """Early SD 1.x checkpoints name the CLIP weights without the ``text_model.`` level."""
    old = "cond_stage_model.transformer."
    if key.startswith(old) and not key.startswith(old + "text_model."):
        return old + "text_model." + key[len(old):]
    return key


def describe_parts(problems: dict[str, Mismatch]) -> str:
    return "; ".join(f"{part} weights: {m.describe()}" for part, m in problems.items())
