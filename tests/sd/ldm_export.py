"""Test helper: write an SD model as an original (LDM) single-file checkpoint, any depth.

Only for tests of the single-file loader: it follows the original Stable
Diffusion key layout (``model.diffusion_model.``, ``first_stage_model.``,
``cond_stage_model.transformer.text_model.``), indexed by the config's number
of levels and layers per block.
"""

from __future__ import annotations

from pathlib import Path

RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0",
          "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _unet_map(cfg) -> dict[str, str]:
    """diffusers module prefix -> LDM module prefix."""
    lpb, levels = cfg.layers_per_block, len(cfg.block_out_channels)
    m = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
         "time_embedding.linear_2": "time_embed.2", "conv_norm_out": "out.0", "conv_out": "out.2",
         "mid_block.resnets.0": "middle_block.0", "mid_block.attentions.0": "middle_block.1",
         "mid_block.resnets.1": "middle_block.2"}
    for i in range(levels):
        for j in range(lpb):
            n = 1 + i * (lpb + 1) + j
            m[f"down_blocks.{i}.resnets.{j}"] = f"input_blocks.{n}.0"
            m[f"down_blocks.{i}.attentions.{j}"] = f"input_blocks.{n}.1"
        if i < levels - 1:
            m[f"down_blocks.{i}.downsamplers.0.conv"] = f"input_blocks.{(i + 1) * (lpb + 1)}.0.op"
        has_attn = "CrossAttn" in cfg.up_block_types[i]
        for j in range(lpb + 1):
            n = i * (lpb + 1) + j
            m[f"up_blocks.{i}.resnets.{j}"] = f"output_blocks.{n}.0"
            m[f"up_blocks.{i}.attentions.{j}"] = f"output_blocks.{n}.1"
        if i < levels - 1:
            m[f"up_blocks.{i}.upsamplers.0.conv"] = f"output_blocks.{i * (lpb + 1) + lpb}.{2 if has_attn else 1}.conv"
    return m


def unet_to_ldm(unet) -> dict:
    mapping = _unet_map(unet.config)
    prefixes = sorted(mapping, key=len, reverse=True)
    out = {}
    for k, v in unet.state_dict().items():
        pre = next(p for p in prefixes if k.startswith(p + "."))
        tail = k[len(pre) + 1:]
        if ".resnets." in pre + ".":
            for a, b in RESNET.items():
                if tail.startswith(a + "."):
                    tail = b + tail[len(a):]
                    break
        out[f"model.diffusion_model.{mapping[pre]}.{tail}"] = v
    return out


def vae_to_ldm(vae) -> dict:
    levels = len(vae.config.block_out_channels)
    out = {}
    for k, v in vae.state_dict().items():
        new = k
        for side in ("encoder", "decoder"):
            if not k.startswith(side + "."):
                continue
            rest = k[len(side) + 1:]
            rest = rest.replace("mid_block.resnets.0.", "mid.block_1.").replace("mid_block.resnets.1.", "mid.block_2.")
            if rest.startswith("mid_block.attentions.0."):
                tail = rest[len("mid_block.attentions.0."):]
                for a, b in VAE_ATTN.items():
                    if tail.startswith(a + "."):
                        tail = b + tail[len(a):]
                if tail.split(".")[0] in ("q", "k", "v", "proj_out") and tail.endswith("weight"):
                    v = v[:, :, None, None]
                rest = "mid.attn_1." + tail
            for i in range(levels):
                ldm_i = i if side == "encoder" else levels - 1 - i
                blocks = "down_blocks" if side == "encoder" else "up_blocks"
                ldm = "down" if side == "encoder" else "up"
                rest = rest.replace(f"{blocks}.{i}.resnets.", f"{ldm}.{ldm_i}.block.")
                rest = rest.replace(f"{blocks}.{i}.downsamplers.0.", f"{ldm}.{ldm_i}.downsample.")
                rest = rest.replace(f"{blocks}.{i}.upsamplers.0.", f"{ldm}.{ldm_i}.upsample.")
            rest = rest.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
            new = f"{side}.{rest}"
        out["first_stage_model." + new] = v
    return out


def text_encoder_to_ldm(te) -> dict:
    out = {}
    for k, v in te.state_dict().items():
        k = k if k.startswith("text_model.") else "text_model." + k
        out["cond_stage_model.transformer." + k] = v
    return out


def export_single_file(model, path: Path) -> Path:
    from safetensors.torch import save_file

    tensors = {**unet_to_ldm(model.unet), **vae_to_ldm(model.vae), **text_encoder_to_ldm(model.text_encoder)}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return Path(path)
