"""Test helper: write an SD model as an original (LDM) single-file checkpoint, any depth.

For tests of the single-file loader; the key layout lives in nodes/ldm_layout.py
(the one sd.save_checkpoint writes). Weights are written as they are in memory.
"""

from __future__ import annotations

from pathlib import Path


def export_single_file(model, path: Path) -> Path:
    from safetensors.torch import save_file

    from nodes.ldm_layout import ldm_state_dict

    tensors = ldm_state_dict(model.unet.state_dict(), model.unet.config, model.vae.state_dict(), model.vae.config,
                             model.text_encoder.state_dict(), model.version)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return Path(path)
