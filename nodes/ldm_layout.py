"""Diffusers -> original (LDM/SGM) key layout of single-file checkpoints, any depth: SD 1.x/2.x and SDXL.

The layout A1111, ComfyUI and diffusers' ``from_single_file`` read:
``model.diffusion_model.`` (UNet, indexed by the config's number of levels and
layers per block; SDXL's added embedding as ``label_emb``), ``first_stage_model.``
(VAE, with 1x1-conv attention weights), and text encoders either with HF CLIP names
(SD 1.x: ``cond_stage_model.transformer.text_model.``) or in OpenCLIP's layout (SD 2.x
under ``cond_stage_model.model.``: fused q/k/v ``in_proj`` weights, ``resblocks``).
SDXL puts CLIP-L and CLIP-G (OpenCLIP, with its projection) under ``conditioner.embedders.0/1``.
Works on state dicts, so the savers can feed fused, cast weights.
"""

from __future__ import annotations

RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0",
          "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
OPEN_CLIP_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
                   "self_attn.out_proj": "attn.out_proj"}
UNET_PREFIX, VAE_PREFIX = "model.diffusion_model.", "first_stage_model."
CLIP_PREFIX, OPEN_CLIP_PREFIX = "cond_stage_model.transformer.text_model.", "cond_stage_model.model."
SDXL_CLIP_PREFIX, SDXL_OPEN_CLIP_PREFIX = "conditioner.embedders.0.transformer.text_model.", "conditioner.embedders.1.model."


def _unet_map(cfg) -> dict[str, str]:
    """diffusers module prefix -> LDM module prefix."""
    lpb, levels = cfg.layers_per_block, len(cfg.block_out_channels)
    if not isinstance(lpb, int):
        raise ValueError(f"per-level layers_per_block {lpb} has no SD 1.x/2.x single-file layout")
    m = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
         "time_embedding.linear_2": "time_embed.2", "conv_norm_out": "out.0", "conv_out": "out.2",
         "mid_block.resnets.0": "middle_block.0", "mid_block.attentions.0": "middle_block.1",
         "mid_block.resnets.1": "middle_block.2",
         "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}  # SDXL
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


def unet_to_ldm(state_dict: dict, config) -> dict:
    """A diffusers UNet2DConditionModel state dict in LDM names (``model.diffusion_model.`` keys)."""
    mapping = _unet_map(config)
    prefixes = sorted(mapping, key=len, reverse=True)
    out = {}
    for k, v in state_dict.items():
        pre = next((p for p in prefixes if k.startswith(p + ".")), None)
        if pre is None:
            raise ValueError(f"UNet weight {k!r} has no place in the SD single-file layout")
        tail = k[len(pre) + 1:]
        if ".resnets." in pre + ".":
            for a, b in RESNET.items():
                if tail.startswith(a + "."):
                    tail = b + tail[len(a):]
                    break
        out[f"{UNET_PREFIX}{mapping[pre]}.{tail}"] = v
    return out


def vae_to_ldm(state_dict: dict, config) -> dict:
    """A diffusers AutoencoderKL state dict in LDM names (``first_stage_model.`` keys)."""
    levels = len(config.block_out_channels)
    out = {}
    for k, v in state_dict.items():
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
                    v = v[:, :, None, None]  # LDM's attention projections are 1x1 convs
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
        out[VAE_PREFIX + new] = v
    return out


def _clip_keys(state_dict: dict) -> dict:
    """CLIP text weights without the ``text_model.`` level (transformers 5 has none; 4 has it)."""
    return {k.removeprefix("text_model."): v for k, v in state_dict.items()}


def clip_to_ldm(state_dict: dict, prefix: str = CLIP_PREFIX) -> dict:
    """HF CLIP names under ``prefix`` (SD 1.x: ``cond_stage_model.transformer.text_model.``)."""
    return {prefix + k: v for k, v in _clip_keys(state_dict).items()}


def open_clip_to_ldm(state_dict: dict, prefix: str = OPEN_CLIP_PREFIX) -> dict:
    """OpenCLIP names under ``prefix`` (SD 2.x: ``cond_stage_model.model.``), q/k/v fused into ``in_proj``;
    a projection (CLIPTextModelWithProjection's ``text_projection.weight``) is stored transposed."""
    import torch

    sd = _clip_keys(state_dict)
    out = {}
    fused: dict[str, dict[str, object]] = {}
    for k, v in sd.items():
        if k == "embeddings.token_embedding.weight":
            out["token_embedding.weight"] = v
        elif k == "embeddings.position_embedding.weight":
            out["positional_embedding"] = v
        elif k == "text_projection.weight":
            out["text_projection"] = v.t().contiguous()
        elif k.startswith("final_layer_norm."):
            out["ln_final." + k[len("final_layer_norm."):]] = v
        elif k.startswith("encoder.layers."):
            i, tail = k[len("encoder.layers."):].split(".", 1)
            base = f"transformer.resblocks.{i}."
            proj = next((p for p in ("q_proj", "k_proj", "v_proj") if tail.startswith(f"self_attn.{p}.")), None)
            if proj:
                kind = tail.rsplit(".", 1)[1]  # weight / bias
                fused.setdefault(f"{base}attn.in_proj_{kind}", {})[proj] = v
                continue
            for a, b in OPEN_CLIP_LAYER.items():
                if tail.startswith(a + "."):
                    tail = b + tail[len(a):]
                    break
            out[base + tail] = v
        else:
            raise ValueError(f"text-encoder weight {k!r} has no place in the OpenCLIP layout")
    for key, parts in fused.items():
        out[key] = torch.cat([parts["q_proj"], parts["k_proj"], parts["v_proj"]], dim=0)
    return {prefix + k: v for k, v in out.items()}


def ldm_state_dict(unet_sd: dict, unet_config, vae_sd: dict, vae_config, te_sd: dict, version: str) -> dict:
    """The whole single-file checkpoint (``version`` 'sd1' or 'sd2' picks the text-encoder layout)."""
    te = open_clip_to_ldm(te_sd) if version == "sd2" else clip_to_ldm(te_sd)
    return {**unet_to_ldm(unet_sd, unet_config), **vae_to_ldm(vae_sd, vae_config), **te}


def sdxl_state_dict(unet_sd: dict, unet_config, vae_sd: dict, vae_config, te1_sd: dict, te2_sd: dict) -> dict:
    """The whole SDXL single-file checkpoint: UNet, VAE, CLIP-L (HF names) and CLIP-G (OpenCLIP)."""
    return {**unet_to_ldm(unet_sd, unet_config), **vae_to_ldm(vae_sd, vae_config),
            **clip_to_ldm(te1_sd, SDXL_CLIP_PREFIX), **open_clip_to_ldm(te2_sd, SDXL_OPEN_CLIP_PREFIX)}
