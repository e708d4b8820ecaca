"""Regenerate assets/tiny_sdxl: the configs and tokenizers of nodetrainer's built-in tiny SDXL model.

Laid out like a diffusers SDXL folder without weights (model_index.json, unet/, vae/,
text_encoder/, text_encoder_2/, tokenizer/, tokenizer_2/, scheduler/), so it is also
the local ``config=`` folder for single-file checkpoints of the tiny model. The weights
are random and deterministic: ``sdxl.tiny_model`` builds them from these configs and a seed.

Shapes follow SDXL's: two CLIP text encoders whose penultimate hidden states are
concatenated (32 + 48 = 80 = the UNet's cross-attention width), the second with a
projection whose pooled output (48) and six size numbers embedded to 8 each make the
UNet's added embedding (6 * 8 + 48 = 96). The two encoders have different widths on
purpose: diffusers' single-file loader tells them apart by width. The tokenizers are the
tiny SD model's byte-level BPE (assets/tiny_model/tokenizer); the second pads with "!"
as SDXL's OpenCLIP tokenizer does.

Run: python assets/tiny_sdxl/make_tiny_sdxl.py
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

OUT = Path(__file__).parent
SD_TOKENIZER = OUT.parent / "tiny_model" / "tokenizer"

UNET = {
    "_class_name": "UNet2DConditionModel",
    "sample_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 1,
    "block_out_channels": [32, 64],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
    "cross_attention_dim": 80,
    "attention_head_dim": [2, 4],
    "transformer_layers_per_block": [1, 2],
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": 96,
    "norm_num_groups": 32,
}
VAE = {
    "_class_name": "AutoencoderKL",
    "block_out_channels": [32, 64],
    "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
    "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 1,
    "norm_num_groups": 32,
    "sample_size": 64,
    "scaling_factor": 0.13025,
    "force_upcast": True,
}
_CLIP = {
    "bos_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": 1,
    "hidden_act": "quick_gelu",
    "intermediate_size": 37,
    "max_position_embeddings": 77,
    "model_type": "clip_text_model",
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "vocab_size": 1000,
}
TEXT_ENCODER = {**_CLIP, "architectures": ["CLIPTextModel"], "hidden_size": 32, "projection_dim": 32}
TEXT_ENCODER_2 = {**_CLIP, "architectures": ["CLIPTextModelWithProjection"], "hidden_size": 48,
                  "intermediate_size": 53, "projection_dim": 48, "hidden_act": "gelu"}
SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "interpolation_type": "linear",
    "use_karras_sigmas": False,
}
MODEL_INDEX = {
    "_class_name": "StableDiffusionXLPipeline",
    "force_zeros_for_empty_prompt": True,
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def copy_tokenizer(folder: Path, pad_token: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(SD_TOKENIZER / name, folder / name)
    config = json.loads((SD_TOKENIZER / "tokenizer_config.json").read_text(encoding="utf-8"))
    write_json(folder / "tokenizer_config.json", {**config, "pad_token": pad_token})


def main() -> None:
    write_json(OUT / "model_index.json", MODEL_INDEX)
    write_json(OUT / "unet" / "config.json", UNET)
    write_json(OUT / "vae" / "config.json", VAE)
    write_json(OUT / "text_encoder" / "config.json", TEXT_ENCODER)
    write_json(OUT / "text_encoder_2" / "config.json", TEXT_ENCODER_2)
    write_json(OUT / "scheduler" / "scheduler_config.json", SCHEDULER)
    copy_tokenizer(OUT / "tokenizer", "<|endoftext|>")
    copy_tokenizer(OUT / "tokenizer_2", "!")


if __name__ == "__main__":
    main()
