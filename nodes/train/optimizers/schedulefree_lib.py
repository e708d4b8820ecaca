"""Schedule-free optimizers (``schedulefree``): an average of the iterates replaces the LR schedule.
The weights they train on are not the ones to use: ``nodes.train.schedule_free`` switches them."""

from __future__ import annotations

from .entry import Entry

PKG = {"package": "schedulefree", "pip": "schedulefree", "schedule_free": True, "kernels": ("foreach", "for-loop")}
AVERAGE = {"weight_decay": "weight_decay", "r": "r", "weight_lr_power": "weight_lr_power"}

OPTIMIZERS = {
    "schedule_free_adamw": Entry("schedulefree:AdamWScheduleFree",
                                 {"beta1": "betas[0]", "beta2": "betas[1]", "eps": "eps",
                                  "warmup_steps": "warmup_steps", **AVERAGE},
                                 defaults={"weight_decay": 0.01}, summary="schedule-free AdamW (schedulefree)", **PKG),
    "schedule_free_sgd": Entry("schedulefree:SGDScheduleFree",
                               {"momentum": "momentum", "warmup_steps": "warmup_steps", **AVERAGE},
                               summary="schedule-free SGD (schedulefree)", **PKG),
    "schedule_free_radam": Entry("schedulefree:RAdamScheduleFree",
                                 {"beta1": "betas[0]", "beta2": "betas[1]", "eps": "eps", **AVERAGE},
                                 summary="schedule-free RAdam, no warmup needed (schedulefree)", **PKG),
}
