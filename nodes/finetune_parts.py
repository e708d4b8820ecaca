"""Full fine-tuning of chosen parts, shared by the families' fine-tune setups: the trained parts become
trainable (on their own copy when another node of the run uses them), in the chosen dtype, each with an
optional learning rate of its own; every other part is frozen."""

from __future__ import annotations

import dataclasses

WEIGHT_DTYPES = ("float32", "bfloat16", "keep")
WEIGHT_DTYPE_DOC = ("dtype of the trained weights: float32 (full-precision updates; pair with fp16 or bf16 "
                    "precision), bfloat16 (half the memory), or keep them as loaded")


def train_parts(ctx, model, trained: list[str], weight_dtype: str, rates: dict[str, float]):
    """``model`` with the parts ``trained`` trainable and the rest frozen; ``rates``: part -> learning
    rate (0 = the optimizer's). Logs what trains and warns about float16 weights."""
    import torch

    from nodes.diffusers_parts import torch_dtype

    if not trained:
        raise ValueError("no part is set to train: nothing would train")
    model = dataclasses.replace(model, **ctx.own_copies("to train there", **{p: getattr(model, p) for p in trained}))
    dtypes = dict(model.dtypes)
    for name, part in model.parts().items():
        part.requires_grad_(name in trained)
        if name in trained and weight_dtype != "keep":
            part.to(torch_dtype(weight_dtype))
            dtypes[name] = weight_dtype
    half = [n for n in trained if next(getattr(model, n).parameters()).dtype == torch.float16]
    if half:
        ctx.warn(f"training float16 weights ({', '.join(half)}): updates this small round to zero; "
                 f"set weight_dtype to float32 or bfloat16")
    counts = {p: sum(w.numel() for w in getattr(model, p).parameters()) for p in trained}
    ctx.log("fine-tuning " + ", ".join(
        f"{p} ({counts[p]:,} weights, lr {rates.get(p) or 'of the optimizer'})" for p in trained))
    return dataclasses.replace(model, dtypes=dtypes, learning_rates={p: lr for p, lr in rates.items() if lr})
