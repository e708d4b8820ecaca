"""Listing files and writing a content manifest (sizes and SHA-256) of them."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from runtime import Dir, Input, Output, Param, RunPath, StrList, node
from runtime.fileio import atomic_write_text
from runtime.port_types import FileList

IMAGE_EXTENSIONS = ["png", "jpg", "jpeg", "webp", "bmp"]


@node("util.scan_files", title="Scan files", category="Utility")
class ScanFiles:
    """List the files in a folder whose extension is one of ``extensions``, sorted by path."""

    files = Output(FileList, doc="the files found, as absolute paths")
    folder = Param(Dir(), doc="folder to scan")
    extensions = Param(StrList, IMAGE_EXTENSIONS, doc="file extensions to keep (without the dot)")
    recursive = Param(bool, True, doc="also scan sub-folders")

    def run(self, ctx):
        wanted = {e.lower().lstrip(".") for e in self.extensions}
        root = Path(self.folder)
        pattern = root.rglob("*") if self.recursive else root.glob("*")
        found = []
        for i, p in enumerate(pattern):
            if i % 256 == 0:
                ctx.check_cancelled()
            if p.is_file() and p.suffix.lower().lstrip(".") in wanted:
                found.append(str(p))
        found.sort()
        if not found:
            raise ValueError(f"no files with extensions {sorted(wanted)} in {root}")
        ctx.log(f"found {len(found)} file(s) in {root}")
        return {"files": found}


@node("util.write_manifest", title="Write manifest", category="Utility")
class WriteManifest:
    """Write a JSON manifest of files (relative path, size, SHA-256) into the run folder.

    Shared presets can pin a dataset by this manifest; re-running shows whether
    any file changed.
    """

    files = Input(FileList, doc="files to describe")
    filename = Param(RunPath(), "manifest.json", doc="name of the manifest inside the run folder")
    hash = Param(bool, True, doc="compute SHA-256 of each file")

    def run(self, ctx, files):
        entries = []
        root = Path(_common_root(files))
        for i, path in enumerate(files):
            ctx.check_cancelled()
            p = Path(path)
            entry = {"path": str(p.relative_to(root)), "bytes": p.stat().st_size}
            if self.hash:
                entry["sha256"] = _sha256(p)
            entries.append(entry)
            ctx.progress(i + 1, len(files))
        out = ctx.path(self.filename)
        atomic_write_text(out, json.dumps({"root": str(root), "files": entries}, indent=2) + "\n")
        ctx.saved(out, "json")
        return {}


def _common_root(files: list[str]) -> str:
    if len(files) == 1:
        return os.path.dirname(files[0])
    return os.path.commonpath(files)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
