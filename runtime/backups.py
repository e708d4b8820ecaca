"""Where backups live and how ``--resume`` finds them.

A backup is a folder ``<run folder>/backups/step-000123/`` holding a ``meta.json``
(written last, so a folder without it is incomplete and ignored). What else it
holds is the training loop's business (nodes/train/backup.py); ``check_backup``
knows which files must be there and readable (a sharded FSDP backup holds a ``sharded/``
folder, complete once its ``.metadata`` is written, instead of the weights file).

``--resume last`` looks only in run folders of this graph: named
``<slug(graph name)>-<YYYYmmdd-HHMMSS>[-N]`` (``runtime.workspace.create_workspace``)
whose backups name the same graph in their ``meta.json``. It takes the newest
backup that is intact; a damaged one is skipped with a warning. A backup folder
named explicitly must be intact, or resuming stops with one line saying what is
damaged.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Callable

from .errors import first_line
from .workspace import slug

BACKUPS_DIR = "backups"
META_FILE = "meta.json"
WEIGHTS_FILE = "trainable.safetensors"
STATE_FILE = "state.pt"
#: the folder of a sharded (FSDP) backup's weights and optimizer state, written by torch.distributed.checkpoint,
#: instead of WEIGHTS_FILE; its SHARDED_METADATA file is written last
SHARDED_DIR = "sharded"
SHARDED_METADATA = ".metadata"
MAX_META_BYTES = 1 << 20
#: meta.json fields a backup needs, with their types
META_FIELDS = {"step": int, "time": (int, float), "graph": str}


class DamagedBackup(FileNotFoundError, ValueError):
    """A backup that cannot be resumed from; the message names the folder and what is damaged.
    (A ``FileNotFoundError``, as for a missing backup, and a ``ValueError``: catch either.)"""


def _meta_text(folder: Path) -> str:
    """The text of ``meta.json`` (``ValueError`` past ``MAX_META_BYTES``: a damaged file is never read whole)."""
    with open(folder / META_FILE, "rb") as f:
        data = f.read(MAX_META_BYTES + 1)
    if len(data) > MAX_META_BYTES:
        raise ValueError(f"it is larger than {MAX_META_BYTES >> 10} KiB")
    return data.decode("utf-8")


def read_meta(folder: Path) -> dict | None:
    """``meta.json`` of ``folder`` as a mapping, or None when it is missing, not JSON or not a mapping."""
    try:
        meta = json.loads(_meta_text(folder))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def check_meta(folder: Path) -> dict:
    """``meta.json`` of a backup, checked; raises ``DamagedBackup`` saying what is wrong with it."""
    try:
        text = _meta_text(folder)
    except FileNotFoundError:
        raise DamagedBackup(f"{folder} is not a complete backup (no {META_FILE})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DamagedBackup(f"backup {folder} is damaged: {META_FILE} cannot be read ({first_line(e, 200)})") from None
    except ValueError as e:
        raise DamagedBackup(f"backup {folder} is damaged: {META_FILE} is not a backup's meta file ({e})") from None
    try:
        meta = json.loads(text)
    except ValueError as e:
        raise DamagedBackup(f"backup {folder} is damaged: {META_FILE} is not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise DamagedBackup(f"backup {folder} is damaged: {META_FILE} holds a {type(meta).__name__}, "
                            "not a mapping") from None
    bad = [k for k, t in META_FIELDS.items() if not isinstance(meta.get(k), t) or isinstance(meta.get(k), bool)]
    if bad:
        raise DamagedBackup(f"backup {folder} is damaged: {META_FILE} lacks valid "
                            f"{', '.join(repr(k) for k in bad)}")
    return meta


def check_backup(folder: Path) -> dict:
    """Check that ``folder`` is a backup that can be resumed from, without loading its tensors:
    ``meta.json`` valid, the weights file a complete safetensors file (a sharded backup, ``"sharded":
    true`` in its meta: a ``sharded/`` folder with its ``.metadata``), the state a torch file that
    loads with ``weights_only=True``. Returns the meta; raises ``DamagedBackup`` (one line)."""
    folder = Path(folder)
    meta = check_meta(folder)
    sharded = meta.get("sharded") is True
    for f in ([] if sharded else [folder / WEIGHTS_FILE]) + [folder / STATE_FILE]:
        if not f.is_file():
            raise DamagedBackup(f"backup {folder} is damaged: {f.name} is missing")
    if sharded:
        if not (folder / SHARDED_DIR / SHARDED_METADATA).is_file():
            raise DamagedBackup(f"backup {folder} is damaged: {SHARDED_DIR}/{SHARDED_METADATA} is missing "
                                "(its sharded weights were not all written)")
    else:
        _check_weights(folder)
    data = load_state(folder, mmap=True)
    if not isinstance(data.get("counters"), dict):
        raise DamagedBackup(f"backup {folder} is damaged: {STATE_FILE} has no training counters")
    return meta


def _check_weights(folder: Path) -> None:
    """The weights file of a backup is a complete safetensors file (its header and size agree)."""
    from safetensors import safe_open

    try:
        with safe_open(str(folder / WEIGHTS_FILE), framework="numpy"):
            pass
    except Exception as e:
        raise DamagedBackup(f"backup {folder} is damaged: {WEIGHTS_FILE} is truncated or not a safetensors "
                            f"file ({first_line(e, 200)})") from None


def load_state(folder: Path, mmap: bool = False) -> dict:
    """``state.pt`` of a backup, loaded with ``weights_only=True``; ``DamagedBackup`` when it cannot be."""
    import pickle

    import torch

    file = Path(folder) / STATE_FILE
    try:
        data = torch.load(file, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError:
        raise DamagedBackup(f"backup {folder} is damaged: {STATE_FILE} holds objects other than tensors, "
                            "numbers and lists, and nodetrainer loads it only with torch's weights_only "
                            "(it never unpickles code)") from None
    except FileNotFoundError:
        raise DamagedBackup(f"backup {folder} is damaged: {STATE_FILE} is missing") from None
    except Exception as e:
        raise DamagedBackup(f"backup {folder} is damaged: {STATE_FILE} is truncated or not a torch file "
                            f"({first_line(e, 200)})") from None
    if not isinstance(data, dict):
        raise DamagedBackup(f"backup {folder} is damaged: {STATE_FILE} holds a {type(data).__name__}, "
                            "not a mapping")
    return data



def list_backups(workspace: Path) -> list[Path]:
    """Backups of one run folder with a readable ``meta.json``, oldest first (by time written, then
    step). Hidden folders are writes in progress or ones a kill interrupted, never backups. (Whether
    the rest of a backup is intact is ``check_backup``'s question.)"""
    root = workspace / BACKUPS_DIR
    found = []
    for folder in root.iterdir() if root.is_dir() else []:
        meta = read_meta(folder)
        if folder.is_dir() and not folder.name.startswith(".") and meta is not None:
            found.append((_number(meta.get("step")), _number(meta.get("time")), folder))
    return [f for _, _, f in sorted(found, key=lambda t: (t[1], t[0], t[2].name))]


def _number(value) -> float:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def run_folders(runs_dir: Path, graph_name: str) -> list[Path]:
    """Run folders of the graph named ``graph_name``: exactly ``<slug>-<YYYYmmdd-HHMMSS>[-N]``, so graph
    ``advmini`` does not claim ``advmini-bk-20260101-120000``."""
    pattern = re.compile(re.escape(slug(graph_name)) + r"-\d{8}-\d{6}(?:-\d+)?")
    if not runs_dir.is_dir():
        return []
    return sorted(p for p in runs_dir.iterdir() if p.is_dir() and pattern.fullmatch(p.name))


def latest_backup(runs_dir: Path, graph_name: str, warn: Callable[[str], None] | None = None) -> Path | None:
    """The newest intact backup of a run of this graph under ``runs_dir``; damaged ones are skipped
    with a warning (``DamagedBackup`` when there are only damaged ones)."""
    candidates, unreadable = [], []
    for ws in run_folders(runs_dir, graph_name):
        for folder in list_backups(ws):
            meta = read_meta(folder) or {}
            if meta.get("graph") == graph_name:
                candidates.append((_number(meta.get("time")), _number(meta.get("step")), folder))
        unreadable += _without_meta(ws)
    candidates.sort(key=lambda t: (t[0], t[1], str(t[2])))
    return _newest_intact([f for _, _, f in candidates], unreadable, warn)


def _without_meta(workspace: Path) -> list[Path]:
    """Backup folders of a run whose ``meta.json`` is missing or unreadable: damaged after the fact
    (a backup is renamed into place only once its meta.json is written)."""
    root = workspace / BACKUPS_DIR
    return sorted(p for p in (root.iterdir() if root.is_dir() else [])
                  if p.is_dir() and not p.name.startswith(".") and read_meta(p) is None)


def _newest_intact(backups: list[Path], unreadable: list[Path], warn: Callable[[str], None] | None) -> Path | None:
    """The last of ``backups`` (oldest first) that passes ``check_backup``. Each damaged one met on the
    way, and each of ``unreadable``, is warned about; when none is intact, the newest damage is raised."""
    warn = warn or _stderr_warning
    damaged = []
    for folder in reversed(backups):
        try:
            check_backup(folder)
        except DamagedBackup as e:
            damaged.append(e)
            warn(f"skipping a damaged backup: {e}")
            continue
        _warn_unreadable(unreadable, warn)
        return folder
    damaged += _warn_unreadable(unreadable, warn)
    if damaged:
        raise DamagedBackup(f"no intact backup to resume from; {damaged[0]}")
    return None


def _warn_unreadable(folders: list[Path], warn: Callable[[str], None]) -> list[DamagedBackup]:
    errors = []
    for folder in folders:
        try:
            check_meta(folder)
        except DamagedBackup as e:
            errors.append(e)
            warn(f"skipping a damaged backup: {e}")
    return errors


def _stderr_warning(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def resolve_resume(value: str, runs_dir: Path, graph_name: str, workspace: Path | None,
                   warn: Callable[[str], None] | None = None) -> Path:
    """``--resume`` value -> an intact backup folder. ``last``: the newest intact backup of this graph
    (of ``workspace`` when given); a run folder: its newest intact backup; a backup folder: itself.
    Raises ``FileNotFoundError`` with a one-line message (``DamagedBackup`` when the backup is damaged);
    ``warn`` gets the damaged backups that were skipped (default: printed to stderr)."""
    if value == "last":
        if workspace is not None:
            found = _newest_intact(list_backups(workspace), _without_meta(workspace), warn)
            if found is None:
                raise FileNotFoundError(f"no backup in {workspace / BACKUPS_DIR}")
            return found
        found = latest_backup(runs_dir, graph_name, warn)
        if found is None:
            raise FileNotFoundError(f"no backup of graph {graph_name!r} under {runs_dir} "
                                    f"(looked in {runs_dir}/{slug(graph_name)}-<date>-<time>/{BACKUPS_DIR}/)")
        return found
    path = Path(value).expanduser().resolve()
    if (path / META_FILE).exists():
        check_backup(path)
        return path
    if path.is_dir() and path.parent.name == BACKUPS_DIR and not path.name.startswith("."):
        check_meta(path)  # a backup folder without its meta.json: say so
    backups, unreadable = (list_backups(path), _without_meta(path)) if path.is_dir() else ([], [])
    if backups or unreadable:  # a run folder: its newest intact backup
        return _newest_intact(backups, unreadable, warn)
    raise FileNotFoundError(f"{path} is not a backup folder (no {META_FILE}) nor a run folder with backups")


def workspace_of(backup: Path) -> Path:
    """The run folder a backup belongs to."""
    return backup.parent.parent
