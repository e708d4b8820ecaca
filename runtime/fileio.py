"""Atomic file writes: a crash or a full disk never leaves a half-written file."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from pathlib import Path
from typing import Iterator


def disk_full(path: str | Path, error: OSError) -> OSError:
    """``error`` as a message naming ``path`` and saying the disk is full (same errno, so callers that
    catch OSError are unaffected); other errors come back unchanged."""
    if getattr(error, "errno", None) != errno.ENOSPC:
        return error
    return OSError(errno.ENOSPC, f"the disk is full: cannot write {path} ({error.strerror or error})")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``.

    Use it with writers that take a file name (``safetensors.torch.save_file``,
    ``Image.save``). On any exception the temporary file is removed and the
    previous ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its 0600 mode would end up on the final file.
    tmp_path = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        if isinstance(e, OSError) and disk_full(path, e) is not e:
            raise disk_full(path, e) from e
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
            with open(file, "rb+") as f:
                os.fsync(f.fileno())
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
        if isinstance(e, OSError) and disk_full(path, e) is not e:
            raise disk_full(path, e) from e
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))
