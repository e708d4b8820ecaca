"""FSDP for ``train.loop``'s ``distributed: fsdp``: torch's ``fully_shard`` (FSDP2) over the trained parts.

Each trained part is sharded over the ranks block by block (the children of its lists of repeated
blocks: transformer layers, UNet resnets and attentions), then as a whole: every rank keeps 1/N of
the part's weights, gradients and optimizer state, and gathers a block's weights only while it runs.
``fully_shard`` changes the modules in place, so the bundle calls its parts as usual.

Backups are sharded too (``save_sharded``/``load_sharded``: torch.distributed.checkpoint, every rank
writes its share); at the end ``finish`` gathers the full weights onto rank 0's model for the savers.
Hooks that need the whole model on rank 0 during training are refused by ``check_fsdp`` before a run.

No torch import at module level (``check_fsdp`` runs in the editor).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from runtime.backups import SHARDED_DIR  # the folder of a backup that holds the shards

#: hook nodes that work under FSDP: backups (written by every rank) and metrics-only logging
FSDP_HOOKS = ("train.backup_hook", "train.tensorboard")


#: optimizers verified to train sharded weights (2 gloo ranks equal one process): torch's
FSDP_OPTIMIZERS = ("adamw", "adam", "sgd", "adagrad", "rmsprop")
#: optimizers whose fused kernel torch's DTensor implements (sgd's and adagrad's it does not)
DTENSOR_FUSED = ("adamw", "adam")


def check_fsdp(c, precision: str, kernel: str = "auto") -> None:
    """train.loop's check under ``distributed: fsdp``: hooks that run the whole model on rank 0 alone
    (previews, periodic saves, EMA, validation) cannot while its weights are sharded; fp16's gradient
    scaler would see one rank's share of the gradients; an optimizer must handle sharded weights."""
    for view in c.linked("hooks"):
        if view.spec.type_id not in FSDP_HOOKS:
            c.error(f"hook {view.id!r} ({view.spec.type_id}) cannot run under distributed: fsdp (rank 0 alone "
                    "does not hold the sharded weights): save with saver nodes after train.loop, keep backups, "
                    "or use distributed: ddp", input="hooks")
    if precision == "fp16":
        c.error("precision fp16 is not supported with distributed: fsdp (its gradient scaler would check one "
                "rank's share of the gradients): use bf16 or fp32", param="precision")
    optimizers = [v for v in c.linked("optimizer") if v.spec.type_id == "train.optimizer"]
    name = optimizers[0].params.get("name") if optimizers else None
    if name is None or name in FSDP_OPTIMIZERS:
        if kernel == "fused" and name not in (None, *DTENSOR_FUSED):
            c.error(f"optimizer_kernel fused: torch has no fused {name} step for sharded weights (distributed: "
                    "fsdp); use auto or foreach", param="optimizer_kernel")
        return
    known = ", ".join(FSDP_OPTIMIZERS)
    if name == "adafactor" or name.endswith("8bit"):
        c.error(f"optimizer {name!r} ({optimizers[0].id!r}) cannot step sharded weights (distributed: fsdp): "
                f"use {known}, or distributed: ddp", input="optimizer")
    else:
        c.warn(f"optimizer {name!r} ({optimizers[0].id!r}) is not tested with sharded weights (distributed: "
               f"fsdp); {known} are", input="optimizer")


def repeated_blocks(module) -> list:
    """The blocks FSDP shards one by one: the children (with weights) of the outermost ``nn.ModuleList``s
    whose children share one class (a mixed list, e.g. a UNet's down blocks, is searched inside)."""
    import torch.nn as nn

    found = []

    def walk(m):
        for child in m.children():
            if isinstance(child, nn.ModuleList) and len({type(b) for b in child}) == 1:
                found.extend(b for b in child if next(b.parameters(), None) is not None)
            else:
                walk(child)

    walk(module)
    return found


