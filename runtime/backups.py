"""Where backups live and how ``--resume`` finds them.

A backup is a folder ``<run folder>/backups/step-000123/`` holding a ``meta.json``
(written last, so a folder without it is incomplete and ignored). What else it
holds is the training loop's business (nodes/train/backup.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from .workspace import slug

BACKUPS_DIR = "backups"
META_FILE = "meta.json"


def read_meta(folder: Path) -> dict | None:
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def list_backups(workspace: Path) -> list[Path]:
    """Complete backups of one run folder, oldest first (by time written, then step). Hidden folders
    are writes in progress or ones a kill interrupted, never backups."""
    root = workspace / BACKUPS_DIR
    found = []
    for folder in root.iterdir() if root.is_dir() else []:
        meta = read_meta(folder)
        if folder.is_dir() and not folder.name.startswith(".") and meta is not None:
            found.append((meta.get("step", 0), meta.get("time", 0.0), folder))
    return [f for _, _, f in sorted(found, key=lambda t: (t[1], t[0]))]


def latest_backup(runs_dir: Path, graph_name: str) -> Path | None:
    """The newest complete backup of any run of this graph under ``runs_dir``."""
    best = None
    for ws in runs_dir.glob(f"{slug(graph_name)}-*"):
        for folder in list_backups(ws):
            t = read_meta(folder).get("time", 0.0)
            if best is None or t > best[0]:
                best = (t, folder)
    return best[1] if best else None


def resolve_resume(value: str, runs_dir: Path, graph_name: str, workspace: Path | None) -> Path:
    """``--resume`` value -> a backup folder. Raises ``FileNotFoundError`` with a helpful message."""
    if value == "last":
        if workspace is not None:
            backups = list_backups(workspace)
            if backups:
                return backups[-1]
            raise FileNotFoundError(f"no backup in {workspace / BACKUPS_DIR}")
        found = latest_backup(runs_dir, graph_name)
        if found is None:
            raise FileNotFoundError(f"no backup of graph {graph_name!r} under {runs_dir} "
                                    f"(looked in {runs_dir}/{slug(graph_name)}-*/{BACKUPS_DIR}/)")
        return found
    path = Path(value).expanduser().resolve()
    if read_meta(path) is not None:
        return path
    backups = list_backups(path) if path.is_dir() else []
    if backups:  # a run folder: its newest backup
        return backups[-1]
    raise FileNotFoundError(f"{path} is not a backup folder (no {META_FILE}) nor a run folder with backups")


def workspace_of(backup: Path) -> Path:
    """The run folder a backup belongs to."""
    return backup.parent.parent
