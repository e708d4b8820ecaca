"""Optimizers from the pytorch-optimizer collection (``pytorch_optimizer``)."""

from __future__ import annotations

from .entry import Entry

PKG = {"package": "pytorch_optimizer", "pip": "pytorch-optimizer"}
DECAY = {"weight_decay": "weight_decay", "decouple": "weight_decouple", "fixed_decay": "fixed_decay"}
BETAS = {"beta1": "betas[0]", "beta2": "betas[1]"}
LOOPS = ("foreach", "for-loop")


def po(cls: str, settings: dict, summary: str, **kw) -> Entry:
    return Entry(f"pytorch_optimizer:{cls}", settings, summary=f"{summary} (pytorch-optimizer)", **PKG, **kw)


def muon_groups(groups: list[dict], lr: float, settings: dict) -> list[dict]:
    """Muon for the matrices (2-D and up: LoRA factors, linear and conv weights) and an auxiliary AdamW
    for the rest (biases, norms, 1-D vectors), as OneTrainer's MuonWithAuxAdam. Each group is split in
    two, so per-part learning rates stay per part; the AdamW halves run at ``muon_adam_lr`` (scaled by
    the part's rate relative to ``lr``), or the part's rate when it is unset."""
    adam_lr = settings.get("muon_adam_lr")
    out = []
    for group in groups:
        params = list(group["params"])
        rest = {k: v for k, v in group.items() if k != "params"}
        part_lr = rest.get("lr", lr)
        matrices = [p for p in params if p.ndim >= 2]
        vectors = [p for p in params if p.ndim < 2]
        if matrices:
            out.append({**rest, "params": matrices, "use_muon": True})
        if vectors:
            aux_lr = part_lr if adam_lr is None else (adam_lr * part_lr / lr if lr else adam_lr)
            out.append({**rest, "params": vectors, "use_muon": False, "lr": aux_lr})
    return out


OPTIMIZERS = {
    "came": po("CAME", {**BETAS, "beta3": "betas[2]", "eps": "eps1", "eps2": "eps2", "amsgrad": "ams_bound",
                        "clip_threshold": "clip_threshold", **DECAY},
               "CAME: confidence-guided Adafactor-like memory", defaults={"weight_decay": 0.01}, kernels=LOOPS),
    "adopt": po("ADOPT", {**BETAS, "eps": "eps", **DECAY}, "ADOPT", kernels=LOOPS),
    "ademamix": po("AdEMAMix", {**BETAS, "beta3": "betas[2]", "alpha": "alpha", "t_alpha_beta3": "t_alpha_beta3",
                                "eps": "eps", **DECAY}, "AdEMAMix: Adam with a second, slow EMA",
                   defaults={"weight_decay": 0.01}, kernels=LOOPS),
    "lamb": po("Lamb", {**BETAS, "eps": "eps", "rectify": "rectify", "degenerated_to_sgd": "degenerated_to_sgd",
                        **DECAY}, "LAMB: layer-wise trust ratio", kernels=LOOPS),
    "lars": po("LARS", {"weight_decay": "weight_decay", "momentum": "momentum", "dampening": "dampening",
                        "nesterov": "nesterov", "trust_coefficient": "trust_coefficient"},
               "LARS: layer-wise trust ratio with momentum", kernels=LOOPS),
    "muon": po("Muon", {"momentum": "momentum", "nesterov": "nesterov", "ns_steps": "ns_steps",
                        "use_adjusted_lr": "use_adjusted_lr", "beta1": "adamw_betas[0]", "beta2": "adamw_betas[1]",
                        "eps": "adamw_eps", "muon_adam_lr": "adamw_lr", "weight_decay": "weight_decay",
                        "decouple": "weight_decouple"},
               "Muon (orthogonalised momentum) for matrices, with an auxiliary AdamW for the rest",
               groups=muon_groups, kernels=LOOPS),
    "adabelief": po("AdaBelief", {**BETAS, "eps": "eps", "amsgrad": "ams_bound", "rectify": "rectify",
                                  "degenerated_to_sgd": "degenerated_to_sgd", **DECAY}, "AdaBelief", kernels=LOOPS),
    "tiger": po("Tiger", {"beta1": "beta", **DECAY}, "Tiger: sign momentum", kernels=LOOPS),
    "yogi": po("Yogi", {**BETAS, "eps": "eps", "initial_accumulator": "initial_accumulator", **DECAY}, "Yogi",
               kernels=LOOPS),
    "aida": po("Aida", {**BETAS, "eps": "eps", "k": "k", "xi": "xi", "amsgrad": "ams_bound", "rectify": "rectify",
                        "degenerated_to_sgd": "degenerated_to_sgd", **DECAY}, "Aida", kernels=LOOPS),
}
