"""Backups of a training run, and resuming from one.

A backup folder ``<run folder>/backups/step-000123/`` holds:

- ``trainable.safetensors``: the trainable weights by name (with a schedule-free optimizer: the
  averaged weights, the ones to use; its exact training weights are in ``state.pt``);
- ``state.pt``: counters (step, epoch, position in the epoch), optimizer, LR scheduler,
  grad scaler, the noise generator and the torch / Python RNG states, and the state
  of hooks that have one (the EMA) — only tensors, numbers and lists, so it loads
  with ``torch.load(weights_only=True)``. Under DDP it also holds every rank's RNG
  states (``rank_rngs``: noise generator, torch CPU RNG, CUDA RNG of its GPU, Python's
  random, in rank order), and each rank resumes from its own;
- ``graph.yaml``: the resolved graph of the run;
- ``meta.json``: written last; a folder without it is incomplete and ignored.

A backup of a run whose wrappers shard the weights (FSDP: ``parts.save_sharded``) holds a
``sharded/`` folder written by ``torch.distributed.checkpoint`` (every rank writes its shards;
``sharded/.metadata`` last) instead of ``trainable.safetensors`` and the optimizer state in
``state.pt``; its ``meta.json`` says ``"sharded": true``, and it resumes through
``parts.load_sharded`` on the same number of ranks.

The folder is assembled beside its final name and renamed into place, so a kill
or a full disk never leaves a half backup where ``--resume`` would find it.
Under DDP a backup is a collective: every rank calls ``write_backup`` at the same update
boundary (the loop agrees on it, ``Steps.agree_stop``); rank 0 writes the folder.
"""

from __future__ import annotations

import contextlib
import errno
import json
import random
import shutil
import time
from pathlib import Path

from runtime import __version__
from runtime.errors import first_line
from runtime.backups import (BACKUPS_DIR, META_FILE, SHARDED_DIR, STATE_FILE, WEIGHTS_FILE, DamagedBackup,
                             check_backup, list_backups, load_state)
from runtime.fileio import atomic_dir, write_target
from runtime.workspace import GRAPH_FILE

from .distributed import barrier, broadcast_object, is_main, rank, world_size
from .schedule_free import in_train_mode, inference_weights, is_schedule_free, to_training
from .state import as_tuple

#: state.pt key of a schedule-free optimizer's exact training weights (the weights file has the averaged)
SCHEDULE_FREE_KEY = "schedule_free"
#: state.pt key of every rank's RNG states under DDP (``TrainState.rng_states``), in rank order
RANK_RNGS_KEY = "rank_rngs"


def write_backup(run, reason: str) -> Path | None:
    """Write a backup of ``run`` now (call only at an update boundary) and drop the oldest ones
    beyond ``run.backup_keep``. Returns the backup folder on rank 0, None on the other ranks.

    Without wrappers (``run.parts`` None: one process, or ``distributed: off``) rank 0 alone writes.
    Under DDP it is a collective that every rank calls at the same step: the ranks' RNG states are
    gathered to rank 0, which writes the folder (the ranks hold the same weights and optimizer state).
    With wrappers that have ``save_sharded`` (FSDP) every rank writes its shards into rank 0's
    temporary folder, and rank 0 renames it into place once all have."""
    parts = getattr(run, "parts", None)
    if parts is None:
        return _write(run, reason) if is_main() else None
    rngs = _gather(run.state.rng_states(run.device))
    save_sharded = getattr(parts, "save_sharded", None)
    if save_sharded is None:
        return _write(run, reason, rngs) if is_main() else None
    return _write_sharded(run, reason, rngs, save_sharded)


def _gather(value) -> list:
    """Every rank's ``value`` in rank order (a collective)."""
    import torch.distributed as dist

    box = [None] * world_size()
    dist.all_gather_object(box, value)
    return box


def _write_sharded(run, reason: str, rngs: list, save_sharded) -> Path | None:
    """The sharded backup: rank 0 makes the temporary folder and sends its path; every rank calls
    ``save_sharded(folder, optimizer)``; after a barrier rank 0 writes the rest and renames it."""
    optimizer = run.state.optimizer
    if not is_main():
        folder = broadcast_object(None)
        if folder is None:
            raise RuntimeError("rank 0 could not make the backup folder (its log says why)")
        save_sharded(Path(folder), optimizer)
        barrier()
        return None
    told = []

    def shards(tmp: Path) -> None:
        told.append(broadcast_object(str(tmp)))
        save_sharded(tmp, optimizer)
        barrier()  # every rank's shards are written before the folder is renamed into place

    try:
        return _write(run, reason, rngs, shards)
    except BaseException:
        if not told:
            broadcast_object(None)  # the other ranks wait for a folder: there is none
        raise


