"""How OneTrainer's Stable Diffusion 1.x/2.x configs become this family's nodes (``nodetrainer import
onetrainer``): the generic importer in ``runtime.interop.onetrainer`` reads this table."""

from runtime.interop.onetrainer.family import Encoded, OneTrainerFamily, Part

SCHEDULERS = {"DDIM": "ddim", "EULER": "euler", "EULER_A": "euler_a", "DPMPP": "dpmpp_2m",
              "DPMPP_KARRAS": "dpmpp_2m_karras", "UNIPC": "unipc"}


class SDFamily(OneTrainerFamily):
    name = "sd"
    model_types = {"STABLE_DIFFUSION_15": {}, "STABLE_DIFFUSION_20": {}, "STABLE_DIFFUSION_20_BASE": {},
                   "STABLE_DIFFUSION_21": {}, "STABLE_DIFFUSION_21_BASE": {}}
    loader = "sd.load_model@1"
    tiny_loader = "sd.tiny_model@1"
    objective = "diffusion"
    setups = {"LORA": "sd.lora_setup@1", "FINE_TUNE": "sd.finetune_setup@1", "EMBEDDING": "sd.embedding_setup@1"}
    parts = {
        "unet": Part("unet", dtype="unet_dtype", finetune="train_unet", lr="unet_lr", denoiser=True),
        "text_encoder": Part("text_encoder", dtype="text_encoder_dtype", finetune="train_text_encoder",
                             lora="train_text_encoder", lr="text_encoder_lr"),
        "vae": Part("vae", dtype="vae_dtype", trains=False),
    }
    sampler = "sd.sample@1"
    schedulers = SCHEDULERS
    savers = {("LORA", "SAFETENSORS"): "sd.save_lora@1 formats=kohya",
              ("LORA", "KOHYA_LORA"): "sd.save_lora@1 formats=kohya",
              ("LORA", "DIFFUSERS_LORA"): "sd.save_lora@1 formats=diffusers",
              ("FINE_TUNE", "SAFETENSORS"): "sd.save_checkpoint@1",
              ("FINE_TUNE", "ORIGINAL_SINGLE_FILE"): "sd.save_checkpoint@1",
              ("FINE_TUNE", "DIFFUSERS"): "sd.save_diffusers@1",
              ("EMBEDDING", "SAFETENSORS"): "sd.save_embedding@1"}

    def encode(self, imp, prefix, image, caption, fields):
        b = imp.b
        latent = b.add(f"{prefix}encode_image", "sd.encode_image@1", {}, {"image": image, "vae": "base.vae"})
        tokens = b.add(f"{prefix}tokenize", "sd.tokenize@1", {},
                       {"caption": caption, "tokenizer": imp.tokenizer("tokenizer")})
        if imp.method == "EMBEDDING":  # the placeholder's vectors train: the text encoder runs in the loop
            return Encoded({"latent": f"{latent}.latent"}, {"tokens": f"{tokens}.tokens"})
        if text_encoder_trains(imp):
            return Encoded({"latent": f"{latent}.latent", "tokens": f"{tokens}.tokens"})
        text = b.add(f"{prefix}encode_text", "sd.encode_text@1", {},
                     {"tokens": f"{tokens}.tokens", "text_encoder": "base.text_encoder"})
        return Encoded({"latent": f"{latent}.latent", "embedding": f"{text}.embedding"})


def text_encoder_trains(imp, flags=("train_text_encoder",)) -> bool:
    """Whether the setup trains a text encoder (then the loop encodes captions from tokens)."""
    return any(imp.b.param(imp.setup, f) for f in flags if f in imp.b.registry.get(imp.b.nodes[imp.setup].type).params)


FAMILY = SDFamily()
