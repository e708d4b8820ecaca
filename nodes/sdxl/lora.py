"""LoRA setup for SDXL: peft adapters on the UNet and optionally either or both CLIP text encoders."""

from __future__ import annotations

import dataclasses

from runtime import Choice, Input, Output, Param, node

from nodes.lora_adapters import LoraParams, add_lora, adapter_options, check_adapter, check_regex, describe, lora_info
from nodes.lora_targets import TEXT_PRESETS, UNET_PRESETS

from .model import text_fields
from .types import SDXLModel

TEXT_ENCODERS = {"none": (), "first": ("text_encoder",), "second": ("text_encoder_2",),
                 "both": ("text_encoder", "text_encoder_2")}


@node("sdxl.lora_setup", title="LoRA (SDXL)", category="Setup")
class LoraSetup(LoraParams):
    """Add adapters (peft: LoRA, DoRA, LoCon, LoHa, LoKr, OFT) to the SDXL UNet and optionally its text
    encoders; only the adapters train. LoCon's 3x3-convolution adapters go into the UNet only.

    A part that another node of the run also uses (a sampler of the base model, the data graph's
    sdxl.encode_text) gets the adapters on a copy, so what that node sees never changes (the log says
    what was copied). With adapters on a text encoder, both encoders run in the training forward, so
    the batches need both tokenizers' ``tokens`` and ``tokens_2`` instead of cached embeddings."""

    model = Input(SDXLModel, doc="base model to adapt")
    adapted = Output(SDXLModel, doc="model whose only trainable weights are the adapters")
    text_encoders = Param(Choice(*TEXT_ENCODERS), "none",
                          doc="also add adapters to the first (CLIP-L), second (CLIP-G) or both text encoders")
    clip_skip = Param(int, 0, min=0, max=12, doc="layers to skip before the penultimate one when the encoders "
                                                 "run in the loop")

    def needed_batch_fields(self) -> dict[str, str]:
        """What train.loop's check asks: cached text conditioning, or token ids when an encoder trains."""
        return text_fields(bool(TEXT_ENCODERS[self.text_encoders]))

    def run(self, ctx, model):
        if model.lora is not None:
            raise ValueError("the model already has LoRA adapters (two sdxl.lora_setup nodes in a row?)")
        check_adapter(self)
        regex = check_regex(self.target_regex)
        changed = ["unet", *TEXT_ENCODERS[self.text_encoders]]
        model = dataclasses.replace(model, **ctx.own_copies("to add the adapters there",
                                                            **{n: getattr(model, n) for n in changed}))
        for part in model.parts().values():
            part.requires_grad_(False)
        counts = {n: add_lora(ctx, n, getattr(model, n), rank=self.rank, alpha=self.alpha, dropout=self.dropout,
                              preset=self.targets, regex=regex, presets=UNET_PRESETS if n == "unet" else TEXT_PRESETS,
                              init=self.init, seed=self.seed, conv=n == "unet", **adapter_options(self))
                  for n in changed}
        trains_text = len(changed) > 1
        info = lora_info(self, regex or self.targets, changed, unet=True, text_encoder=trains_text)
        adapted = dataclasses.replace(model, lora=info, train_text_encoder=trains_text, clip_skip=self.clip_skip)
        ctx.log(f"{describe(info)}: {sum(counts.values()):,} trainable parameters "
                + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
        return {"adapted": adapted}
