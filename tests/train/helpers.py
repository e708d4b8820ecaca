"""Helpers for the training-node tests (also used by tests/sd): a toy model bundle with no SD in it,
an in-memory batch source, and a runner that calls one node with a recording context."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(eq=False)
class ToyModel:
    """A family-less model: a 1x1-conv denoiser over 4-channel 'latents', conditioned on nothing."""

    net: object
    noise_scheduler: object
    prediction_type: str = "epsilon"
    progress: dict = field(default_factory=dict)
    family = "toy"
    part_names = ("net",)


def make_toy(seed: int = 0, prediction_type: str = "epsilon"):
    import torch
    from diffusers import DDPMScheduler

    from nodes.train.ddpm import DDPMBundle

    class Toy(ToyModel, DDPMBundle):
        def latents(self, batch):
            from nodes.train.bundle import require_field

            return require_field(batch, "latent", "connect a latent field").to(self.device)

        def predict(self, noisy, timesteps, batch):
            return self.net(noisy) + 0.0 * timesteps.float().mean()

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 1), torch.nn.SiLU(), torch.nn.Conv2d(8, 4, 1))
    sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                          prediction_type=prediction_type)
    return Toy(net, sched, prediction_type)


class ListBatches:
    """An in-memory BatchSource: ``n`` random latents, fixed order, ``batch_size`` per batch."""

    def __init__(self, n: int = 8, batch_size: int = 2, size: int = 4, seed: int = 0, extra: dict | None = None):
        import torch

        g = torch.Generator().manual_seed(seed)
        self.latent = torch.randn(n, 4, size, size, generator=g)
        self.batch_size = batch_size
        self.extra = extra or {}
        self.fields = ["latent", *self.extra]
        self.epochs_started: list[tuple[int, int]] = []

    def __len__(self) -> int:
        return (len(self.latent) + self.batch_size - 1) // self.batch_size

    def epoch(self, epoch: int, start: int = 0):
        self.epochs_started.append((epoch, start))
        for b in range(start, len(self)):
            sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
            batch = {"latent": self.latent[sl], "_index": list(range(len(self.latent)))[sl]}
            batch.update({k: v[sl] for k, v in self.extra.items()})
            yield batch


class NodeRunner:
    """Run a node class's ``run`` with params and a context whose events are recorded."""

    def __init__(self, workspace: Path):
        from runtime.control import CancelToken, CommandInbox
        from runtime.events import EventBus, ListSink

        self.sink = ListSink()
        self.bus = EventBus([self.sink])
        self.cancel = CancelToken()
        self.inbox = CommandInbox(self.cancel)
        self.workspace = workspace
        self.resume = None  # a backup folder handed to the context, like `nodetrainer run --resume`
        self.graph_name = "test graph"

    def ctx(self, node_id: str = "node", type_id: str = "test.node"):
        from runtime.context import RunContext

        return RunContext(node_id, type_id, self.bus, self.cancel, self.inbox, self.workspace, self.graph_name,
                          self.resume)

    @staticmethod
    def make(cls, **params):
        obj = cls()
        for name, p in cls.__node_spec__.params.items():
            value = params.pop(name, p.default)
            setattr(obj, name, p.check(value) if value is not None or not p.optional else None)
        assert not params, f"unknown params {params}"
        return obj

    def run(self, cls, node_id: str = "node", inputs: dict | None = None, **params):
        return self.make(cls, **params).run(self.ctx(node_id, cls.__node_spec__.type_id), **(inputs or {}))

    def events(self, kind: str, node: str | None = None) -> list[dict]:
        return [e for e in self.sink.of(kind) if node is None or e.get("node") == node]


def train_inputs(model, batches, lr: float = 1e-2, optimizer: str = "adamw", schedule=None, objective=None,
                 hooks=()):
    from nodes.train.objective import DiffusionObjective
    from nodes.train.optimizer import OptimizerConfig

    return {"model": model, "batches": batches, "optimizer": OptimizerConfig(optimizer, lr),
            "schedule": schedule, "objective": objective or DiffusionObjective(), "hooks": list(hooks)}
