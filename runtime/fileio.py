"""Atomic file writes: a crash or a full disk never leaves a half-written file.

What lands at the final path follows the user's umask (``0666 & ~umask`` for files,
``0777 & ~umask`` for folders), whatever mode the writer gave its file (safetensors
writes ``0600``); a file that is replaced keeps its permission bits.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
import threading
from pathlib import Path
from typing import Iterator

_umask_lock = threading.Lock()


def disk_full(path: str | Path, error: OSError) -> OSError:
    """``error`` as a message naming ``path`` and saying the disk is full (same errno, so callers that
    catch OSError are unaffected); other errors come back unchanged."""
    if getattr(error, "errno", None) != errno.ENOSPC:
        return error
    return OSError(errno.ENOSPC, f"the disk is full: cannot write {path} ({error.strerror or error})")


def current_umask() -> int:
    """The process's umask, read without changing it where the OS allows (Linux ``/proc``)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    with _umask_lock:  # elsewhere: set and restore, the only portable way to read it
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def write_target(error: BaseException) -> Path | None:
    """The final path an atomic write was making when ``error`` was raised, if it came from one."""
    return getattr(error, "nodetrainer_target", None)


def _mark(error: BaseException, path: Path) -> None:
    if write_target(error) is None:
        with contextlib.suppress(AttributeError, TypeError):
            error.nodetrainer_target = path


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _follow_umask(root: Path, file_mode: int | None = None) -> None:
    """chmod ``root`` (a file, or a folder and everything in it) to what the umask gives new files."""
    mask = current_umask()
    for p in [root, *(root.rglob("*") if root.is_dir() else [])]:
        st = p.lstat()
        if stat.S_ISDIR(st.st_mode):
            os.chmod(p, 0o777 & ~mask)
        elif stat.S_ISREG(st.st_mode):
            os.chmod(p, file_mode if file_mode is not None else 0o666 & ~mask)


def _fail(error: BaseException, path: Path) -> OSError | None:
    """The error to raise instead of ``error`` (a clearer full-disk one), or None to re-raise it."""
    _mark(error, path)
    if isinstance(error, OSError) and disk_full(path, error) is not error:
        clearer = disk_full(path, error)
        _mark(clearer, path)
        return clearer
    return None


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``.

    Use it with writers that take a file name (``safetensors.torch.save_file``,
    ``Image.save``). On any exception the temporary file is removed and the
    previous ``path`` is untouched; the exception carries ``path`` (``write_target``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        yield tmp_path
        _fsync(tmp_path)
        try:
            keep = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            keep = None
        _follow_umask(tmp_path, keep)
        os.replace(tmp_path, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        clearer = _fail(e, path)
        if clearer is not None:
            raise clearer from e
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it replaces the folder ``path``.

    On any exception the temporary folder is removed and a previous ``path`` is
    untouched. The swap is two renames (old folder aside, new one in); only a kill
    between them leaves the previous folder under ``.<name>.<tag>.old`` instead.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = secrets.token_hex(6)
    tmp = path.parent / f".{path.name}.{tag}.tmp"
    tmp.mkdir()
    try:
        yield tmp
        for file in (p for p in tmp.rglob("*") if p.is_file()):
            _fsync(file)
        _follow_umask(tmp)
        if path.exists():
            old = path.parent / f".{path.name}.{tag}.old"
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old, path)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        clearer = _fail(e, path)
        if clearer is not None:
            raise clearer from e
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))
