"""How OneTrainer's FLUX.1 dev configs become this family's nodes (``nodetrainer import onetrainer``): the
generic importer in ``runtime.interop.onetrainer`` reads this table.

The data graph is graphs/flux-dev-lora.yaml's: the VAE encoder, CLIP-L and T5 tokenizers and
flux.encode_text (T5's sequence and CLIP-L's pooled output, cached). OneTrainer-specific keys:

- ``text_encoder_2_sequence_length`` (T5 tokens; OneTrainer's default 77, null = the tokenizer's 512)
  -> the T5 tokenizer's and flux.encode_text's ``max_length``, and the preview sampler's (OneTrainer
  overwrites each sample's T5 length from the training config);
- ``transformer.guidance_scale`` -> the loader's ``guidance`` (what dev's transformer gets in training);
- a sample's ``cfg_scale`` -> flux.sample's ``guidance`` (OneTrainer's Flux sampler feeds cfg_scale to the
  guidance embedding; there is no classifier-free guidance and no negative prompt);
- quantized ``transformer`` / ``text_encoder_2`` weight dtypes (FLOAT_8, INT_8, NFLOAT_4) -> the loader's
  ``quantize``, which stores both frozen parts so (LoRA only: a quantized base cannot be fine-tuned).

T5 never trains here (OneTrainer can put a LoRA on it or fine-tune it): a config that trains it is
reported unsupported. There is no embedding setup for Flux, so EMBEDDING configs are refused.
"""

from nodes.flux.encode import T5_MAX_LENGTH
from runtime.interop.onetrainer import values as V
from runtime.interop.onetrainer.family import Encoded, OneTrainerFamily, Part

#: OneTrainer's NoiseScheduler names: Flux samples with its flow-matching Euler scheduler whatever a sample
#: says (OneTrainer's UI hides the choice for flow models); flux.sample has no scheduler param, so the value
#: never reaches the graph
FLOW_SCHEDULERS = {name: "flow_euler" for name in ("DDIM", "EULER", "EULER_A", "DPMPP", "DPMPP_SDE", "UNIPC",
                                                    "EULER_KARRAS", "DPMPP_KARRAS", "DPMPP_SDE_KARRAS",
                                                    "UNIPC_KARRAS")}
SEQUENCE_LENGTH = "text_encoder_2_sequence_length"


