"""Regenerate assets/tiny_flux: the configs and tokenizers of nodetrainer's built-in tiny Flux.1 model.

Laid out like a diffusers FLUX.1 folder without weights (model_index.json, transformer/, vae/,
text_encoder/, text_encoder_2/, tokenizer/, tokenizer_2/, scheduler/), so it is also the local
``config=`` folder for single-file (BFL layout) transformers of the tiny model. The weights are
random and deterministic: ``flux.tiny_model`` builds them from these configs and a seed.

Shapes follow FLUX.1's, scaled down:
- the VAE has 16 latent channels, four levels (8x down, as Flux's) and Flux's latent scaling
  ``(x - 0.1159) * 0.3611``;
- the transformer takes 2x2 patches of those latents (in_channels 64 = 16 x 2 x 2, patch_size 1),
  has one double-stream and one single-stream block, 2 heads of 16 (rotary axes 4 + 4 + 8 = 16),
  reads the T5 sequence (joint_attention_dim 48 = the T5 width) and CLIP-L's pooled output
  (pooled_projection_dim 32 = the CLIP width): the two widths differ so a swapped wire fails;
- the config is dev's (``guidance_embeds: true``); ``flux.tiny_model``'s schnell variant builds
  it without the guidance embedding and with schnell's unshifted, static schedule;
- the scheduler is FLUX.1-dev's: FlowMatchEulerDiscreteScheduler with the resolution-dependent
  (dynamic) shift, base/max shift 0.5/1.15 over 256..4096 image tokens.

Tokenizers are built offline: CLIP-L's is the tiny SD model's byte-level BPE
(assets/tiny_model/tokenizer); T5's is a small Unigram vocabulary in T5's id order
(``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2), written as tokenizer.json (no sentencepiece file).

Run: python assets/tiny_flux/make_tiny_flux.py [output folder, default: this folder]
"""

from __future__ import annotations

import json
import shutil
import string
import sys
from pathlib import Path

OUT = Path(__file__).parent
SD_TOKENIZER = OUT.parent / "tiny_model" / "tokenizer"

CLIP_WIDTH, T5_WIDTH = 32, 48

TRANSFORMER = {
    "_class_name": "FluxTransformer2DModel",
    "patch_size": 1,
    "in_channels": 64,
    "out_channels": None,
    "num_layers": 1,
    "num_single_layers": 1,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": T5_WIDTH,
    "pooled_projection_dim": CLIP_WIDTH,
    "guidance_embeds": True,
    "axes_dims_rope": [4, 4, 8],
}
VAE = {
    "_class_name": "AutoencoderKL",
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [32, 32, 32, 32],
    "layers_per_block": 1,
    "latent_channels": 16,
    "norm_num_groups": 32,
    "sample_size": 64,
    "scaling_factor": 0.3611,
    "shift_factor": 0.1159,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
    "force_upcast": True,
    "mid_block_add_attention": True,
}
TEXT_ENCODER = {
    "architectures": ["CLIPTextModel"],
    "model_type": "clip_text_model",
    "bos_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": 1,
    "hidden_act": "quick_gelu",
    "hidden_size": CLIP_WIDTH,
    "intermediate_size": 37,
    "max_position_embeddings": 77,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "projection_dim": CLIP_WIDTH,
    "vocab_size": 1000,
}
TEXT_ENCODER_2 = {
    "architectures": ["T5EncoderModel"],
    "model_type": "t5",
    "d_model": T5_WIDTH,
    "d_kv": 8,
    "d_ff": 64,
    "num_layers": 2,
    "num_heads": 4,
    "relative_attention_num_buckets": 8,
    "relative_attention_max_distance": 32,
    "feed_forward_proj": "gated-gelu",
    "dense_act_fn": "gelu_new",
    "is_gated_act": True,
    "tie_word_embeddings": False,
    "vocab_size": 160,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "decoder_start_token_id": 0,
}
SCHEDULER = {
    "_class_name": "FlowMatchEulerDiscreteScheduler",
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}
MODEL_INDEX = {
    "_class_name": "FluxPipeline",
    "feature_extractor": [None, None],
    "image_encoder": [None, None],
    "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "T5EncoderModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "T5TokenizerFast"],
    "transformer": ["diffusers", "FluxTransformer2DModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
#: T5's longest sequence (FluxPipeline rejects a longer max_sequence_length)
T5_MAX_LENGTH = 512


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def clip_tokenizer(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(SD_TOKENIZER / name, folder / name)
    shutil.copyfile(SD_TOKENIZER / "tokenizer_config.json", folder / "tokenizer_config.json")


def t5_pieces() -> list[tuple[str, float]]:
    """A Unigram vocabulary in T5's id order: specials, the word-start mark, printable characters, and
    each letter at a word start (preferred over mark + letter, as a real vocabulary prefers whole pieces)."""
    chars = [c for c in string.printable if not c.isspace()]
    return ([("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
            + [(c, -3.0) for c in chars] + [("\u2581" + c, -2.5) for c in string.ascii_letters])


def t5_tokenizer(folder: Path) -> None:
    from transformers import T5Tokenizer

    tokenizer = T5Tokenizer(vocab=t5_pieces(), extra_ids=0, model_max_length=T5_MAX_LENGTH)
    assert len(tokenizer) <= TEXT_ENCODER_2["vocab_size"]
    if folder.exists():
        shutil.rmtree(folder)
    tokenizer.save_pretrained(str(folder))
    for path in folder.glob("*.json"):  # sorted keys: the same bytes on every run
        write_json(path, json.loads(path.read_text(encoding="utf-8")))


def main(out: Path = OUT) -> None:
    write_json(out / "model_index.json", MODEL_INDEX)
    write_json(out / "transformer" / "config.json", TRANSFORMER)
    write_json(out / "vae" / "config.json", VAE)
    write_json(out / "text_encoder" / "config.json", TEXT_ENCODER)
    write_json(out / "text_encoder_2" / "config.json", TEXT_ENCODER_2)
    write_json(out / "scheduler" / "scheduler_config.json", SCHEDULER)
    clip_tokenizer(out / "tokenizer")
    t5_tokenizer(out / "tokenizer_2")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
