"""Full fine-tuning of SD 1.x/2.x: the UNet and optionally the text encoder train, each with its own
learning rate (one optimizer group per part); the VAE stays frozen."""

from __future__ import annotations

import dataclasses

from runtime import Choice, Input, Output, Param, node

from .model import TOKENS, TOKENS_FOR_TEXT_ENCODER
from .types import SDModel

PARTS = ("unet", "text_encoder")


@node("sd.finetune_setup", title="Fine-tune", category="Setup")
class FinetuneSetup:
    """Train the model's own weights: the UNet and/or the CLIP text encoder, each with an optional learning
    rate of its own (0 = the optimizer's). The VAE stays frozen.

    The trained parts are changed in place (trainable, and cast to ``weight_dtype``) when no other node of
    the run uses them; a trained part that another node also uses (a sampler of the base model, the data
    graph's sd.encode_text) is copied first, so what that node sees never changes (the log says what was
    copied). A trained text encoder runs in the training loop, so the batches need ``tokens``
    (sd.tokenize) instead of cached embeddings.
    """

    model = Input(SDModel, doc="base model")
    adapted = Output(SDModel, doc="the model with the chosen parts trainable")
    train_unet = Param(bool, True, doc="train the UNet")
    unet_lr = Param(float, 0.0, min=0, optional=True, doc="learning rate of the UNet; 0 or empty = the optimizer's")
    train_text_encoder = Param(bool, False, doc="train the text encoder too (its outputs are then computed in "
                                                "the loop from tokens)")
    text_encoder_lr = Param(float, 0.0, min=0, optional=True,
                            doc="learning rate of the text encoder; 0 or empty = the optimizer's")
    clip_skip = Param(int, 0, min=0, max=12, doc="text-encoder layers to skip when it runs in the loop")
    weight_dtype = Param(Choice("float32", "bfloat16", "keep"), "float32",
                         doc="dtype of the trained weights: float32 (full-precision updates; pair with fp16 or "
                             "bf16 precision), bfloat16 (half the memory), or keep them as loaded")

    def needed_batch_fields(self) -> dict[str, str]:
        """What train.loop's check asks: a trained text encoder reads token ids from the batches."""
        return {TOKENS: TOKENS_FOR_TEXT_ENCODER} if self.train_text_encoder else {}

    def run(self, ctx, model):
        import torch

        from nodes.diffusers_parts import torch_dtype
        from .model import check_sd_model

        model = check_sd_model(model, "sd.finetune_setup")
        if model.lora is not None or model.embedding is not None:
            what = "LoRA adapters" if model.lora is not None else "a trained embedding"
            raise ValueError(f"the model already has {what}: connect sd.finetune_setup to a base model")
        trained = [p for p in PARTS if getattr(self, f"train_{p}")]
        if not trained:
            raise ValueError("train_unet and train_text_encoder are both off: nothing would train")
        layers = model.text_encoder.config.num_hidden_layers
        if self.clip_skip >= layers:
            raise ValueError(f"param 'clip_skip': {self.clip_skip} is too large for a {layers}-layer text encoder")
        model = dataclasses.replace(model, **ctx.own_copies("to train there", **{p: getattr(model, p) for p in trained}))
        dtypes = dict(model.dtypes)
        for name in ("unet", "vae", "text_encoder"):
            part = getattr(model, name)
            part.requires_grad_(name in trained)
            if name in trained and self.weight_dtype != "keep":
                part.to(torch_dtype(self.weight_dtype))
                dtypes[name] = self.weight_dtype
        half = [n for n in trained if getattr(model, n).dtype == torch.float16]
        if half:
            ctx.warn(f"training float16 weights ({', '.join(half)}): updates this small round to zero; "
                     f"set weight_dtype to float32 or bfloat16")
        rates = {p: float(getattr(self, f"{p}_lr") or 0.0) for p in trained}
        adapted = dataclasses.replace(model, train_text_encoder=self.train_text_encoder, clip_skip=self.clip_skip,
                                      learning_rates={p: lr for p, lr in rates.items() if lr > 0}, dtypes=dtypes)
        counts = {p: sum(w.numel() for w in getattr(model, p).parameters()) for p in trained}
        ctx.log("fine-tuning " + ", ".join(
            f"{p} ({counts[p]:,} weights, lr {rates[p] if rates[p] else 'of the optimizer'})" for p in trained))
        return {"adapted": adapted}
