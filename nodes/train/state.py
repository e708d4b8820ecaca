"""Everything a training run is at one moment, in one object (for hooks, backups and resume)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any as _Any


@dataclass
class TrainState:
    """Progress counters plus the stateful training objects.

    ``step`` counts optimizer updates; ``epoch_batch`` is how many batches of the
    current ``epoch`` were consumed, so a resumed run continues mid-epoch with
    ``batches.epoch(epoch, start=epoch_batch)``.
    """

    seed: int
    step: int = 0
    epoch: int = 0
    epoch_batch: int = 0
    micro_step: int = 0
    smoothed_loss: float | None = None
    optimizer: _Any = None
    lr_scheduler: _Any = None
    scaler: _Any = None
    generator: _Any = None
    history: dict = field(default_factory=dict)

    def counters(self) -> dict:
        return {"seed": self.seed, "step": self.step, "epoch": self.epoch, "epoch_batch": self.epoch_batch,
                "micro_step": self.micro_step, "smoothed_loss": self.smoothed_loss}

    def state_dict(self) -> dict:
        """Counters and the state of every stateful object (tensors only inside; safe to torch.save and
        load back with weights_only=True)."""
        import torch

        return {
            "counters": self.counters(),
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "lr_scheduler": self.lr_scheduler.state_dict() if self.lr_scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "generator": self.generator.get_state() if self.generator is not None else None,
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, data: dict) -> None:
        import torch

        for k, v in data["counters"].items():
            setattr(self, k, v)
        for name in ("optimizer", "lr_scheduler", "scaler"):
            obj = getattr(self, name)
            # empty: saved from a disabled GradScaler (an fp32 run), nothing to restore
            if obj is not None and data.get(name):
                obj.load_state_dict(data[name])
        if self.generator is not None and data.get("generator") is not None:
            self.generator.set_state(data["generator"])
        if data.get("torch_rng") is not None:
            torch.set_rng_state(data["torch_rng"])

    def rng_states(self, device=None) -> dict:
        """This process's random states: the noise generator, torch's CPU RNG, the CUDA RNG of ``device``
        (on CUDA only) and Python's ``random`` (tensors, numbers and tuples: safe with weights_only)."""
        import random

        import torch

        states = {"generator": self.generator.get_state() if self.generator is not None else None,
                  "torch_rng": torch.get_rng_state(), "python_rng": random.getstate()}
        if getattr(device, "type", None) == "cuda":
            states["cuda_rng"] = torch.cuda.get_rng_state(device)
        return states

    def load_rng_states(self, states: dict, device=None) -> None:
        """Restore what ``rng_states`` returned (the CUDA RNG when both it and ``device`` are CUDA's)."""
        import random

        import torch

        if self.generator is not None and states.get("generator") is not None:
            self.generator.set_state(states["generator"])
        torch.set_rng_state(states["torch_rng"])
        random.setstate(as_tuple(states["python_rng"]))
        if states.get("cuda_rng") is not None and getattr(device, "type", None) == "cuda":
            torch.cuda.set_rng_state(states["cuda_rng"], device)


def as_tuple(value):
    """Python's random state back from what a torch file holds (its tuples may come back as lists)."""
    return tuple(as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value
