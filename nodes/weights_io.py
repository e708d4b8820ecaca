"""Writing .safetensors files byte-for-byte reproducibly.

The safetensors library writes the header's metadata (and may write its tensor entries)
in hash-map order, which changes from one process to the next, so the same weights and
metadata gave different bytes in every run. ``write_safetensors`` writes with the library,
then rewrites the header in place in one fixed order: metadata first with sorted keys,
tensors in the order of their data. The data is not touched, and nothing is held in memory
but the header.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path


def write_safetensors(tensors: dict, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """``safetensors.torch.save_file`` with a header in a fixed order (same input, same bytes)."""
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=metadata)
    canonical_header(path)


def canonical_header(path: str | Path) -> None:
    """Rewrite a safetensors file's header in place in a fixed order; the same length, padded with
    spaces as the format allows, so no offset moves."""
    with open(path, "r+b") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length).decode("utf-8"))
        meta = header.pop("__metadata__", None)
        ordered = {"__metadata__": dict(sorted(meta.items()))} if meta is not None else {}
        ordered.update(sorted(header.items(), key=lambda kv: (kv[1]["data_offsets"][0], kv[0])))
        text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(text) > length:  # a writer that formats differently: leave its header as it is
            return
        f.seek(8)
        f.write(text + b" " * (length - len(text)))
