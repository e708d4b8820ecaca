"""Full fine-tuning of SD 1.x/2.x: the UNet and optionally the text encoder train, each with its own
learning rate (one optimizer group per part); the VAE stays frozen."""

from __future__ import annotations

import dataclasses

from nodes.finetune_parts import WEIGHT_DTYPE_DOC, WEIGHT_DTYPES, train_parts
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
    weight_dtype = Param(Choice(*WEIGHT_DTYPES), "float32", doc=WEIGHT_DTYPE_DOC)

    def needed_batch_fields(self) -> dict[str, str]:
        """What train.loop's check asks: a trained text encoder reads token ids from the batches."""
        return {TOKENS: TOKENS_FOR_TEXT_ENCODER} if self.train_text_encoder else {}

    def run(self, ctx, model):
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
        rates = {p: float(getattr(self, f"{p}_lr") or 0.0) for p in trained}
        model = train_parts(ctx, model, trained, self.weight_dtype, rates)
        return {"adapted": dataclasses.replace(model, train_text_encoder=self.train_text_encoder,
                                               clip_skip=self.clip_skip)}
