"""Full fine-tuning of Flux: the transformer and optionally CLIP-L train, each with its own learning rate
(one optimizer group per part); the VAE and T5 stay frozen."""

from __future__ import annotations

import dataclasses

from nodes.finetune_parts import WEIGHT_DTYPE_DOC, WEIGHT_DTYPES, train_parts
from runtime import Choice, Input, Output, Param, node

from .model import text_fields
from .types import FluxModel

LR_DOC = "learning rate of the {}; 0 or empty = the optimizer's"


@node("flux.finetune_setup", title="Fine-tune (Flux)", category="Setup")
class FinetuneSetup:
    """Train the model's own weights: the transformer and/or CLIP-L, each with an optional learning rate of
    its own (0 = the optimizer's). The VAE and T5 stay frozen (T5 is fed from the data graph's cache).

    A trained part that another node of the run also uses is copied first, so what that node sees never
    changes. A trained CLIP-L runs in the training loop, so the batches need its ``tokens`` instead of the
    cached pooled embedding. FLUX.1's transformer has 12 billion weights: bfloat16 weights with an 8-bit or
    Adafactor optimizer are what fits a 24 GB GPU, and a quantized base cannot be fine-tuned (train a LoRA)."""

    model = Input(FluxModel, doc="base model")
    adapted = Output(FluxModel, doc="the model with the chosen parts trainable")
    train_transformer = Param(bool, True, doc="train the transformer")
    transformer_lr = Param(float, 0.0, min=0, optional=True, doc=LR_DOC.format("transformer"))
    train_text_encoder = Param(bool, False, doc="train the CLIP-L text encoder (its pooled output)")
    text_encoder_lr = Param(float, 0.0, min=0, optional=True, doc=LR_DOC.format("CLIP-L text encoder"))
    weight_dtype = Param(Choice(*WEIGHT_DTYPES), "bfloat16", doc=WEIGHT_DTYPE_DOC)

    def needed_batch_fields(self) -> dict[str, str]:
        """What train.loop's check asks: T5's cached sequence, and CLIP's tokens when it trains."""
        return text_fields(self.train_text_encoder)

    def run(self, ctx, model):
        from .model import check_flux_model

        model = check_flux_model(model, "flux.finetune_setup")
        if model.lora is not None:
            raise ValueError("the model already has LoRA adapters: connect flux.finetune_setup to a base model")
        trained = [p for p in ("transformer", "text_encoder") if getattr(self, f"train_{p}")]
        if not trained:
            raise ValueError("train_transformer and train_text_encoder are both off: nothing would train")
        quantized = [p for p in trained if is_quantized(getattr(model, p))]
        if quantized:
            raise ValueError(f"the {' and '.join(quantized)} weights are quantized and cannot be fine-tuned: load "
                             f"the model without quantization, or train a LoRA (flux.lora_setup)")
        rates = {p: float(getattr(self, f"{p}_lr") or 0.0) for p in trained}
        model = train_parts(ctx, model, trained, self.weight_dtype, rates)
        return {"adapted": dataclasses.replace(model, train_text_encoder="text_encoder" in trained)}


def is_quantized(module) -> bool:
    """Whether any weight of ``module`` is stored quantized (a tensor subclass or an integer / fp8 dtype)."""
    import torch

    low = {torch.int8, torch.uint8, getattr(torch, "float8_e4m3fn", None), getattr(torch, "float8_e5m2", None)}
    return any(type(p) is not torch.nn.Parameter or type(p.data) is not torch.Tensor or p.dtype in low
               for p in module.parameters())
