"""Regenerate assets/tiny_model: the configs and tokenizer of nodetrainer's built-in tiny SD model.

The folder is laid out like a diffusers Stable Diffusion folder without weights
(model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/), so it
is also the local ``config=`` folder for single-file checkpoints of the tiny model.
The weights are random and deterministic: ``sd.tiny_model`` builds them from these
configs and a seed in well under a second.

The tokenizer is a byte-level BPE in CLIP's format (vocab.json + merges.txt),
learned here from a small built-in corpus so common caption words are single tokens.

Run: python assets/tiny_model/make_tiny_model.py
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

OUT = Path(__file__).parent
VOCAB_SIZE = 1000
BOS, EOS = "<|startoftext|>", "<|endoftext|>"

CORPUS = """
a black circle on a green background, flat, simple
a red circle on a blue background, flat, simple
a white circle on a purple background, flat, simple
a orange square on a blue background, flat, simple
a purple square on a white background, flat, simple
a yellow square on a black background, flat, simple
a green triangle on a white background, flat, simple
a red triangle on a yellow background, flat, simple
a photo of a cat and the dog in the garden, high quality, detailed, best quality
a painting of a house by the sea at sunset, watercolor, portrait, landscape
an illustration of a person with a hat, blurry, low quality, worst quality, ugly
"""

UNET = {
    "_class_name": "UNet2DConditionModel",
    "sample_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 1,
    "block_out_channels": [32, 64],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
    "cross_attention_dim": 32,
    "attention_head_dim": 4,
    "norm_num_groups": 32,
    "use_linear_projection": False,
}
VAE = {
    "_class_name": "AutoencoderKL",
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": [32, 64],
    "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
    "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
    "layers_per_block": 1,
    "norm_num_groups": 32,
    "sample_size": 64,
    "scaling_factor": 0.18215,
}
TEXT_ENCODER = {
    "architectures": ["CLIPTextModel"],
    "model_type": "clip_text_model",
    "vocab_size": VOCAB_SIZE,
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 32,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": 1,
}
SCHEDULER = {
    "_class_name": "DDPMScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}
MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "feature_extractor": [None, None],
    "requires_safety_checker": False,
    "safety_checker": [None, None],
    "scheduler": ["diffusers", "DDPMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's (and GPT-2's) reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def learn_bpe(corpus: str, n_merges: int) -> list[tuple[str, str]]:
    """Greedy BPE on the words of ``corpus`` (word-final symbols carry ``</w>``, as in CLIP)."""
    table = bytes_to_unicode()
    words = Counter()
    for w in corpus.lower().replace(",", " , ").split():
        symbols = [table[b] for b in w.encode("utf-8")]
        symbols[-1] += "</w>"
        words[tuple(symbols)] += 1
    merges = []
    for _ in range(n_merges):
        pairs = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += count
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        merged = Counter()
        for word, count in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += count
        words = merged
    return merges


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def main() -> None:
    chars = list(bytes_to_unicode().values())
    vocab = [BOS, EOS] + chars + [c + "</w>" for c in chars]
    merges = learn_bpe(CORPUS, VOCAB_SIZE - len(vocab))
    vocab += [a + b for a, b in merges]
    vocab = list(dict.fromkeys(vocab))
    tok = OUT / "tokenizer"
    write_json(tok / "vocab.json", {t: i for i, t in enumerate(vocab)})
    (tok / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    write_json(tok / "tokenizer_config.json", {
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "bos_token": BOS, "eos_token": EOS,
        "pad_token": EOS, "unk_token": EOS, "do_lower_case": True,
    })
    text_encoder = dict(TEXT_ENCODER, vocab_size=max(VOCAB_SIZE, len(vocab)))
    write_json(OUT / "unet" / "config.json", UNET)
    write_json(OUT / "vae" / "config.json", VAE)
    write_json(OUT / "text_encoder" / "config.json", text_encoder)
    write_json(OUT / "scheduler" / "scheduler_config.json", SCHEDULER)
    write_json(OUT / "model_index.json", MODEL_INDEX)
    print(f"wrote {OUT} ({len(vocab)} tokens, {len(merges)} merges)")


if __name__ == "__main__":
    main()
