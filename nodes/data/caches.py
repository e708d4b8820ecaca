"""RAM and disk caches for the data graph.

Both hand on any number of named fields (whatever a family's encoders produce), each under the name of
the output port it comes from. Version 1 had fixed slots (image, mask, latent, caption, tokens,
embedding, size, crop_offset); ``migrate_slots`` turns such a node into version 2.
"""

from __future__ import annotations

import os
from pathlib import Path

from runtime import Dir, Param, node
from runtime.data import CacheStage
from runtime.data.cache import DiskStore, RamStore

#: the version-1 input ports, in their declared order
V1_SLOTS = ("image", "mask", "latent", "caption", "tokens", "embedding", "size", "crop_offset")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nodetrainer" / "data"


def migrate_slots(state: dict) -> dict:
    """Version 1 -> 2: the slots' links become the links of ``fields`` (slot order), so downstream edges
    ``cache.SLOT`` keep resolving. A slot fed from a port of another name (``embedding: te.hidden``) gets a
    ``rename`` entry (``hidden=embedding``; ``te.hidden=embedding`` when two slots are fed from ports of
    one name), so the field, and the batch key behind it, keeps the slot's name."""
    ins = dict(state.get("in") or {})
    unknown = [p for p in ins if p not in V1_SLOTS]
    if unknown:
        raise ValueError(f"version 1 has no input(s) {', '.join(map(repr, unknown))}")
    links = []
    for slot in V1_SLOTS:
        if slot in ins:
            if not isinstance(ins[slot], str):
                raise ValueError(f"input {slot!r} takes one link, got {ins[slot]!r}")
            links.append((slot, ins[slot]))
    ports = [text.rpartition(".")[2] for _, text in links]
    rename = []
    for (slot, text), port in zip(links, ports):
        if port != slot:
            rename.append(f"{text if ports.count(port) > 1 else port}={slot}")
    params = dict(state.get("params") or {})
    if rename:
        params["rename"] = rename
    return {"params": params, "in": {"fields": [text for _, text in links]} if links else {}}


@node("data.ram_cache", version=2, title="RAM cache", category="Data")
class RamCache(CacheStage):
    """Keep what is computed upstream in memory, so later epochs do not compute it again.

    Connect any fields to 'fields'; each comes out under its own name. Filled at the
    start of the first epoch (with the batches node's worker count as threads); lasts
    for the run. Epoch e reads variation e % variations.
    """

    migrations = {1: migrate_slots}

    def make_store(self, ctx):
        return RamStore()


@node("data.disk_cache", version=2, title="Disk cache", category="Data")
class DiskCache(CacheStage):
    """Store what is computed upstream on disk, reused across epochs and runs.

    Connect any fields to 'fields'; each comes out under its own name. Entries are
    keyed by the content of everything upstream (node types and versions, params,
    model fingerprints, the source files' size and mtime), so a change recomputes
    exactly the items it affects and nothing stale is read.
    """

    migrations = {1: migrate_slots}
    folder = Param(Dir(mode="save"), optional=True,
                   doc="cache folder (default: $XDG_CACHE_HOME/nodetrainer/data)")

    def make_store(self, ctx):
        folder = Path(self.folder) if self.folder else default_cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        return DiskStore(folder)
