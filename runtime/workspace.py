"""Run workspaces: ``runs/<graph name>-<timestamp>/`` with the graph as run and its events."""

from __future__ import annotations

import errno
import json
import os
import platform
import re
import socket
import sys
import time
from pathlib import Path

from . import __version__
from .events import to_json
from .fileio import atomic_write_text
from .graph import Graph, NodeEntry
from .validate import Validation

GRAPH_FILE = "graph.yaml"
EVENTS_FILE = "events.jsonl"
RUN_FILE = "run.json"
LOCK_FILE = ".nodetrainer.lock"


class WorkspaceError(ValueError):
    """A run folder that cannot be used; the message is one line for the user."""


def os_reason(error: OSError) -> str:
    """A plain reason for a failed file operation."""
    reasons = {errno.ENOSPC: "the disk is full", errno.EACCES: "permission denied", errno.EPERM: "not permitted",
               errno.EROFS: "the file system is read-only", errno.ENOTDIR: "a part of the path is a file",
               errno.ENAMETOOLONG: "the path or a name in it is too long for the file system",
               errno.EEXIST: "it exists and is a file"}
    return reasons.get(error.errno, error.strerror or str(error))


def check_path_text(path: Path, what: str) -> None:
    """Refuse a path that is not valid UTF-8: events, graph.yaml and run.json could not record it."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise WorkspaceError(f"{what} {os.fsencode(path)!r} is not valid UTF-8: its name cannot be recorded in "
                             f"the run's files; choose a folder whose name is UTF-8") from None


def is_run_folder(path: Path) -> bool:
    """A folder an earlier ``nodetrainer run`` wrote (its run.json says so)."""
    try:
        record = json.loads((path / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and "nodetrainer" in record


def prepare_workspace(path: Path, what: str = "--workspace") -> Path:
    """An explicit run folder: created if missing; an empty folder or an earlier run folder is used;
    anything else (a file, a folder of other files, one we cannot write) is refused, never overwritten."""
    check_path_text(path, what)
    try:
        if path.exists() and not path.is_dir():
            raise WorkspaceError(f"{what} {path} is a file, not a folder")
        entries = sorted(os.listdir(path)) if path.is_dir() else []
        if entries and not is_run_folder(path):
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise WorkspaceError(f"{what} {path} is not empty and is not a run folder (it holds {shown}); "
                                 f"nothing in it was changed: choose a new or empty folder")
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".nodetrainer-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise WorkspaceError(f"{what} {path} cannot be used: {os_reason(e)}") from None
    return path


def slug(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", name.strip()).strip("-.").lower()
    return s[:60] or "run"


def create_workspace(runs_dir: Path, graph_name: str) -> Path:
    """A new, empty run folder under ``runs_dir``."""
    check_path_text(runs_dir, "--runs-dir")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = runs_dir / f"{slug(graph_name)}-{stamp}"
    path, i = base, 2
    while True:
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            if not runs_dir.is_dir():
                raise WorkspaceError(f"--runs-dir {runs_dir} is a file, not a folder") from None
            path = base.with_name(f"{base.name}-{i}")
            i += 1
        except OSError as e:
            raise WorkspaceError(f"cannot create a run folder under {runs_dir}: {os_reason(e)}") from None


class RunLock:
    """An exclusive lock on a run folder for the life of a run, so two runs never share one.

    The lock is the operating system's (``flock``; ``msvcrt.locking`` on Windows) on
    ``.nodetrainer.lock``: it goes away with the process, even a killed one. The file
    says who holds it, for the message the second run prints.
    """

    def __init__(self, folder: Path):
        self.path = folder / LOCK_FILE
        self.file = None

    def acquire(self, argv: list[str]) -> RunLock:
        f = open(self.path, "a+", encoding="utf-8")
        if not _try_lock(f):
            f.seek(0)
            holder = _holder_text(f.read(4096))
            f.close()
            raise WorkspaceError(f"run folder {self.path.parent} is in use by another run ({holder}); "
                                 f"wait for it to end, or choose another --workspace")
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                            "argv": argv[:20]}) + "\n")
        f.flush()
        self.file = f
        return self

    def release(self) -> None:
        if self.file is not None:
            self.file.truncate(0)
            self.file.close()  # closing drops the lock
            self.file = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _try_lock(f) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def _holder_text(text: str) -> str:
    try:
        info = json.loads(text)
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["started"])))
        command = " ".join(map(str, info.get("argv", [])))[:200]
        return f"pid {int(info['pid'])} on {str(info.get('host', '?'))[:100]}, started {started}: {command}"
    except (ValueError, KeyError, TypeError, OverflowError):
        return "holder unknown"


def as_run_graph(graph: Graph, validation: Validation) -> Graph:
    """The graph exactly as it runs: overrides applied, every param resolved (absolute
    paths, concrete seeds), node versions pinned. It runs again from any folder."""
    out = Graph(name=graph.name, description=graph.description, layout=dict(graph.layout),
                notes=list(graph.notes))
    for node_id in graph.nodes:
        rn = validation.nodes[node_id]
        out.nodes[node_id] = NodeEntry(node_id, rn.spec.type_id, rn.spec.version, dict(rn.params),
                                       dict(graph.nodes[node_id].inputs))
    return out


class EventLog:
    """Event sink that appends to the workspace's ``events.jsonl``."""

    def __init__(self, path: Path):
        self.file = open(path, "a", encoding="utf-8")

    def __call__(self, event: dict) -> None:
        if not self.file.closed:
            self.file.write(to_json(event) + "\n")
            self.file.flush()

    def close(self) -> None:
        self.file.close()


