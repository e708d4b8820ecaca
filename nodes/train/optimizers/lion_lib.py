"""Lion (``lion_pytorch``): sign updates from an interpolated momentum; use a 3-10x smaller lr than AdamW."""

from __future__ import annotations

from .entry import Entry

OPTIMIZERS = {
    "lion": Entry("lion_pytorch:Lion", {"beta1": "betas[0]", "beta2": "betas[1]", "weight_decay": "weight_decay",
                                        "decouple": "decoupled_weight_decay", "use_triton": "use_triton"},
                  package="lion_pytorch", pip="lion-pytorch", summary="Lion (lion-pytorch)"),
}
