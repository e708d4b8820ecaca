"""Optimizers that ship with torch, and transformers' Adafactor."""

from __future__ import annotations

from .entry import Entry

ADAM = {"beta1": "betas[0]", "beta2": "betas[1]", "eps": "eps", "weight_decay": "weight_decay"}
ALL_KERNELS = ("fused", "foreach", "for-loop")


def _adafactor_lr(kwargs: dict) -> dict:
    # transformers refuses a learning rate next to relative_step: Adafactor then computes its own
    return {**kwargs, "lr": None} if kwargs.get("relative_step") else kwargs


OPTIMIZERS = {
    "adamw": Entry("torch.optim:AdamW", {**ADAM, "amsgrad": "amsgrad"}, kernels=ALL_KERNELS,
                   summary="AdamW (torch)"),
    # nodetrainer's node always gave adam, sgd and adafactor weight decay 0.01: kept for saved graphs
    "adam": Entry("torch.optim:Adam", {**ADAM, "amsgrad": "amsgrad"}, defaults={"weight_decay": 0.01},
                  kernels=ALL_KERNELS, summary="Adam with L2 weight decay (torch)"),
    "sgd": Entry("torch.optim:SGD", {"weight_decay": "weight_decay", "momentum": "momentum",
                                     "nesterov": "nesterov", "dampening": "dampening"},
                 defaults={"weight_decay": 0.01}, kernels=ALL_KERNELS, summary="SGD with momentum (torch)"),
    "adafactor": Entry("transformers.optimization:Adafactor",
                       {"eps": "eps[0]", "eps2": "eps[1]", "beta1": "beta1", "weight_decay": "weight_decay",
                        "clip_threshold": "clip_threshold", "decay_rate": "decay_rate",
                        "scale_parameter": "scale_parameter", "relative_step": "relative_step",
                        "warmup_init": "warmup_init"},
                       # a fixed learning rate by default, so the LR schedule node stays in charge
                       defaults={"weight_decay": 0.01, "scale_parameter": False, "relative_step": False,
                                 "warmup_init": False},
                       finish=_adafactor_lr, summary="Adafactor (transformers): factored second moments"),
    "adagrad": Entry("torch.optim:Adagrad", {"weight_decay": "weight_decay", "eps": "eps", "lr_decay": "lr_decay",
                                             "initial_accumulator": "initial_accumulator_value"},
                     kernels=ALL_KERNELS, summary="Adagrad (torch)"),
    "rmsprop": Entry("torch.optim:RMSprop", {"weight_decay": "weight_decay", "eps": "eps", "alpha": "alpha",
                                             "momentum": "momentum", "centered": "centered"},
                     kernels=("foreach", "for-loop"), summary="RMSprop (torch)"),
}
