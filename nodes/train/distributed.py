"""Training on several processes (``torchrun``): the process group, rank helpers and DDP for the step.

``torchrun --nproc-per-node N -m runtime run GRAPH`` starts N copies of the run with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` set. ``train.loop`` (``distributed: auto``) then trains with
DistributedDataParallel: rank r computes on its own batches, gradients are averaged over the ranks,
rank 0 alone runs the hooks (samples, saves, backups, EMA, TensorBoard) and reports.
``distributed: fsdp`` shards the trained parts over the ranks instead (``fsdp.FSDPParts``).

No torch import at module level: the CLI imports this before it knows a run needs torch.
"""

from __future__ import annotations

import contextlib
import os

MODES = ("auto", "off", "ddp", "fsdp")


def env_rank() -> int:
    """This process's rank as torchrun says it (0 when not under torchrun)."""
    return _env_int("RANK", 0)


def env_world() -> int:
    """The number of processes torchrun started (1 when not under torchrun)."""
    return _env_int("WORLD_SIZE", 1)


def env_local_rank() -> int:
    """This process's rank on its machine (its GPU index)."""
    return _env_int("LOCAL_RANK", 0)


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        raise ValueError(f"the environment variable {name}={os.environ[name]!r} is not a number "
                         "(torchrun sets it)") from None


def launched() -> bool:
    """Started by torchrun (or an equivalent launcher) with more than one process."""
    return env_world() > 1


def wanted(mode: str) -> bool:
    """Whether train.loop's ``distributed`` param asks for DDP or FSDP here: ``auto`` = under torchrun
    with WORLD_SIZE > 1 (or inside an initialised process group of more than one rank)."""
    if mode == "off":
        return False
    if mode in ("ddp", "fsdp"):
        return True
    return launched() or (active() and world_size() > 1)


def active() -> bool:
    """A process group is initialised (no torch import when torch was never loaded)."""
    import sys

    if "torch" not in sys.modules:
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank in the process group (0 without one)."""
    if active():
        import torch.distributed as dist

        return dist.get_rank()
    return 0


def world_size() -> int:
    """Processes in the group (1 without one)."""
    if active():
        import torch.distributed as dist

        return dist.get_world_size()
    return 1


def is_main() -> bool:
    """True on rank 0 and when not distributed: the process that writes files and events."""
    return rank() == 0


def backend_for(device_type: str) -> str:
    """The collective backend for a training device: NCCL for CUDA (gloo beside it for CPU tensors),
    gloo for the CPU."""
    return "cpu:gloo,cuda:nccl" if device_type == "cuda" else "gloo"


def init(device_type: str | None = None, timeout_s: float | None = None) -> None:
    """Join the process group torchrun described (env://) unless one is initialised. The backend follows
    ``device_type`` (None: CUDA when this machine has it, else CPU)."""
    import datetime

    import torch
    import torch.distributed as dist

    if active():
        return
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed: install a torch with distributed support")
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise ValueError(f"distributed training needs {name} in the environment: start the run with "
                             "torchrun --nproc-per-node N -m runtime run GRAPH")
    if device_type is None:
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    if device_type == "cuda":
        torch.cuda.set_device(env_local_rank())
    kwargs = {"timeout": datetime.timedelta(seconds=timeout_s)} if timeout_s else {}
    dist.init_process_group(backend=backend_for(device_type), rank=env_rank(), world_size=env_world(), **kwargs)


def local_device(device):
    """The device of this rank: ``cuda:LOCAL_RANK`` for a CUDA device, the device itself otherwise."""
    import torch

    if device.type == "cuda":
        index = env_local_rank()
        if index >= torch.cuda.device_count():
            raise ValueError(f"rank {rank()} has LOCAL_RANK {index} but this machine has "
                             f"{torch.cuda.device_count()} GPU(s): start at most that many processes per machine")
        return torch.device("cuda", index)
    return device


def barrier() -> None:
    """Wait until every rank is here (nothing without a process group)."""
    if active():
        import torch.distributed as dist

        dist.barrier()


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any rank (a collective: every rank must call it)."""
    if not active():
        return bool(flag)
    import torch
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def mean_over_ranks(value: float) -> float:
    """The mean of ``value`` over the ranks (a collective)."""
    if not active():
        return value
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / dist.get_world_size()


def broadcast_object(value):
    """Rank 0's ``value`` on every rank (a collective)."""
    if not active():
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


_WRAPPER = None


def part_wrapper():
    """DistributedDataParallel that answers what it lacks from the module it wraps (``unet.config``,
    ``unet.conv_in``, ``unet.dtype``), since a bundle reads its parts' attributes while the wrapper
    stands in for them; calling it runs DDP's forward (the gradient sync)."""
    global _WRAPPER
    if _WRAPPER is None:
        from torch.nn.parallel import DistributedDataParallel

        class PartDDP(DistributedDataParallel):
            def __getattr__(self, name):
                try:
                    return super().__getattr__(name)
                except AttributeError:
                    if name == "module":
                        raise
                    return getattr(self.module, name)

        _WRAPPER = PartDDP
    return _WRAPPER


def parallel_parts(mode: str, model, device):
    """The wrappers ``train.loop`` trains ``model``'s trained parts through for its ``distributed`` mode:
    ``fsdp``: the parts sharded in place (``fsdp.FSDPParts``; build the optimizer after this), else DDP."""
    if mode == "fsdp":
        from .fsdp import FSDPParts

        return FSDPParts(model, device)
    return DDPParts(model, device)


class DDPParts:
    """The trained parts of a model bundle, each wrapped in DistributedDataParallel.

    The bundle's ``predict`` calls its parts by attribute (``model.unet(...)``), so ``step()`` puts the
    wrappers in those attributes for the forward and backward of one micro-batch and puts the modules
    back after: hooks, savers and backups see the original modules with unchanged parameter names.
    Calling the module itself instead of the wrapper would skip the gradient sync silently.
    ``find_unused_parameters`` is on: a trainable weight may get no gradient in a step (a text encoder's
    LoRA while its outputs are cached, a branch the model skips)."""

    def __init__(self, model, device):
        DDP = part_wrapper()
        self.model = model
        ids = [device.index] if device.type == "cuda" else None
        # construction broadcasts rank 0's weights and buffers: all ranks start from the same point
        self.wrappers = {name: DDP(part, device_ids=ids, find_unused_parameters=True)
                         for name, part in model.trained_parts().items()}

    @contextlib.contextmanager
    def step(self, sync: bool):
        """One micro-batch's forward and backward through the wrappers; ``sync=False`` (a non-final
        micro-batch of an accumulated update) keeps the gradients local (``no_sync``)."""
        originals = {name: getattr(self.model, name) for name in self.wrappers}
        with contextlib.ExitStack() as stack:
            if not sync:
                for ddp in self.wrappers.values():
                    stack.enter_context(ddp.no_sync())
            try:
                for name, ddp in self.wrappers.items():
                    setattr(self.model, name, ddp)
                yield
            finally:
                for name, module in originals.items():
                    setattr(self.model, name, module)

    def finish(self) -> None:
        """The end of training (every rank): nothing to gather, the modules hold the full weights."""
