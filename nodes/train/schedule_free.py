"""Schedule-free optimizers (schedulefree's AdamW/SGD/RAdam, Prodigy + schedule-free) train on one
sequence of weights and keep the averaged weights to use elsewhere: ``optimizer.eval()`` puts the
averaged ones in the model, ``optimizer.train()`` the training ones back.

Sampling, saving, validation and backups run inside ``inference_weights(optimizer)``; at the end of a
run the loop leaves the optimizer in eval mode (``to_inference``), so the returned model holds the
averaged weights. The training weights are copied before ``eval()`` and put back exactly after
``train()`` (the two interpolations do not round-trip bit for bit), so a sample or a backup never
changes the training trajectory.
"""

from __future__ import annotations

import contextlib


def is_schedule_free(optimizer) -> bool:
    """True for an optimizer that switches weights with ``eval()``/``train()`` (any group doing so)."""
    if optimizer is None or not callable(getattr(optimizer, "eval", None)) or \
            not callable(getattr(optimizer, "train", None)):
        return False
    return any("train_mode" in g and g.get("use_schedulefree", True) for g in optimizer.param_groups)


def in_train_mode(optimizer) -> bool:
    """True unless a schedule-free optimizer holds the averaged (eval) weights."""
    return not is_schedule_free(optimizer) or all(g.get("train_mode", True) for g in optimizer.param_groups)


def _params(optimizer) -> list:
    return [p for g in optimizer.param_groups for p in g["params"]]


@contextlib.contextmanager
def inference_weights(optimizer):
    """Within: the model holds the weights to use (schedule-free: the averaged ones); after: the exact
    training weights again. A no-op for other optimizers, and when already in eval mode."""
    if not is_schedule_free(optimizer) or not in_train_mode(optimizer):
        yield
        return
    import torch

    params = _params(optimizer)
    with torch.no_grad():
        kept = [p.detach().to("cpu", copy=True) for p in params]
    optimizer.eval()
    try:
        yield
    finally:
        optimizer.train()
        with torch.no_grad():
            for p, saved in zip(params, kept):
                p.copy_(saved.to(p.device))


def to_inference(optimizer) -> None:
    """Leave the optimizer in eval mode (the end of a run): the model keeps the weights to use."""
    if is_schedule_free(optimizer) and in_train_mode(optimizer):
        optimizer.eval()


def to_training(optimizer) -> None:
    """Back to train mode (a backup restored while it was in eval mode)."""
    if is_schedule_free(optimizer) and not in_train_mode(optimizer):
        optimizer.train()


def schedule_warning(optimizer, scheduler) -> str | None:
    """A warning when a schedule-free optimizer runs under an LR schedule other than constant without
    warmup: it averages the weights itself (OneTrainer forces a constant schedule; nodetrainer applies
    the schedule as asked and says so)."""
    if not is_schedule_free(optimizer):
        return None
    name = getattr(scheduler, "schedule_name", "constant")
    warmup = getattr(scheduler, "warmup_steps", 0)
    if name == "constant" and not warmup:
        return None
    what = f"the {name} LR schedule" + (f" with {warmup} warmup steps" if warmup else "")
    return (f"{type(optimizer).__name__} is schedule-free but runs under {what}: schedule-free optimizers "
            "expect a constant LR (set train.lr_schedule to constant; for warmup use train.optimizer's "
            "warmup_steps)")
