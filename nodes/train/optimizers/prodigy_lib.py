"""Prodigy (``prodigyopt``) and Prodigy + schedule-free (``prodigyplus``): learning-rate free, so ``lr``
is a multiplier of the estimated step size d (use 1.0)."""

from __future__ import annotations

from .entry import Entry, one_rate

PRODIGY = {"beta1": "betas[0]", "beta2": "betas[1]", "beta3": "beta3", "eps": "eps", "weight_decay": "weight_decay",
           "d0": "d0", "d_coef": "d_coef", "use_bias_correction": "use_bias_correction"}
PLUS = ("weight_decay_by_lr", "d_limiter", "prodigy_steps", "schedulefree_c", "split_groups", "split_groups_mean",
        "factored", "factored_fp32", "use_stableadamw", "use_schedulefree", "use_speed", "stochastic_rounding",
        "use_cautious", "use_grams", "use_adopt", "use_orthograd", "use_focus")

OPTIMIZERS = {
    # weight decay 0.01: what nodetrainer's node always gave it
    "prodigy": Entry("prodigyopt:Prodigy", {**PRODIGY, "decouple": "decouple", "safeguard_warmup": "safeguard_warmup",
                                            "growth_rate": "growth_rate", "slice_p": "slice_p"},
                     groups=one_rate("prodigy (prodigyopt)", "prodigy_plus_schedule_free or dadapt_adam"),
                     package="prodigyopt", pip="prodigyopt", defaults={"weight_decay": 0.01}, adaptive=True,
                     summary="Prodigy: learning-rate free Adam (prodigyopt)"),
    "prodigy_plus_schedule_free": Entry("prodigyplus:ProdigyPlusScheduleFree", {**PRODIGY, **{k: k for k in PLUS}},
                                        package="prodigyplus", pip="prodigy-plus-schedule-free", adaptive=True,
                                        schedule_free=True,
                                        summary="Prodigy + schedule-free (prodigy-plus-schedule-free)"),
}