class FSDPParts:
    """The trained parts of a model bundle sharded with ``fully_shard`` (the interface of
    ``distributed.DDPParts``: ``step(sync)``, plus sharded backups and ``finish``).

    All ranks start from rank 0's weights (broadcast before sharding). The optimizer must be built
    after this (sharding replaces the parameters with DTensors)."""

    def __init__(self, model, device):
        import torch.nn as nn
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        from . import distributed

        self.model = model
        self.parts = dict(model.trained_parts())
        self.main = distributed.is_main()
        mesh = init_device_mesh(device.type, (distributed.world_size(),))
        # rank 0 keeps an empty copy of each part (weights on the meta device) to receive the full weights
        # at the end: un-sharding in place would need FSDP's private state
        self.skeletons = {name: _skeleton(part) for name, part in self.parts.items()} if self.main else {}
        for part in self.parts.values():
            _broadcast_from_rank0(part)
            for block in repeated_blocks(part):
                fully_shard(block, mesh=mesh)
            fully_shard(part, mesh=mesh)
        self.container = nn.ModuleDict(self.parts)  # one module over the parts for the state-dict helpers

    @contextlib.contextmanager
    def step(self, sync: bool):
        """One micro-batch's forward and backward; ``sync=False`` (a non-final micro-batch of an accumulated
        update) keeps the unsharded gradients local instead of reduce-scattering them."""
        for part in self.parts.values():
            part.set_requires_gradient_sync(sync)
        try:
            yield
        finally:
            for part in self.parts.values():
                part.set_requires_gradient_sync(True)

    def _options(self, **kw):
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(ignore_frozen_params=True, **kw)  # frozen weights come from the base model

    def save_sharded(self, folder, optimizer) -> Path:
        """Write the trainable weights and ``optimizer``'s state to ``folder/sharded`` (a collective:
        every rank writes its share, with the same ``folder``). Returns that folder."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        from .distributed import any_rank

        # rank 0 made the folder: a rank that cannot see it is on a machine with a disk of its own
        if any_rank(not Path(folder).is_dir()):
            raise RuntimeError(f"a distributed: fsdp backup is written by every rank into one folder, and some rank "
                               f"cannot see {folder}: on several machines put the runs folder on a filesystem "
                               "they all share")
        target = Path(folder) / SHARDED_DIR
        weights, optim = get_state_dict(self.container, optimizer, options=self._options())
        dcp.save({"model": weights, "optimizer": optim}, storage_writer=dcp.FileSystemWriter(str(target)))
        return target

    def load_sharded(self, folder, optimizer) -> None:
        """Restore the trainable weights and ``optimizer``'s state from ``folder/sharded`` (a collective;
        train.loop resumes a backup only on the number of ranks that wrote it, since its data position is
        per rank). A missing or unfitting one raises ValueError naming the folder, on every rank."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        from .distributed import any_rank

        source = Path(folder) / SHARDED_DIR
        if any_rank(not (source / ".metadata").is_file()):
            raise ValueError(f"backup {folder} has no sharded state ({SHARDED_DIR}/.metadata): it was not written "
                             "by a distributed: fsdp run (resume it with the distributed mode that wrote it), or, on several "
                             "machines, is not on a filesystem they all share")
        weights, optim = get_state_dict(self.container, optimizer, options=self._options())
        reader = SafeReader(str(source))
        _check_keys(folder, weights, reader.read_metadata())
        state = {"model": weights, "optimizer": optim}
        try:
            dcp.load(state, storage_reader=reader)
        except Exception as e:  # DCP gathers the ranks' errors; the first line says what did not fit
            from runtime.errors import first_line

            raise ValueError(f"backup {folder}: its sharded state does not fit this graph's training state "
                             f"({first_line(e)}); resume with the graph the backup was made from") from None
        # the frozen weights are not in the backup (they come from the base model): not strict
        set_state_dict(self.container, optimizer, model_state_dict=state["model"],
                       optim_state_dict=state["optimizer"], options=self._options(strict=False))

    def finish(self) -> None:
        """Gather the full trained weights (a collective: every rank calls it at the end of training) and
        put them, as ordinary CPU tensors, in rank 0's model, for the savers and samplers after train.loop.
        The other ranks keep their sharded parts."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(self.container, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not self.main:
            return
        for name, part in self.parts.items():
            skeleton = self.skeletons[name]
            prefix = f"{name}."
            skeleton.load_state_dict({k[len(prefix):]: v for k, v in full.items() if k.startswith(prefix)},
                                     strict=True, assign=True)
            _copy_unsaved_buffers(part, skeleton)
            skeleton.train(part.training)
            setattr(self.model, name, skeleton)
        self.parts = {}


def _check_keys(folder, weights: dict, metadata) -> None:
    """The backup holds exactly this graph's trainable weights (named as DCP saved them: ``model.<part>...``)."""
    saved = {k[len("model."):] for k in metadata.state_dict_metadata if k.startswith("model.")}
    missing, unexpected = sorted(set(weights) - saved), sorted(saved - set(weights))
    if missing or unexpected:
        raise ValueError(f"backup {folder}: its sharded state does not fit this graph's trainable weights: "
                         f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
                         f"(e.g. {unexpected[:3]}); resume with the graph the backup was made from")


