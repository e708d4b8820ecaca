"""LoRA setup for SD 1.x/2.x: peft adapters on the UNet and optionally the CLIP text encoder."""

from __future__ import annotations

import dataclasses

from runtime import Input, Output, Param, node

from nodes.lora_adapters import LoraParams, add_lora, adapter_options, check_adapter, check_regex, describe, lora_info
from nodes.lora_targets import TEXT_PRESETS, UNET_PRESETS

from .model import TOKENS, TOKENS_FOR_TEXT_ENCODER
from .types import SDModel


@node("sd.lora_setup", title="LoRA", category="Setup")
class LoraSetup(LoraParams):
    """Add adapters (peft: LoRA, DoRA, LoCon, LoHa, LoKr, OFT) to the UNet and optionally the text encoder;
    only the adapters train. LoCon's 3x3-convolution adapters go into the UNet only.

    The adapters go into the input model's UNet (and text encoder) in place when no other node of the
    run uses them; a part that another node also uses (a sampler of the base model, the data graph's
    sd.encode_text) is copied first, so what that node sees never changes (the log says what was copied).
    """

    model = Input(SDModel, doc="base model to adapt")
    adapted = Output(SDModel, doc="model whose only trainable weights are the adapters")
    train_text_encoder = Param(bool, False, doc="also add adapters to the text encoder (its outputs are then "
                                                "computed in the loop from tokens)")
    clip_skip = Param(int, 0, min=0, max=12, doc="text-encoder layers to skip when it is trained in the loop")

    def needed_batch_fields(self) -> dict[str, str]:
        """What train.loop's check asks: a trained text encoder reads token ids from the batches."""
        return {TOKENS: TOKENS_FOR_TEXT_ENCODER} if self.train_text_encoder else {}

    def run(self, ctx, model):
        if model.lora is not None:
            raise ValueError("the model already has LoRA adapters (two sd.lora_setup nodes in a row?)")
        check_adapter(self)
        regex = check_regex(self.target_regex)
        changed = ["unet"] + (["text_encoder"] if self.train_text_encoder else [])
        model = dataclasses.replace(model, **ctx.own_copies("to add the adapters there",
                                                            **{n: getattr(model, n) for n in changed}))
        for part in model.parts().values():
            part.requires_grad_(False)
        presets = {"unet": UNET_PRESETS, "text_encoder": TEXT_PRESETS}
        counts = {n: add_lora(ctx, n, getattr(model, n), rank=self.rank, alpha=self.alpha, dropout=self.dropout,
                              preset=self.targets, regex=regex, presets=presets[n], init=self.init, seed=self.seed,
                              conv=n == "unet", **adapter_options(self))
                  for n in changed}
        info = lora_info(self, regex or self.targets, changed, unet=True, text_encoder=self.train_text_encoder)
        adapted = dataclasses.replace(model, lora=info, train_text_encoder=self.train_text_encoder,
                                      clip_skip=self.clip_skip)
        ctx.log(f"{describe(info)}: {sum(counts.values()):,} trainable parameters "
                + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
        return {"adapted": adapted}
