"""bitsandbytes' 8-bit optimizers: the state is kept in 8 bits (block-wise quantised); tensors below
``min_8bit_size`` elements keep 32-bit state. They run on CUDA and, in bitsandbytes 0.50, on CPUs."""

from __future__ import annotations

from .entry import Entry

PKG = {"package": "bitsandbytes", "pip": "bitsandbytes"}
ADAM = {"beta1": "betas[0]", "beta2": "betas[1]", "eps": "eps", "weight_decay": "weight_decay",
        "min_8bit_size": "min_8bit_size"}
SGD = {"weight_decay": "weight_decay", "momentum": "momentum", "dampening": "dampening",
       "nesterov": "nesterov", "min_8bit_size": "min_8bit_size"}
PAGED = {"paged": "is_paged"}
# bitsandbytes' SGD and LARS refuse momentum 0 (they have no plain-SGD kernel)
MOMENTUM = {"momentum": 0.9}


def bnb(cls: str, settings: dict, summary: str, **kw) -> Entry:
    return Entry(f"bitsandbytes.optim:{cls}", settings, summary=f"{summary} (bitsandbytes)", **PKG, **kw)


OPTIMIZERS = {
    "adamw8bit": bnb("AdamW8bit", {**ADAM, **PAGED}, "AdamW with 8-bit state"),
    "adam8bit": bnb("Adam8bit", {**ADAM, **PAGED}, "Adam with 8-bit state"),
    "lion8bit": bnb("Lion8bit", {"beta1": "betas[0]", "beta2": "betas[1]", "weight_decay": "weight_decay",
                                 "min_8bit_size": "min_8bit_size", **PAGED}, "Lion with 8-bit state"),
    "sgd8bit": bnb("SGD8bit", SGD, "SGD with 8-bit momentum", defaults=MOMENTUM),
    "ademamix8bit": bnb("AdEMAMix8bit", {**ADAM, "beta3": "betas[2]", "alpha": "alpha", **PAGED},
                        "AdEMAMix with 8-bit state"),
    # bitsandbytes' LAMB8bit allows only max_unorm 1.0, RMSprop8bit no centered, Adagrad8bit no lr_decay
    # nor initial accumulator: those settings are not offered for them
    "lamb8bit": bnb("LAMB8bit", ADAM, "LAMB with 8-bit state"),
    "lars8bit": bnb("LARS8bit", {**SGD, "max_unorm": "max_unorm"}, "LARS with 8-bit momentum",
                    defaults=MOMENTUM),
    "rmsprop8bit": bnb("RMSprop8bit", {"weight_decay": "weight_decay", "eps": "eps", "alpha": "alpha",
                                       "momentum": "momentum", "min_8bit_size": "min_8bit_size"},
                       "RMSprop with 8-bit state"),
    "adagrad8bit": bnb("Adagrad8bit", {"weight_decay": "weight_decay", "eps": "eps", "min_8bit_size": "min_8bit_size"},
                       "Adagrad with 8-bit state"),
}