def _skeleton(part):
    """A copy of ``part`` whose parameters are on the meta device (no memory); buffers are copied."""
    import copy

    import torch

    memo = {id(p): torch.nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
            for p in part.parameters()}
    return copy.deepcopy(part, memo)


def _copy_unsaved_buffers(source, target) -> None:
    """The buffers a state dict leaves out (``persistent=False``), from the trained part, on the CPU."""
    saved = set(target.state_dict())
    for name, buf in source.named_buffers():
        if name not in saved:
            owner, _, leaf = name.rpartition(".")
            setattr(target.get_submodule(owner), leaf, buf.detach().to("cpu").clone())


def _broadcast_from_rank0(part) -> None:
    """Rank 0's parameters and buffers on every rank (as DDP's construction does)."""
    import torch
    import torch.distributed as dist

    with torch.no_grad():
        for t in [*part.parameters(), *part.buffers()]:
            dist.broadcast(t.data, src=0)


# -- loading DCP metadata without unpickling arbitrary objects ---------------------------------------------

_SAFE_GLOBALS = {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch.serialization", "_get_layout"),
    ("torch", "Size"),
    ("collections", "OrderedDict"),
    ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"), ("pathlib", "PurePosixPath"),
    ("pathlib", "PureWindowsPath"),
}


def _safe_global(module: str, name: str):
    """The object a DCP ``.metadata`` pickle may name: DCP's metadata classes, torch dtypes and a few
    plain types; anything else is refused."""
    import importlib

    import torch

    if module == "torch.distributed.checkpoint.metadata" or (module, name) in _SAFE_GLOBALS:
        obj = getattr(importlib.import_module(module), name, None)
        if obj is not None and (module != "torch.distributed.checkpoint.metadata" or isinstance(obj, type)):
            return obj
    if module == "torch" and isinstance(getattr(torch, name, None), (torch.dtype, torch.layout,
                                                                     torch.memory_format)):
        return getattr(torch, name)
    import pickle

    raise pickle.UnpicklingError(f"the checkpoint metadata names {module}.{name}, which a DCP checkpoint "
                                 "does not hold")


def SafeReader(path: str):
    """DCP's FileSystemReader whose ``.metadata`` is read with an allow-list unpickler (DCP itself uses
    plain ``pickle.load``); the tensors are read with ``torch.load(weights_only=True)`` as DCP does."""
    import pickle

    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import StorageMeta

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            return _safe_global(module, name)

    class Reader(dcp.FileSystemReader):
        def read_metadata(self, *args, **kwargs):
            rank = kwargs.get("rank")
            name = ".metadata" if rank is None else f"__{rank}.metadata"
            with open(Path(self.path) / name, "rb") as f:
                metadata = Unpickler(f).load()
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return Reader(path)
