"""Backups of a training run, and resuming from one.

A backup folder ``<run folder>/backups/step-000123/`` holds:

- ``trainable.safetensors``: the trainable weights by name;
- ``state.pt``: counters (step, epoch, position in the epoch), optimizer, LR scheduler,
  grad scaler, the noise generator and the torch / Python RNG states, and the state
  of hooks that have one (the EMA) — only tensors, numbers and lists, so it loads
  with ``torch.load(weights_only=True)``;
- ``graph.yaml``: the resolved graph of the run;
- ``meta.json``: written last; a folder without it is incomplete and ignored.

The folder is assembled beside its final name and renamed into place, so a kill
or a full disk never leaves a half backup where ``--resume`` would find it.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import time
from pathlib import Path

from runtime import __version__
from runtime.backups import BACKUPS_DIR, META_FILE, list_backups, read_meta
from runtime.fileio import atomic_dir
from runtime.workspace import GRAPH_FILE

WEIGHTS_FILE = "trainable.safetensors"
STATE_FILE = "state.pt"


def write_backup(run, reason: str) -> Path:
    """Write a backup of ``run`` now (call only at an update boundary) and drop the oldest ones
    beyond ``run.backup_keep``. Returns the backup folder."""
    import torch
    from safetensors.torch import save_file

    ctx, state = run.ctx, run.state
    root = ctx.workspace / BACKUPS_DIR
    final = root / f"step-{state.step:06d}"
    t0 = time.perf_counter()
    with atomic_dir(final) as tmp:
        weights = {name: p.detach().to("cpu").contiguous().clone()
                   for name, p in run.model.named_trainable_parameters()}
        save_file(weights, str(tmp / WEIGHTS_FILE))
        hooks = {h.key: sd for h in run.hooks if h.key and (sd := h.state_dict()) is not None}
        torch.save({**state.state_dict(), "python_rng": random.getstate(), "hooks": hooks}, tmp / STATE_FILE)
        graph = ctx.workspace / GRAPH_FILE
        if graph.exists():
            shutil.copyfile(graph, tmp / GRAPH_FILE)
        meta = {"step": state.step, "epoch": state.epoch, "epoch_batch": state.epoch_batch,
                "total_steps": run.total_steps, "reason": reason, "time": time.time(),
                "graph": ctx.graph_name, "node": ctx.node_id, "weights": len(weights),
                "nodetrainer": __version__}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    for old in list_backups(ctx.workspace)[: -max(1, run.backup_keep)]:
        shutil.rmtree(old, ignore_errors=True)
    for leftover in root.glob(".step-*"):  # half-written backups of a killed process
        shutil.rmtree(leftover, ignore_errors=True)
    ctx.saved(final, "backup", step=state.step, reason=reason, seconds=round(time.perf_counter() - t0, 3))
    return final


def load_backup(run, folder: Path) -> dict:
    """Restore ``run`` (weights, optimizer, scheduler, scaler, RNGs, data position, hook states)
    from a backup folder. Errors name what does not match the graph being run."""
    import torch
    from safetensors.torch import load_file

    folder = Path(folder)
    meta = read_meta(folder)
    if meta is None:
        raise FileNotFoundError(f"{folder} is not a complete backup (no {META_FILE})")
    saved = load_file(str(folder / WEIGHTS_FILE))
    params = dict(run.model.named_trainable_parameters())
    missing, unexpected = sorted(set(params) - set(saved)), sorted(set(saved) - set(params))
    if missing or unexpected:
        raise ValueError(f"backup {folder} does not fit this graph's trainable weights: "
                         f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
                         f"(e.g. {unexpected[:3]}); resume with the graph the backup was made from")
    for name, p in params.items():
        if tuple(saved[name].shape) != tuple(p.shape):
            raise ValueError(f"backup {folder}: weight {name} has shape {tuple(saved[name].shape)}, "
                             f"the graph's has {tuple(p.shape)}")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(saved[name].to(p.device, p.dtype))
    data = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    run.state.load_state_dict(data)
    if data.get("python_rng") is not None:
        random.setstate(_as_tuple(data["python_rng"]))
    for hook in run.hooks:
        if hook.key and hook.key in data.get("hooks", {}):
            hook.load_state_dict(data["hooks"][hook.key])
    return meta


def _as_tuple(value):
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


@contextlib.contextmanager
def report_save_errors(ctx, what: str):
    """Turn a failed write (full disk, no permission) into an error event; training goes on."""
    import errno

    try:
        yield
    except OSError as e:
        why = "the disk is full" if e.errno == errno.ENOSPC else (e.strerror or str(e))
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        ctx.log(f"{what} failed: {why}{where}; training goes on with its state in memory — free space, "
                f"then send 'save' or 'backup'", level="error")