def _write(run, reason: str, rngs: list | None = None, shards=None) -> Path:
    """Rank 0's part: the folder, atomically; ``shards(tmp)`` (sharded backups) fills ``sharded/`` first."""
    import torch

    from nodes.weights_io import write_safetensors

    ctx, state = run.ctx, run.state
    root = ctx.workspace / BACKUPS_DIR
    final = root / f"step-{state.step:06d}"
    t0 = time.perf_counter()
    with atomic_dir(final) as tmp:
        if shards is not None:
            shards(tmp)
        data, weights = _contents(run, rngs, sharded=shards is not None)
        if weights is not None:
            write_safetensors(weights, tmp / WEIGHTS_FILE)
        torch.save(data, tmp / STATE_FILE)
        graph = ctx.workspace / GRAPH_FILE
        if graph.exists():
            shutil.copyfile(graph, tmp / GRAPH_FILE)
        meta = {"step": state.step, "epoch": state.epoch, "epoch_batch": state.epoch_batch,
                "total_steps": run.total_steps, "reason": reason, "time": time.time(),
                "graph": ctx.graph_name, "node": ctx.node_id,
                "weights": len(list(run.model.named_trainable_parameters())), "ranks": world_size(),
                "rank_rngs": rngs is not None, "sharded": shards is not None, "nodetrainer": __version__}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    for old in list_backups(ctx.workspace)[: -max(1, run.backup_keep)]:
        shutil.rmtree(old, ignore_errors=True)
    for leftover in root.glob(".step-*"):  # half-written backups of a killed process
        shutil.rmtree(leftover, ignore_errors=True)
    ctx.saved(final, "backup", step=state.step, reason=reason, seconds=round(time.perf_counter() - t0, 3))
    return final


def _contents(run, rngs: list | None, sharded: bool) -> tuple[dict, dict | None]:
    """What ``state.pt`` holds, and the weights for ``trainable.safetensors`` (None when sharded: the
    shards hold the weights and the optimizer state)."""
    state = run.state
    data = {**state.state_dict(), "python_rng": random.getstate(),
            "hooks": {h.key: sd for h in run.hooks if h.key and (sd := h.state_dict()) is not None}}
    if rngs is not None:
        data[RANK_RNGS_KEY] = rngs
    if sharded:
        data["optimizer"] = None
        return data, None
    if is_schedule_free(state.optimizer) and in_train_mode(state.optimizer):
        # the weights file holds the averaged weights (the ones to use); the exact training weights
        # go with the optimizer state, so a resumed run continues from the same point
        data[SCHEDULE_FREE_KEY] = {"train_weights": _trainable(run.model)}
    with inference_weights(state.optimizer):
        return data, _trainable(run.model)


def _trainable(model) -> dict:
    return {name: p.detach().to("cpu").contiguous().clone() for name, p in model.named_trainable_parameters()}


def load_backup(run, folder: Path) -> dict:
    """Restore ``run`` (weights, optimizer, scheduler, scaler, RNGs, data position, hook states)
    from a backup folder; under DDP each rank takes its own RNG states, and with sharded wrappers
    every rank calls ``run.parts.load_sharded(folder, optimizer)`` for the weights and optimizer.
    A damaged backup raises ``DamagedBackup``, one that does not fit the graph ``ValueError``;
    both name the folder and what is wrong."""
    import torch

    folder = Path(folder)
    meta = check_backup(folder)
    load_sharded = _check_fits_run(run, folder, meta)
    params = dict(run.model.named_trainable_parameters())
    saved = _read_weights(folder, params) if load_sharded is None else None
    data = load_state(folder)
    if load_sharded is not None:
        load_sharded(folder, run.state.optimizer)
    else:
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(saved[name].to(p.device, p.dtype))
    try:
        run.state.load_state_dict(data)
        _restore_training_weights(run, params, data.get(SCHEDULE_FREE_KEY))  # a sharded backup has none
        if data.get("python_rng") is not None:
            random.setstate(as_tuple(data["python_rng"]))
        if meta.get("rank_rngs"):
            run.state.load_rng_states(data[RANK_RNGS_KEY][rank()], run.device)
        for hook in run.hooks:
            if hook.key and hook.key in data.get("hooks", {}):
                hook.load_state_dict(data["hooks"][hook.key])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
        raise ValueError(f"backup {folder}: its {STATE_FILE} does not fit this graph's training state "
                         f"({first_line(e)}); resume with the graph the backup was made from") from None
    return meta


