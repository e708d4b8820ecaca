"""LoRA setup for Flux: peft adapters on the transformer (presets, block ranges, regex) and optionally CLIP-L."""

from __future__ import annotations

import dataclasses

from runtime import Input, Output, Param, node

from nodes.lora_adapters import LoraParams, add_lora, adapter_options, check_adapter, check_regex, describe, lora_info
from nodes.lora_targets import TEXT_PRESETS

from .lora_targets import BLOCKS_DOC, select_targets
from .model import text_fields
from .types import FluxModel

CHOSEN = "chosen"  # the preset name under which add_lora gets our full module names


@node("flux.lora_setup", title="LoRA (Flux)", category="Setup")
class LoraSetup(LoraParams):
    """Add adapters (peft: LoRA, DoRA, LoHa, LoKr, OFT) to the Flux transformer and optionally CLIP-L; only
    the adapters train. LoCon is refused: the transformer has no 3x3 convolutions.

    Targets, inside the chosen double and single blocks: ``attn`` the attention projections of both
    streams (q/k/v/out, the text stream's add_*_proj and to_add_out), ``attn-mlp`` also the MLPs (image
    and text stream, the single blocks' proj_mlp and proj_out), ``all-linear`` every linear layer of the
    blocks (also the modulations). The transformer's final proj_out is never a preset target. A
    ``target_regex`` over full module names replaces the preset (and can reach layers outside the
    blocks). With adapters on CLIP-L it runs in the training forward, so the batches need its
    ``tokens`` instead of the cached pooled embedding; T5 stays frozen and cached.

    A part that another node of the run also uses (a sampler of the base model, the data graph's
    flux.encode_text) gets the adapters on a copy, so what that node sees never changes."""

    conv_adapters = False
    model = Input(FluxModel, doc="base model to adapt")
    adapted = Output(FluxModel, doc="model whose only trainable weights are the adapters")
    double_blocks = Param(str, "all", doc=BLOCKS_DOC.format("double (joint text-image)"))
    single_blocks = Param(str, "all", doc=BLOCKS_DOC.format("single"))
    train_clip_l = Param(bool, False, doc="also add adapters to the CLIP-L text encoder (its attention, or attention "
                                          "and MLP with attn-mlp / all-linear)")

    def needed_batch_fields(self) -> dict[str, str]:
        """What train.loop's check asks: T5's cached sequence, and CLIP's tokens when it trains."""
        return text_fields(self.train_clip_l)

    def run(self, ctx, model):
        from .model import check_flux_model

        model = check_flux_model(model, "flux.lora_setup")
        if model.lora is not None:
            raise ValueError("the model already has LoRA adapters (two flux.lora_setup nodes in a row?)")
        check_adapter(self)
        regex = check_regex(self.target_regex)
        chosen = select_targets(model.transformer, self.targets, regex, self.double_blocks, self.single_blocks)
        if not chosen:
            raise ValueError("no layer of the transformer matches " + (
                f"target_regex {regex!r}" if regex else f"preset {self.targets!r}") +
                f" in double_blocks {self.double_blocks!r} / single_blocks {self.single_blocks!r}")
        changed = ["transformer", *(["text_encoder"] if self.train_clip_l else [])]
        model = dataclasses.replace(model, **ctx.own_copies("to add the adapters there",
                                                            **{n: getattr(model, n) for n in changed}))
        for part in model.parts().values():
            part.requires_grad_(False)
        common = dict(rank=self.rank, alpha=self.alpha, dropout=self.dropout, init=self.init, seed=self.seed,
                      **adapter_options(self))
        counts = {"transformer": add_lora(ctx, "transformer", model.transformer, preset=CHOSEN, regex=None,
                                          presets={CHOSEN: chosen}, **common)}
        if self.train_clip_l:
            text_preset = "attn" if self.targets == "attn" else "attn-mlp"
            counts["text_encoder"] = add_lora(ctx, "text_encoder", model.text_encoder, preset=text_preset,
                                              regex=None, presets=TEXT_PRESETS, **common)
        targets = regex or self.targets
        if (self.double_blocks or "all") != "all" or (self.single_blocks or "all") != "all":
            targets += f" (double blocks {self.double_blocks}, single blocks {self.single_blocks})"
        info = lora_info(self, targets, changed, unet=True, text_encoder=self.train_clip_l)
        adapted = dataclasses.replace(model, lora=info, train_text_encoder=self.train_clip_l)
        ctx.log(f"{describe(info)} on {len(chosen)} transformer layers: "
                f"{sum(counts.values()):,} trainable parameters " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
        return {"adapted": adapted}