class RankLog:
    """Event sink of a rank other than 0 in a run of several processes (torchrun): its log lines, errors
    and end, as text, to ``rank-N.log`` in the run folder (rank 0 writes the events)."""

    KINDS = ("log", "error", "run_finished")

    def __init__(self, path: Path):
        self.file = open(path, "a", encoding="utf-8")

    def __call__(self, event: dict) -> None:
        if event["event"] not in self.KINDS or self.file.closed:
            return
        stamp = time.strftime("%H:%M:%S", time.localtime(event.get("t", time.time())))
        if event["event"] == "run_finished":
            text = f"run {event.get('status')}"
        else:
            where = f"{event['node']}: " if event.get("node") else ""
            text = f"{event.get('level', 'error')}: {where}{event.get('message', '')}"
        self.file.write(f"{stamp} {text}\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def rank_log_name(rank: int) -> str:
    return f"rank-{rank}.log"


def write_run_record(workspace: Path, graph: Graph, validation: Validation, argv: list[str],
                     registry=None) -> None:
    """Write ``graph.yaml`` (as run) and ``run.json`` (command line, overrides, versions)."""
    from .graph_file import dumps_graph

    atomic_write_text(workspace / GRAPH_FILE, dumps_graph(as_run_graph(graph, validation), registry))
    record = {
        "graph": str(graph.path) if graph.path else None,
        "argv": argv,
        "overrides": [o.text for o in validation.overrides],
        "inputs": validation.input_values,
        "plan": validation.order,
        "nodetrainer": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": package_versions(),
        "devices": devices_of(validation),
    }
    atomic_write_text(workspace / RUN_FILE, json.dumps(record, indent=2, default=str) + "\n")


#: the libraries whose versions decide what a run computes
RECORDED_PACKAGES = ("torch", "diffusers", "transformers", "peft", "safetensors", "numpy", "pillow", "pyyaml")


def package_versions() -> dict[str, str | None]:
    """Installed versions of the recorded packages (None when one is missing); nothing is imported."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in RECORDED_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def devices_of(validation: Validation) -> dict[str, str]:
    """``node.param`` -> the device it means on this machine, for every device param that will run."""
    from .params import Device

    wanted = [(n, p, rn.params[p]) for n in validation.order for rn in [validation.nodes[n]]
              for p, decl in rn.spec.params.items() if isinstance(decl.kind, Device) and p in rn.params]
    return {f"{n}.{p}": f"{value} -> {Device.describe_on_machine(value)}" for n, p, value in wanted}
