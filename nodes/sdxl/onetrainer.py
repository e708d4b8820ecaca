"""How OneTrainer's Stable Diffusion XL configs become this family's nodes (``nodetrainer import
onetrainer``): the generic importer in ``runtime.interop.onetrainer`` reads this table.

The data graph is graphs/sdxl-lora.yaml's: the VAE encoder, a tokenizer per CLIP encoder, both encoders
(sdxl.encode_text) and the size conditioning (the image's original size, its crop offset and the bucket,
as OneTrainer's ``original_resolution`` / ``crop_offset`` / ``crop_resolution``). When a text encoder
trains, or for an embedding, the encoders run in the training loop and the batches get both
tokenizers' ids (``tokens``, ``tokens_2``) instead of the cached embeddings.
"""

from nodes.sd.onetrainer import SCHEDULERS
from runtime.interop.onetrainer.family import Encoded, OneTrainerFamily, Part

#: sdxl.lora_setup's ``text_encoders`` choice <-> the encoders it adapts (1: CLIP-L, 2: CLIP-G)
TEXT_ENCODERS = {"none": frozenset(), "first": frozenset({1}), "second": frozenset({2}), "both": frozenset({1, 2})}
ENCODER_INDEX = {"text_encoder": 1, "text_encoder_2": 2}


class SDXLFamily(OneTrainerFamily):
    name = "sdxl"
    model_types = {"STABLE_DIFFUSION_XL_10_BASE": {}}
    loader = "sdxl.load_model@1"
    tiny_loader = "sdxl.tiny_model@1"
    objective = "diffusion"
    setups = {"LORA": "sdxl.lora_setup@1", "FINE_TUNE": "sdxl.finetune_setup@1",
              "EMBEDDING": "sdxl.embedding_setup@1"}
    parts = {
        "unet": Part("unet", dtype="unet_dtype", finetune="train_unet", lr="unet_lr", denoiser=True),
        "text_encoder": Part("text_encoder", dtype="text_encoder_dtype", finetune="train_text_encoder",
                             lora="text_encoders", lr="text_encoder_lr"),
        "text_encoder_2": Part("text_encoder_2", dtype="text_encoder_2_dtype", finetune="train_text_encoder_2",
                               lora="text_encoders", lr="text_encoder_2_lr"),
        "vae": Part("vae", dtype="vae_dtype", trains=False),
    }
    sampler = "sdxl.sample@1"
    schedulers = SCHEDULERS
    # kohya names (sd-scripts' SGM blocks) are what A1111, ComfyUI and Forge load; OneTrainer's legacy and
    # Comfy LoRA files are read by the same programs
    savers = {("LORA", "KOHYA_LORA"): "sdxl.save_lora@1 formats=kohya",
              ("LORA", "DIFFUSERS_LORA"): "sdxl.save_lora@1 formats=diffusers",
              ("LORA", "COMFY_LORA"): "sdxl.save_lora@1 formats=kohya",
              ("LORA", "LEGACY_LORA"): "sdxl.save_lora@1 formats=kohya",
              ("LORA", "SAFETENSORS"): "sdxl.save_lora@1 formats=kohya",
              ("FINE_TUNE", "ORIGINAL_SINGLE_FILE"): "sdxl.save_checkpoint@1",
              ("FINE_TUNE", "DIFFUSERS"): "sdxl.save_diffusers@1",
              ("FINE_TUNE", "LEGACY_SAFETENSORS"): "sdxl.save_checkpoint@1",
              ("FINE_TUNE", "SAFETENSORS"): "sdxl.save_checkpoint@1",
              ("EMBEDDING", "SAFETENSORS"): "sdxl.save_embedding@1"}

    def setup_params(self, imp, method):
        # OneTrainer trains a part's weights in the part's weight_dtype (the loader's dtype): keep them so
        return {"weight_dtype": "keep"} if method == "FINE_TUNE" else {}

    def set_part_trains(self, imp, part, flag, trains):
        if flag != "text_encoders":
            return super().set_part_trains(imp, part, flag, trains)
        chosen = set(TEXT_ENCODERS[imp.b.param(imp.setup, flag)])
        (chosen.add if trains else chosen.discard)(ENCODER_INDEX[part.name])
        imp.b.set(imp.setup, flag, next(k for k, v in TEXT_ENCODERS.items() if v == chosen))

    def encode(self, imp, prefix, image, caption, fields):
        b = imp.b
        latent = b.add(f"{prefix}encode_image", "sd.encode_image@1", {}, {"image": image, "vae": "base.vae"})
        sizes = b.add(f"{prefix}sizes", "sdxl.size_conditioning@1", {},
                      {"size": fields["size"], "crop_offset": fields["crop_offset"], "bucket": fields["bucket"]})
        tokens = b.add(f"{prefix}tokenize", "sd.tokenize@1", {},
                       {"caption": caption, "tokenizer": imp.tokenizer("tokenizer")})
        tokens_2 = b.add(f"{prefix}tokenize_2", "sd.tokenize@1", {},
                         {"caption": caption, "tokenizer": imp.tokenizer("tokenizer_2")})
        cached = {"latent": f"{latent}.latent", "time_ids": f"{sizes}.time_ids"}
        ids = {"tokens": f"{tokens}.tokens", "tokens_2": f"{tokens_2}.tokens"}
        # an embedding's vectors or a trained encoder: both encoders run in the loop. The ids go through
        # the cache, which renames the second tokenizer's 'tokens' to 'tokens_2'
        if imp.method == "EMBEDDING" or text_encoders_train(imp):
            return Encoded({**cached, **ids})
        text = b.add(f"{prefix}encode_text", "sdxl.encode_text@1", {},
                     {"tokens": ids["tokens"], "tokens_2": ids["tokens_2"], "text_encoder": "base.text_encoder",
                      "text_encoder_2": "base.text_encoder_2"})
        return Encoded({**cached, "embedding": f"{text}.embedding", "pooled_embedding": f"{text}.pooled_embedding"})


def text_encoders_train(imp) -> bool:
    """Whether the setup trains either CLIP encoder (then the loop encodes captions from tokens)."""
    params = imp.b.registry.get(imp.b.nodes[imp.setup].type).params
    if "text_encoders" in params:
        return imp.b.param(imp.setup, "text_encoders") != "none"
    return any(imp.b.param(imp.setup, f) for f in ("train_text_encoder", "train_text_encoder_2") if f in params)


FAMILY = SDXLFamily()
