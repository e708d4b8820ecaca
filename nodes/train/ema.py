"""EMA of the trainable weights, as a hook node.

diffusers' ``EMAModel`` keeps its shadow weights on the weights' own device; this
one can keep them on the CPU (to spare GPU memory) as OneTrainer does, so it is
written here, with the same decay warm-up: ``min(decay, (1 + t) / (10 + t))``.
"""

from __future__ import annotations

import contextlib

from runtime import Choice, Output, Param, node
from runtime.port_types import Hook

from .hooks import TrainHook


class EmaHook(TrainHook):
    """Shadow weights updated every ``interval`` steps; used by sample and save hooks, and
    copied into the model at the end when ``apply_at_end``."""

    priority = 0  # before the hooks that read it

    def __init__(self, key: str, decay: float, interval: int, device: str, apply_at_end: bool):
        self.key = key
        self.decay = decay
        self.interval = interval
        self.device = device
        self.apply_at_end = apply_at_end
        self.shadow: list = []
        self.updates = 0

    def _params(self, run):
        return run.model.trainable_parameters()

    def on_start(self, run) -> None:
        device = "cpu" if self.device == "cpu" else run.device
        self.shadow = [p.detach().to(device, copy=True).float() for p in self._params(run)]
        run.ema = self

    def on_step_end(self, run, loss: float) -> None:
        import torch

        if run.state.step % self.interval:
            return
        self.updates += 1
        t = self.updates
        decay = min(self.decay, (1 + t) / (10 + t))
        with torch.no_grad():
            live = [p.detach().to(s.device, torch.float32) for s, p in zip(self.shadow, self._params(run))]
            torch._foreach_lerp_(self.shadow, live, 1.0 - decay)

    @contextlib.contextmanager
    def applied(self, model):
        """The model holds the EMA weights inside the block, its own weights again after it."""
        import torch

        params = model.trainable_parameters()
        kept = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, s in zip(params, self.shadow):
                p.copy_(s.to(p.device, p.dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for p, k in zip(params, kept):
                    p.copy_(k)

    def on_end(self, run, stopped: bool) -> None:
        import torch

        if self.apply_at_end:
            with torch.no_grad():
                for p, s in zip(self._params(run), self.shadow):
                    p.copy_(s.to(p.device, p.dtype))
            run.ctx.log("the trained model now holds the EMA weights")

    def state_dict(self) -> dict:
        return {"shadow": [s.to("cpu") for s in self.shadow], "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.shadow = [s.to(old.device) for s, old in zip(state["shadow"], self.shadow)]
        self.updates = int(state["updates"])


@node("train.ema", title="EMA", category="Training")
class Ema:
    """Keep an exponential moving average of the trainable weights. Sample hooks then sample with
    the EMA weights (and without), save hooks save them, and the trained model ends with them."""

    hook = Output(Hook, doc="connect to train.loop's hooks")
    decay = Param(float, 0.999, min=0, max=1, doc="weight of the past (0.999 ~ the last 1000 updates)")
    interval = Param(int, 1, min=1, doc="update the average every this many optimizer steps")
    device = Param(Choice("cpu", "train"), "cpu", doc="where the averaged weights live (cpu spares GPU memory)")
    apply_at_end = Param(bool, True, doc="the trained model gets the EMA weights when training ends")

    def run(self, ctx):
        return {"hook": EmaHook(ctx.node_id, self.decay, self.interval, self.device, self.apply_at_end)}
