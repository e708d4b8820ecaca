"""The optimizer-specific settings of ``train.optimizer``: kind, bounds and what each one does.

Every setting is optional: unset (null) means the optimizer's default (the library's, or the value
listed in the optimizer's ``defaults``). Which optimizers read a setting comes from the table
(``settings_doc``), so the one-line docs stay true when an optimizer is added.
"""

from __future__ import annotations

F, I, B = float, int, bool

#: setting -> (kind, min, max, what it does)
SETTINGS: dict[str, tuple] = {
    "weight_decay": (F, 0, None, "weight decay (decoupled for AdamW-style optimizers, L2 for adam and sgd)"),
    "beta1": (F, 0, 1, "first-moment decay (Adam beta1; tiger: its beta; muon: its auxiliary AdamW)"),
    "beta2": (F, 0, 1, "second-moment decay (Adam beta2; muon: its auxiliary AdamW)"),
    "beta3": (F, 0, 1, "third decay: AdEMAMix/CAME slow EMA, Adan, Prodigy's d estimate"),
    "eps": (F, 0, None, "epsilon added to the denominator (adafactor/came: the first of their two epsilons)"),
    "eps2": (F, 0, None, "second epsilon (adafactor: of the RMS clip; came: of the confidence term)"),
    "momentum": (F, 0, 1, "momentum"),
    "nesterov": (B, None, None, "Nesterov momentum"),
    "dampening": (F, 0, 1, "momentum dampening"),
    "amsgrad": (B, None, None, "AMSGrad: keep the maximum of the second moments (ams_bound)"),
    "decouple": (B, None, None, "decoupled (AdamW-style) weight decay instead of L2 in the gradient"),
    "fixed_decay": (B, None, None, "weight decay not scaled by the learning rate"),
    "alpha": (F, 0, None, "AdEMAMix: weight of the slow EMA; rmsprop: smoothing constant"),
    "centered": (B, None, None, "centered RMSprop (normalise by the gradient's estimated variance)"),
    "lr_decay": (F, 0, None, "Adagrad learning-rate decay"),
    "initial_accumulator": (F, 0, None, "initial value of the squared-gradient accumulator"),
    "rectify": (B, None, None, "RAdam-style rectification of the adaptive step"),
    "degenerated_to_sgd": (B, None, None, "with rectify: SGD steps while the variance is untractable"),
    "d0": (F, 0, None, "initial step-size estimate d of the learning-rate free optimizers"),
    "d_coef": (F, 0, None, "multiplier of the estimated step size d"),
    "growth_rate": (F, 0, None, "cap on d's growth per step (unset: unbounded)"),
    "use_bias_correction": (B, None, None, "Adam bias correction in the step-size estimate"),
    "safeguard_warmup": (B, None, None, "Prodigy: keep d from growing too fast during LR warmup"),
    "slice_p": (I, 1, None, "estimate d from every p-th weight only (less memory; OneTrainer uses 11)"),
    "no_prox": (B, None, None, "D-Adapt Adan: plain instead of proximal weight decay"),
    "warmup_steps": (I, 0, None, "the schedule-free optimizer's own linear LR warmup, in updates"),
    "r": (F, 0, None, "schedule-free: polynomial weighting power of the average"),
    "weight_lr_power": (F, 0, None, "schedule-free: power of the LR in the averaging weights"),
    "weight_decay_by_lr": (B, None, None, "scale weight decay by the adapted learning rate d*lr"),
    "d_limiter": (B, None, None, "limit d's growth early in training (prodigy-plus)"),
    "prodigy_steps": (I, 0, None, "stop adapting d after this many steps (0: never)"),
    "schedulefree_c": (F, 0, None, "schedule-free averaging constant c (0: off, the usual 1/t average)"),
    "split_groups": (B, None, None, "one d per parameter group (per part) instead of one shared d"),
    "split_groups_mean": (B, None, None, "with split_groups: use the mean d of all groups"),
    "factored": (B, None, None, "factored second moment (Adafactor-style, less memory)"),
    "factored_fp32": (B, None, None, "keep the factored second moment in float32"),
    "use_stableadamw": (B, None, None, "StableAdamW update clipping (replaces gradient clipping)"),
    "use_schedulefree": (B, None, None, "schedule-free averaging (off: plain Prodigy with its extras)"),
    "use_speed": (B, None, None, "the SPEED step-size estimator instead of Prodigy's"),
    "stochastic_rounding": (B, None, None, "stochastic rounding when the weights are bfloat16"),
    "use_cautious": (B, None, None, "cautious updates: skip components whose sign opposes the gradient"),
    "use_grams": (B, None, None, "Grams: the update takes the gradient's sign"),
    "use_adopt": (B, None, None, "ADOPT-style update (normalise by the previous second moment)"),
    "use_orthograd": (B, None, None, "OrthoGrad: remove the gradient component parallel to the weights"),
    "use_focus": (B, None, None, "the FOCUS update rule"),
    "clip_threshold": (F, 0, None, "clip the update's RMS to this"),
    "decay_rate": (F, None, None, "Adafactor: exponent of the second-moment decay (-0.8)"),
    "scale_parameter": (B, None, None, "Adafactor: scale the step by the weights' RMS"),
    "relative_step": (B, None, None, "Adafactor: its own time-dependent LR, lr ignored (pair with the "
                                      "adafactor schedule)"),
    "warmup_init": (B, None, None, "Adafactor: with relative_step, warm the LR up from 0"),
    "t_alpha_beta3": (I, 1, None, "AdEMAMix: warm alpha and beta3 up over this many steps (unset: none)"),
    "k": (I, 1, None, "Aida: number of projections"),
    "xi": (F, 0, None, "Aida: projection stability term"),
    "trust_coefficient": (F, 0, None, "LARS trust coefficient"),
    "max_unorm": (F, 0, None, "bitsandbytes LAMB/LARS: clip the update norm relative to the weights"),
    "min_8bit_size": (I, 1, None, "bitsandbytes: tensors smaller than this keep 32-bit state"),
    "paged": (B, None, None, "bitsandbytes: paged state that spills to CPU memory under pressure (CUDA)"),
    "ns_steps": (I, 1, None, "Muon: Newton-Schulz iterations of the orthogonalisation"),
    "use_adjusted_lr": (B, None, None, "Muon: scale the update by the matrix shape (Moonlight)"),
    "muon_adam_lr": (F, 0, None, "Muon: learning rate of the auxiliary AdamW for the 1-D weights (unset: lr; "
                                 "per-part rates scale with it)"),
    "use_triton": (B, None, None, "lion: its Triton CUDA kernel"),
}


def settings_doc(setting: str, readers: list[str], everyone: list[str]) -> str:
    """The one-line doc of ``setting``: what it does and which optimizers read it."""
    what = SETTINGS[setting][3]
    if set(readers) == set(everyone):
        who = "every optimizer"
    elif len(readers) > len(everyone) / 2:
        who = "all but " + ", ".join(n for n in everyone if n not in readers)
    else:
        who = ", ".join(readers)
    return f"{what}; unset: the optimizer's default ({who})"
