"""What a running node sees: events, cancellation, commands, its workspace, and who else uses its inputs."""

from __future__ import annotations

import contextlib
import copy
import time
from pathlib import Path
from typing import Any as _Any, Callable, Iterator

from .control import CancelToken, CommandInbox
from .errors import Cancelled
from .events import EventBus


class RunContext:
    """Passed as ``ctx`` to ``run``. One per node, per run."""

    def __init__(
        self,
        node_id: str,
        type_id: str,
        bus: EventBus,
        cancel: CancelToken,
        inbox: CommandInbox,
        workspace: Path,
        graph_name: str = "",
        resume: Path | None = None,
        users: Callable[[_Any], list[str]] | None = None,
    ):
        self.node_id = node_id
        self.type_id = type_id
        self.bus = bus
        self.cancel = cancel
        self.inbox = inbox
        self.workspace = workspace
        self.graph_name = graph_name
        #: a backup folder to continue from (``nodetrainer run --resume``); the training loop reads it
        self.resume = resume
        #: the executor's answer to ``users_of`` (None: a node run on its own, which nothing shares)
        self._users = users
        self._t0: float | None = None
        self._step0 = 0

    # -- events ----------------------------------------------------------------
    def progress(self, step: int, total: int | None = None, **metrics: _Any) -> None:
        """Report progress; rate (steps/s) and ETA are filled in unless given."""
        now = time.monotonic()
        if self._t0 is None:
            self._t0, self._step0 = now, step
        elapsed = now - self._t0
        done = step - self._step0
        if "rate" not in metrics and elapsed > 0 and done > 0:
            metrics["rate"] = round(done / elapsed, 3)
        if "eta" not in metrics and total and metrics.get("rate"):
            metrics["eta"] = round(max(0.0, (total - step) / metrics["rate"]), 1)
        self.bus.emit("progress", node=self.node_id, step=step, total=total, **metrics)

    def log(self, message: str, level: str = "info", **extra: _Any) -> None:
        self.bus.emit("log", node=self.node_id, level=level, message=message, **extra)

    def warn(self, message: str, **extra: _Any) -> None:
        self.log(message, "warning", **extra)

    def sample(self, paths: list[str | Path], prompt: str = "", **extra: _Any) -> None:
        self.bus.emit("sample", node=self.node_id, paths=[str(p) for p in paths], prompt=prompt, **extra)

    def saved(self, path: str | Path, format: str, **extra: _Any) -> None:
        self.bus.emit("saved", node=self.node_id, path=str(path), format=format, **extra)

    # -- randomness ----------------------------------------------------------------
    def seed_for(self, seed: int, *salt: int | str) -> int:
        """A seed for this node from ``seed`` (a seed param, the run's seed) and the node id, plus
        optional salt (a part name, a counter): two nodes with the same seed draw different numbers."""
        from .data.item import mix_seed, stable_id

        parts = [stable_id(s) if isinstance(s, str) else int(s) for s in salt]
        return mix_seed(int(seed), stable_id(self.node_id), *parts)

    def torch_generator(self, seed: int, *salt: int | str, device: str = "cpu"):
        """A ``torch.Generator`` seeded with ``seed_for(seed, *salt)``."""
        import torch

        return torch.Generator(device).manual_seed(self.seed_for(seed, *salt))

    @contextlib.contextmanager
    def torch_seeded(self, seed: int, *salt: int | str) -> Iterator[None]:
        """Run library code that draws from torch's global generator (peft's adapter init, dropout)
        with it seeded by ``seed_for(seed, *salt)``; the global state is restored afterwards."""
        import torch

        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed_for(seed, *salt))
            yield

    # -- sharing ---------------------------------------------------------------
    def users_of(self, obj: _Any) -> tuple[str, ...]:
        """Ids of the other nodes of this run that were or will be handed ``obj`` (as an input value or a
        field of one, e.g. a model's UNet) and may still use it once this node returns. Empty: this node
        is the only one that can see ``obj`` from now on, so it may change it in place."""
        return tuple(self._users(obj)) if self._users is not None else ()

    def own_copies(self, why: str = "to change there", **objects: _Any) -> dict[str, _Any]:
        """``objects`` (name -> object) this node is about to change in place: each one that other nodes
        still use (``users_of``) is replaced by a deep copy, the others are returned as they are. Logs one
        line naming what was copied, its size and its other users."""
        out, notes = dict(objects), []
        for name, obj in objects.items():
            users = self.users_of(obj)
            if users:
                out[name] = copy.deepcopy(obj)
                size = _size_text(_nbytes(obj))
                notes.append(f"the {name} ({f'{size}; ' if size else ''}also used by {', '.join(users)})")
        if notes:
            self.log(f"copied {' and '.join(notes)} {why}, leaving what the other nodes see unchanged")
        return out

    # -- ranks -----------------------------------------------------------------
    @property
    def rank(self) -> int:
        """This process's rank when several train together (torchrun; the CLI joins their process group),
        else 0."""
        import sys

        dist = sys.modules.get("torch.distributed")  # torch is not imported for a run that never needs it
        return dist.get_rank() if dist is not None and dist.is_available() and dist.is_initialized() else 0

    @property
    def is_main(self) -> bool:
        """True on rank 0 (and without ranks): the process whose files and events count; a node that
        writes files or makes previews does so only where this is true."""
        return self.rank == 0

    # -- control ---------------------------------------------------------------
    @property
    def cancelled(self) -> bool:
        return self.cancel.requested

    def check_cancelled(self) -> None:
        """Raise ``Cancelled`` if a stop was requested."""
        if self.cancel.requested:
            raise Cancelled(self.cancel.reason)

    def commands(self) -> list[dict]:
        """Commands received since the last call (``stop``, ``sample``, ``save``, ``backup``)."""
        return self.inbox.drain()

    # -- files -----------------------------------------------------------------
    def path(self, *parts: str) -> Path:
        """A path inside the run's workspace; its folder is created. A path that would leave the
        workspace (absolute, ``..``, a link pointing out) is refused with ``ValueError``."""
        p = self.workspace.joinpath(*parts)
        root = self.workspace.resolve()
        target = p.resolve()
        if target != root and root not in target.parents:
            raise ValueError(f"{'/'.join(map(str, parts))!r} is outside the run folder {self.workspace}")
        p.parent.mkdir(parents=True, exist_ok=True)
        return p


def _nbytes(obj: _Any) -> int | None:
    """Bytes held by a torch module's parameters and buffers (None for other objects)."""
    total, found = 0, False
    for attr in ("parameters", "buffers"):
        tensors = getattr(obj, attr, None)
        if callable(tensors):
            found = True
            total += sum(t.numel() * t.element_size() for t in tensors())
    return total if found else None


def _size_text(n: int | None) -> str:
    if n is None:
        return ""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"
