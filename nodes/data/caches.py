"""RAM and disk caches for the data graph."""

from __future__ import annotations

import os
from pathlib import Path

from runtime import Dir, Input, Param, node
from runtime.data import CacheStage, passthrough
from runtime.data.cache import DiskStore, RamStore
from runtime.port_types import Caption, Image, Latent, Mask, Offset, Resolution, TextEmbedding, TokenIds

SLOTS = ("image", "mask", "latent", "caption", "tokens", "embedding", "size", "crop_offset")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nodetrainer" / "data"


class _Slots(CacheStage):
    """Slots shared by the generic caches; connect any of them."""

    image = Input(Image, optional=True, doc="image (PIL or tensor)")
    mask = Input(Mask, optional=True, doc="mask")
    latent = Input(Latent, optional=True, doc="encoded latent")
    caption = Input(Caption, optional=True, doc="caption")
    tokens = Input(TokenIds, optional=True, doc="token ids")
    embedding = Input(TextEmbedding, optional=True, doc="text-encoder output")
    size = Input(Resolution, optional=True, doc="a (width, height)")
    crop_offset = Input(Offset, optional=True, doc="a crop offset")

    def start(self, ctx, stage, values):
        if not stage.inputs:
            raise ValueError("nothing to cache: connect at least one input")
        super().start(ctx, stage, values)


@passthrough(*SLOTS)
@node("data.ram_cache", title="RAM cache", category="Data")
class RamCache(_Slots):
    """Keep what is computed upstream in memory, so later epochs do not compute it again.

    Filled at the start of the first epoch (with the batches node's worker count
    as threads); lasts for the run. Epoch e reads variation e % variations.
    """

    def make_store(self, ctx):
        return RamStore()


@passthrough(*SLOTS)
@node("data.disk_cache", title="Disk cache", category="Data")
class DiskCache(_Slots):
    """Store what is computed upstream on disk, reused across epochs and runs.

    Entries are keyed by the content of everything upstream (node types and
    versions, params, model fingerprints, the source files' size and mtime), so
    a change recomputes exactly the items it affects and nothing stale is read.
    """

    folder = Param(Dir(mode="save"), optional=True,
                   doc="cache folder (default: $XDG_CACHE_HOME/nodetrainer/data)")

    def make_store(self, ctx):
        folder = Path(self.folder) if self.folder else default_cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        return DiskStore(folder)