class FluxFamily(OneTrainerFamily):
    name = "flux"
    model_types = {"FLUX_DEV_1": {}}
    loader = "flux.load_model@1"
    tiny_loader = "flux.tiny_model@1"
    objective = "flow"
    setups = {"LORA": "flux.lora_setup@1", "FINE_TUNE": "flux.finetune_setup@1"}
    parts = {
        "transformer": Part("transformer", dtype="transformer_dtype", finetune="train_transformer",
                            lr="transformer_lr", denoiser=True),
        "text_encoder": Part("text_encoder", dtype="text_encoder_dtype", finetune="train_text_encoder",
                             lora="train_clip_l", lr="text_encoder_lr"),
        # T5: frozen in both setups (see setup_params for the report of a config that trains it)
        "text_encoder_2": Part("text_encoder_2", dtype="text_encoder_2_dtype", trains=False),
        "vae": Part("vae", dtype="vae_dtype", trains=False),
    }
    sampler = "flux.sample@1"
    schedulers = FLOW_SCHEDULERS
    savers = {("LORA", "SAFETENSORS"): "flux.save_lora@1 formats=kohya",
              ("LORA", "DIFFUSERS_LORA"): "flux.save_lora@1 formats=diffusers",
              ("LORA", "KOHYA_LORA"): "flux.save_lora@1 formats=kohya",
              ("LORA", "COMFY_LORA"): "flux.save_lora@1 formats=kohya",
              ("FINE_TUNE", "SAFETENSORS"): "flux.save_transformer@1",
              ("FINE_TUNE", "ORIGINAL_TRANSFORMER"): "flux.save_transformer@1",
              ("FINE_TUNE", "DIFFUSERS"): "flux.save_diffusers@1"}

    def loader_params(self, imp):
        params = super().loader_params(imp)
        params["guidance"] = float(imp.v["transformer"]["guidance_scale"])
        imp.mapped("transformer.guidance_scale", "base.guidance")
        return params

    def setup_params(self, imp, method):
        t5 = imp.v["text_encoder_2"]
        if t5["train"] and t5["include"] and not _stopped_at_once(t5, imp.v["epochs"]):
            imp.unsupported("text_encoder_2.train", "T5 stays frozen in nodetrainer's Flux setups (its sequence "
                                                    "is cached); set text_encoder_2.train false to match")
        # OneTrainer trains a part's weights in the part's weight_dtype (the loader's dtype): keep them so
        return {"weight_dtype": "keep"} if method == "FINE_TUNE" else {}

    def quantize_params(self, imp, key, part, scheme):
        # flux.load_model's quantize stores the frozen transformer's and T5's Linear weights together, one
        # scheme for both (OneTrainer's Flux LoRA preset: NFLOAT_4 for both)
        if imp.method == "FINE_TUNE" or key not in ("transformer", "text_encoder_2"):
            return None
        other = "text_encoder_2" if key == "transformer" else "transformer"
        try:
            theirs = V.weight_dtype(f"{other}.weight_dtype", imp.v[other]["weight_dtype"]).params.get("quantize")
        except V.Unsupported:
            theirs = None
        if theirs == scheme:
            return {"quantize": scheme}
        if key == "text_encoder_2":  # T5 alone, or with another scheme: the loader cannot
            return None
        imp.report.note(f"{key}.weight_dtype", f"flux.load_model's quantize stores T5 as {scheme} too "
                                               f"(text_encoder_2.weight_dtype is {imp.v[other]['weight_dtype']})")
        return {"quantize": scheme}

    def sampler_params(self, imp, sample, key):
        imp.mapped(f"{key}.cfg_scale", "previews.guidance (OneTrainer's Flux sampler feeds cfg_scale to the "
                                       "guidance embedding)")
        return {"guidance": float(sample["cfg_scale"]), "max_length": self.sequence_length(imp, report=False)}

    def uses(self, key):
        return key == SEQUENCE_LENGTH

    def sequence_length(self, imp, report: bool = True) -> int:
        """T5 tokens: OneTrainer's ``text_encoder_2_sequence_length`` (null: the tokenizer's own, 512)."""
        n = imp.v[SEQUENCE_LENGTH]
        n = T5_MAX_LENGTH if n is None else int(n)
        if not 1 <= n <= T5_MAX_LENGTH:
            if report:
                imp.unsupported(SEQUENCE_LENGTH, f"{n} tokens: FLUX.1's T5 takes 1..{T5_MAX_LENGTH} (the graph "
                                                 f"uses {T5_MAX_LENGTH})")
            return T5_MAX_LENGTH
        if report:
            imp.mapped(SEQUENCE_LENGTH, "tokenize_2.max_length, encode_text.max_length, previews.max_length "
                                       "(where there are samples)")
        return n

    def encode(self, imp, prefix, image, caption, fields):
        b = imp.b
        length = self.sequence_length(imp)
        latent = b.add(f"{prefix}encode_image", "sd.encode_image@1", {}, {"image": image, "vae": "base.vae"})
        tokens = b.add(f"{prefix}tokenize", "sd.tokenize@1", {},
                       {"caption": caption, "tokenizer": imp.tokenizer("tokenizer")})
        tokens_2 = b.add(f"{prefix}tokenize_2", "sd.tokenize@1", {"max_length": length},
                         {"caption": caption, "tokenizer": imp.tokenizer("tokenizer_2")})
        text = b.add(f"{prefix}encode_text", "flux.encode_text@1", {"max_length": length},
                     {"tokens": f"{tokens}.tokens", "tokens_2": f"{tokens_2}.tokens",
                      "text_encoder": "base.text_encoder", "text_encoder_2": "base.text_encoder_2"})
        cached = {"latent": f"{latent}.latent", "t5_embedding": f"{text}.t5_embedding"}
        if clip_trains(imp):  # CLIP-L runs in the training forward: its ids instead of the pooled output
            return Encoded({**cached, "tokens": f"{tokens}.tokens"})
        return Encoded({**cached, "pooled_embedding": f"{text}.pooled_embedding"})


def _stopped_at_once(part: dict, epochs) -> bool:
    """Whether the part's ``stop_training_after`` means it never trains (0 epochs or steps, ALWAYS)."""
    try:
        return V.part_stop_training("text_encoder_2", part["stop_training_after"],
                                    part["stop_training_after_unit"], epochs).params.get("train") is False
    except V.Unsupported:
        return False


def clip_trains(imp) -> bool:
    """Whether the setup trains CLIP-L (then the loop encodes captions from its tokens)."""
    params = imp.b.registry.get(imp.b.nodes[imp.setup].type).params
    return any(imp.b.param(imp.setup, f) for f in ("train_clip_l", "train_text_encoder") if f in params)


FAMILY = FluxFamily()
