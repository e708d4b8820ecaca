"""The SDXL single-file layout: diffusers' own from_single_file reads what nodes.ldm_layout writes."""

from __future__ import annotations

import torch


def test_from_single_file_loads_our_sdxl_layout_bit_exactly(tmp_path):
    from diffusers import StableDiffusionXLPipeline
    from safetensors.torch import save_file

    from nodes.ldm_layout import sdxl_state_dict
    from nodes.sdxl.build import TINY_DIR, build_tiny

    model = build_tiny(seed=0)
    state = sdxl_state_dict(model.unet.state_dict(), model.unet.config, model.vae.state_dict(), model.vae.config,
                            model.text_encoder.state_dict(), model.text_encoder_2.state_dict())
    assert any(k.startswith("model.diffusion_model.label_emb.0.0.") for k in state)  # SDXL's added embedding
    assert "conditioner.embedders.1.model.text_projection" in state
    assert any(k.startswith("conditioner.embedders.0.transformer.text_model.") for k in state)
    file = tmp_path / "tiny-sdxl.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(file))
    pipe = StableDiffusionXLPipeline.from_single_file(str(file), config=str(TINY_DIR), local_files_only=True)
    for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
        ours, theirs = getattr(model, part).state_dict(), getattr(pipe, part).state_dict()
        assert set(ours) == set(theirs), part
        different = [k for k in ours if not torch.equal(ours[k], theirs[k])]
        assert not different, (part, different[:5])
