"""Full fine-tuning of SDXL: the UNet and optionally either text encoder train, each with its own learning
rate (one optimizer group per part); the VAE stays frozen."""

from __future__ import annotations

import dataclasses

from nodes.finetune_parts import WEIGHT_DTYPE_DOC, WEIGHT_DTYPES, train_parts
from runtime import Choice, Input, Output, Param, node

from .model import text_fields
from .types import SDXLModel

PARTS = ("unet", "text_encoder", "text_encoder_2")
LR_DOC = "learning rate of the {}; 0 or empty = the optimizer's"


@node("sdxl.finetune_setup", title="Fine-tune (SDXL)", category="Setup")
class FinetuneSetup:
    """Train the model's own weights: the UNet and/or either CLIP text encoder, each with an optional
    learning rate of its own (0 = the optimizer's). The VAE stays frozen.

    A trained part that another node of the run also uses is copied first, so what that node sees never
    changes (the log says what was copied). A trained text encoder runs in the training loop, so the
    batches need both tokenizers' ``tokens`` and ``tokens_2`` instead of cached embeddings."""

    model = Input(SDXLModel, doc="base model")
    adapted = Output(SDXLModel, doc="the model with the chosen parts trainable")
    train_unet = Param(bool, True, doc="train the UNet")
    unet_lr = Param(float, 0.0, min=0, optional=True, doc=LR_DOC.format("UNet"))
    train_text_encoder = Param(bool, False, doc="train the first text encoder (CLIP-L)")
    text_encoder_lr = Param(float, 0.0, min=0, optional=True, doc=LR_DOC.format("first text encoder"))
    train_text_encoder_2 = Param(bool, False, doc="train the second text encoder (CLIP-G)")
    text_encoder_2_lr = Param(float, 0.0, min=0, optional=True, doc=LR_DOC.format("second text encoder"))
    clip_skip = Param(int, 0, min=0, max=12, doc="layers to skip before the penultimate one when the encoders "
                                                 "run in the loop")
    weight_dtype = Param(Choice(*WEIGHT_DTYPES), "float32", doc=WEIGHT_DTYPE_DOC)

    def needed_batch_fields(self) -> dict[str, str]:
        """What train.loop's check asks: cached text conditioning, or token ids when an encoder trains."""
        return text_fields(self.train_text_encoder or self.train_text_encoder_2)

    def run(self, ctx, model):
        if model.lora is not None or model.embedding is not None:
            what = "LoRA adapters" if model.lora is not None else "a trained embedding"
            raise ValueError(f"the model already has {what}: connect sdxl.finetune_setup to a base model")
        trained = [p for p in PARTS if getattr(self, f"train_{p}")]
        if not trained:
            raise ValueError("train_unet, train_text_encoder and train_text_encoder_2 are all off: nothing would train")
        layers = min(model.text_encoder.config.num_hidden_layers, model.text_encoder_2.config.num_hidden_layers)
        if self.clip_skip + 2 > layers:
            raise ValueError(f"param 'clip_skip': {self.clip_skip} is too large for {layers}-layer text encoders")
        rates = {p: float(getattr(self, f"{p}_lr") or 0.0) for p in trained}
        model = train_parts(ctx, model, trained, self.weight_dtype, rates)
        return {"adapted": dataclasses.replace(model, train_text_encoder=len(set(trained) - {"unet"}) > 0,
                                               clip_skip=self.clip_skip)}