def _check_fits_run(run, folder: Path, meta: dict):
    """A backup resumes on the number of ranks that wrote it, sharded with sharded wrappers only.
    Returns the wrappers' ``load_sharded`` for a sharded backup, None for one with a weights file."""
    ranks, here = int(meta.get("ranks", 1)), world_size()
    if ranks != here:  # the data position (epoch_batch) counts this rank's share of the batches
        raise ValueError(f"backup {folder} was written by a run on {ranks} rank(s) and this run has {here}: its "
                         f"data position is per rank, so resume it on {ranks} (torchrun --nproc-per-node "
                         f"{ranks}{'' if ranks > 1 else ', or without torchrun'})")
    load_sharded = getattr(getattr(run, "parts", None), "load_sharded", None)
    if meta.get("sharded") and load_sharded is None:
        raise ValueError(f"backup {folder} holds sharded weights ({SHARDED_DIR}/, written under FSDP): resume it "
                         f"with train.loop's distributed: fsdp on {ranks} rank(s)")
    if not meta.get("sharded") and load_sharded is not None:
        raise ValueError(f"backup {folder} was written without FSDP (its weights are in {WEIGHTS_FILE}): resume "
                         "it with the distributed mode it was written with (ddp, or off)")
    return load_sharded


def _read_weights(folder: Path, params: dict) -> dict:
    """The weights file of a backup, checked against the graph's trainable weights (names, shapes)."""
    from safetensors.torch import load_file

    try:
        saved = load_file(str(folder / WEIGHTS_FILE))
    except Exception as e:
        raise DamagedBackup(f"backup {folder} is damaged: {WEIGHTS_FILE} cannot be read ({first_line(e)})") from None
    missing, unexpected = sorted(set(params) - set(saved)), sorted(set(saved) - set(params))
    if missing or unexpected:
        raise ValueError(f"backup {folder} does not fit this graph's trainable weights: "
                         f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
                         f"(e.g. {unexpected[:3]}); resume with the graph the backup was made from")
    for name, p in params.items():
        if tuple(saved[name].shape) != tuple(p.shape):
            raise ValueError(f"backup {folder}: weight {name} has shape {tuple(saved[name].shape)}, "
                             f"the graph's has {tuple(p.shape)}")
    return saved


def _restore_training_weights(run, params: dict, schedule_free: dict | None) -> None:
    """A schedule-free optimizer's backup holds the averaged weights in its weights file: put the exact
    training weights back (or, from a backup written in eval mode, let the optimizer compute them)."""
    import torch

    if schedule_free and schedule_free.get("train_weights"):
        saved = schedule_free["train_weights"]
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(saved[name].to(p.device, p.dtype))
    to_training(run.state.optimizer)



def is_disk_full(error: BaseException) -> bool:
    """A write that failed for want of space, whichever library raised it (safetensors raises its own
    SafetensorError '... No space left on device (os error 28)')."""
    text = str(error)
    return (getattr(error, "errno", None) == errno.ENOSPC or "No space left on device" in text
            or "os error 28" in text)


def _short_write(error: BaseException) -> bool:
    # torch.save's zip writer reports a write that came up short as "unexpected pos N vs M"
    return isinstance(error, RuntimeError) and "unexpected pos" in str(error)


def describe_save_error(error: BaseException) -> str:
    """Why a save failed, in one line, with the file when it is known."""
    where = write_target(error) or getattr(error, "filename", None)
    where = f" ({where})" if where else ""
    if is_disk_full(error):
        return f"the disk is full{where}"
    if _short_write(error):
        return f"torch could not write the whole file, is the disk full?{where}"
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror}{where}"
    return f"{type(error).__name__}: {first_line(error)}{where}"


@contextlib.contextmanager
def report_save_errors(ctx, what: str, failures: list | None = None):
    """Turn a failed save (a full disk, no permission, any writer's or saver's error) into an error
    log event naming ``what`` and why; the files written before stay as they were and training goes
    on. Each failure is appended to ``failures`` as ``(what, why)``. A save that a stop interrupted
    (``Cancelled``) counts as failed too; the loop then stops and writes its backup. A second
    interrupt (``KeyboardInterrupt``) passes through."""
    from runtime.errors import Cancelled

    try:
        yield
    except Cancelled as e:
        why = f"stopped before it finished ({e or 'stop requested'})"
        ctx.log(f"{what} failed: {why}", level="error", failed=what)
        if failures is not None:
            failures.append((what, why))
    except Exception as e:
        why = describe_save_error(e)
        hint = ("free space, then send 'save' or 'backup'" if is_disk_full(e) or _short_write(e)
                else "the files written before are untouched")
        ctx.log(f"{what} failed: {why}; training goes on with its state in memory ({hint})", level="error",
                failed=what)
        if failures is not None:
            failures.append((what, why))
