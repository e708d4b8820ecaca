"""Base classes for data-graph nodes: source, per-sample, aggregate, cache, merge and batches stages.

A data stage is an ordinary node class (``@node``, ``Input``, ``Output``,
``Param``) that also derives from one of these bases. Its ``run`` (provided
here) does not touch samples: it returns one lazy ``Field`` per sample output
port, and the items are evaluated later, on demand, by (epoch, index), in the
main process or in DataLoader workers. So a stage instance must pickle: keep
params and plain data on ``self``, open files and models per call.

Inputs whose type is a sample type (``Image``, ``Caption``...) receive the
item's value; value inputs (a VAE, a tokenizer) receive the value itself, the
same for every item. Unconnected optional inputs arrive as ``None``.

Per-sample stage, the common case::

    @passthrough("image", "mask")               # outputs named like these inputs
    @node("data.random_flip", title="Random flip", category="Data")
    class RandomFlip(PerSampleStage):
        \"\"\"Mirror left-right with a probability.\"\"\"
        image = Input(Image)
        mask = Input(Mask, optional=True)
        probability = Param(float, 0.5, min=0, max=1)

        def process(self, item, image, mask):
            if item.rng.random() < self.probability:
                image, mask = flip(image), flip(mask)
            return {"image": image, "mask": mask}

A model-backed stage takes its model as a value input and says so for caches::

    @node("sd.encode_image", category="Data")
    class EncodeImage(PerSampleStage):
        image = Input(ImageTensor)
        vae = Input(VAE)                  # its value must carry a str ``.fingerprint``
        latent = Output(Latent)
        random = False                    # deterministic: caches share results across seeds
        parallel = False                  # one item at a time when a cache fills

        def process(self, item, image, vae):
            return {"latent": vae.encode(image[None])...}

Bad data: raise ``SkipItem(reason, path)`` and the item leaves its batch with
a warning; any other exception fails the run, naming the node and the item.
"""

from __future__ import annotations

from typing import Any as _Any, Mapping

from ..params import Param, Seed, StrList
from ..port_types import SAMPLE, BatchSource as BatchSourceType, Field as AnyField, Resolution
from ..spec import Input, Output, field_name, rename_map
from .cache import CacheEngine, RamStore
from .engine import AggregateEngine, Field, MergeEngine, PerSampleEngine, SourceEngine, Stage
from .item import Item, SkipItem

__all__ = ["DataStage", "SourceStage", "PerSampleStage", "AggregateStage", "CacheStage", "MergeStage",
           "BatchesStage", "passthrough", "Item", "SkipItem"]


def _is_sample(port) -> bool:
    return getattr(port.type, "lifetime", None) == SAMPLE


class DataStage:
    """Common base of data stages; derive from one of the kinds below, not from this.

    Class attributes a stage may set:

    - ``random`` (default True): the stage draws random numbers (``item.rng``,
      ``item.seed``). Set False for deterministic stages so caches share their
      results across seeds, epochs and indices.
    - ``parallel`` (default True): False keeps a cache fill single-threaded
      (for stages holding a GPU model).
    - ``not_in_cache_key``: param names that do not change outputs (e.g. a batch size).
    """

    engine: type[Stage] = Stage
    random = True
    parallel = True
    not_in_cache_key: tuple[str, ...] = ()

    def setup(self, ctx, **values: _Any) -> None:
        """Called once per run, before any item, with the value inputs: check params
        (raise ``ValueError`` naming the param) and precompute what every item shares."""

    def run(self, ctx, **inputs):
        spec = type(self).__node_spec__
        sample_in = {p: inputs.get(p) for p, d in spec.inputs.items() if _is_sample(d)}
        values = {p: inputs.get(p) for p, d in spec.inputs.items() if not _is_sample(d)}
        self.setup(ctx, **values)
        outs = [o for o in spec.outputs.values() if _is_sample(o)]
        stage = self.engine(self, ctx.node_id, ctx.type_id, spec.version, sample_in, values,
                            outputs=[o.name for o in outs])
        stage.ctx = ctx
        self.start(ctx, stage, values)
        return {o.name: Field(stage, o.name, o.type.name) for o in outs}

    def start(self, ctx, stage: Stage, values: dict) -> None:
        """Hook for the kinds below (sources size their index space here)."""


class SourceStage(DataStage):
    """Fixes the index space (a folder scan, a list of concepts). Implement:

    - ``open(ctx, **values) -> int``: scan once per run; return the number of items.
    - ``fetch(epoch, index, seed) -> Mapping[port, value]``: item ``index``'s outputs
      (may compute ports lazily on access).
    - ``identity(port, epoch, index, seed) -> str``: what output ``port`` of the item is
      made of (a file's path, size and mtime), for cache keys.
    - ``describe(epoch, index, seed) -> str | None``: the file to name in messages.
    - ``content_key() -> str``: settings beyond params that define the items (optional).
    - ``scan_skipped() -> list[Skipped]``: files left out while scanning (optional).
    """

    engine = SourceEngine
    random = False

    def start(self, ctx, stage, values):
        n = self.open(ctx, **values)
        if not isinstance(n, int) or n < 0:
            raise TypeError(f"open() must return the number of items, not {n!r}")
        stage.length_value = n

    def open(self, ctx, **values) -> int:
        raise NotImplementedError

    def fetch(self, epoch: int, index: int, seed: int) -> Mapping[str, _Any]:
        raise NotImplementedError

    def identity(self, port: str, epoch: int, index: int, seed: int) -> str:
        return ""

    def describe(self, epoch: int, index: int, seed: int) -> str | None:
        return None

    def content_key(self) -> str:
        return ""

    def scan_skipped(self) -> list:
        return []


class PerSampleStage(DataStage):
    """Maps the fields of item i to new fields. Implement
    ``process(item, **inputs) -> dict[output port, value]`` (ports left out are None)."""

    engine = PerSampleEngine

    def process(self, item: Item, **inputs: _Any) -> dict[str, _Any]:
        raise NotImplementedError


class AggregateStage(DataStage):
    """Sees whole columns (bucketing, statistics). Implement
    ``aggregate(item, **columns) -> dict[output port, list]`` with one value per item;
    a sample input arrives as the list of every item's value (None for items found bad),
    ``item.index`` is None. It runs once per run, or once per epoch with ``per_epoch = True``,
    at the epoch barrier; items then read their value from the stored columns."""

    engine = AggregateEngine
    random = False
    per_epoch = False

    def aggregate(self, item: Item, **columns: _Any) -> dict[str, list]:
        raise NotImplementedError


class CacheStage(DataStage):
    """Stores the fields connected to ``fields`` per item and hands them on unchanged, each under its
    name: the name of the output port it comes from (``rename`` gives one another), so a cache fits any
    family's encoders. Implement ``make_store(ctx)`` returning an object with ``has(key)``, ``get(key)``
    (``cache.MISSING`` when absent) and ``put(key, value)``; it must pickle."""

    engine = CacheEngine
    random = False
    fields = Input(AnyField, multi=True, doc="per-sample fields to store; each is handed on under the name of "
                   "the output port it comes from")
    cached = Output(AnyField, mirrors="fields", renames="rename",
                    doc="one output per connected field, named and typed like the port it comes from")
    variations = Param(int, 1, min=1, max=10000,
                       doc="distinct versions of random upstream stages to keep; epoch e uses e % variations")
    rename = Param(StrList(), [], doc="hand a field on under another name: 'from=to' entries, from a port "
                   "name or node.port (e.g. hidden=embedding)")

    def make_store(self, ctx):
        return RamStore()

    def run(self, ctx, fields):
        spec = type(self).__node_spec__
        sources = cache_fields(fields, self.rename)
        stage = self.engine(self, ctx.node_id, ctx.type_id, spec.version, {"fields": list(fields)}, {},
                            outputs=list(sources), sources=sources)
        stage.ctx = ctx
        stage.store = self.make_store(ctx)
        return {name: Field(stage, name, f.type) for name, f in sources.items()}


class MergeStage(DataStage):
    """Joins branches of the data graph (each with its own source and stages) into one item stream.

    ``fields`` takes the first branch's fields, and each comes out under its name;
    ``more`` takes the same fields of any number of other branches (a branch is
    the fields that share a source), matched by name. Merged item ``i`` is the
    first branch's items, then the next branch's, and so on; stages inside a
    branch see the branch's own indices.
    """

    engine = MergeEngine
    random = False
    fields = Input(AnyField, multi=True, doc="the first branch's fields; each is handed on under the name of "
                   "the output port it comes from")
    more = Input(AnyField, multi=True, optional=True,
                 doc="the same fields of the other branches (any number), matched by name; a branch is the "
                     "fields that share a source")
    merged = Output(AnyField, mirrors="fields",
                    doc="one output per field of the first branch, named and typed like it; its items are "
                        "every branch's items, one branch after the other")

    def run(self, ctx, fields, more=None):
        spec = type(self).__node_spec__
        stage = self.engine(self, ctx.node_id, ctx.type_id, spec.version,
                            {"fields": list(fields or []), "more": list(more or [])}, {})
        stage.ctx = ctx
        shown = [f"{len(f)} item(s) from {f.space.node_id!r}" for f in (next(iter(b.values())) for b in stage.branches)]
        more_text = f", and {len(shown) - 8} more" if len(shown) > 8 else ""
        ctx.log(f"merged {len(shown)} branch(es): {', '.join(shown[:8])}{more_text}", items=stage.length,
                branches=len(shown))
        return {name: Field(stage, name, stage.field_types[name]) for name in stage.outputs}

    def check(self, c) -> None:
        """Before a run: every branch in 'more' hands on the first branch's fields, with fitting types."""
        from .merge_check import check_branches

        check_branches(c)


def cache_fields(fields: list, rename: list[str] | None = None) -> dict[str, Field]:
    """The fields a cache hands on, by name (``rename`` entries ``from=to``); a name given twice is an
    error naming both links."""
    renames, bad = rename_map(list(rename or []))
    if bad:
        raise ValueError(f"param 'rename': {bad[0]}")
    out: dict[str, Field] = {}
    for f in fields if isinstance(fields, list) else [fields]:
        if not isinstance(f, Field):
            raise TypeError(f"input 'fields' got {type(f).__name__}, not a data-graph field")
        name = field_name(f.node_id, f.port, renames)
        if name in out:
            raise ValueError(f"two links into 'fields' are both named {name!r}: {out[name].link} and {f.link}")
        out[name] = f
    if not out:
        raise ValueError("nothing to cache: connect at least one field to 'fields'")
    return out


def passthrough(*names: str, **typed):
    """Class decorator (above ``@node``): give the node outputs named like these inputs.

    ``@passthrough("image", "mask")`` adds outputs ``image`` and ``mask`` of the
    inputs' types; ``@passthrough(image=ImageTensor)`` sets the output type.
    Batch fields are named after output ports, so a transform keeps its field's name.
    """

    def wrap(cls):
        spec = getattr(cls, "__node_spec__", None)
        if spec is None or spec.cls is not cls:
            raise TypeError(f"{cls.__name__}: put @passthrough above @node")
        added = {}
        wanted = set(names) | set(typed)
        missing = wanted - set(spec.inputs)
        if missing:
            raise TypeError(f"{cls.__name__}: @passthrough names {', '.join(sorted(missing))}, not input(s)")
        for name in [n for n in spec.inputs if n in wanted]:
            decl = spec.inputs[name]
            out = Output(typed.get(name, decl.type), doc=decl.doc)
            out.name = name
            added[name] = out
        spec.outputs = {**added, **{k: v for k, v in spec.outputs.items() if k not in added}}
        return cls

    return wrap


class BatchesStage(DataStage):
    """Turns fields into batches: a ``BatchSource`` value for the training loop.

    Batch field names are the names of the output ports connected to ``fields``.
    With ``bucket`` connected, every batch holds items of one bucket. Under
    torch.distributed (world size above 1) the source shards every epoch's plan per
    rank by itself (``runtime.data.batches``); subclasses may override ``make_source``.
    """

    fields = Input(AnyField, multi=True, doc="per-sample fields to put in each batch; a batch key is the "
                   "name of the connected output port")
    bucket = Input(Resolution, optional=True, doc="group items by this value so every batch has one size "
                   "(connect aspect bucketing's bucket)")
    batches = Output(BatchSourceType, doc="batches of the connected fields, per epoch")
    batch_size = Param(int, 4, min=1, max=65536, doc="items per batch")
    shuffle = Param(bool, True, doc="new item and batch order every epoch")
    drop_last = Param(bool, False, doc="leave out the last, smaller batch of each bucket")
    workers = Param(int, 0, min=0, max=64, doc="DataLoader worker processes (0: load in the training process); "
                    "also threads used to fill caches")
    seed = Param(Seed(), 42, doc="run seed of the data graph: shuffling and every random stage (-1: random)")

    def run(self, ctx, fields, bucket=None):
        return {"batches": self.make_source(ctx, fields, bucket)}

    def batch_fields(self, view) -> set[str]:
        """The batch keys this node will produce (for checks before a run): the connected port names."""
        return {link.port for link in view.links("fields")}

    def make_source(self, ctx, fields, bucket):
        from .batches import BatchSource, named_fields

        seed = self.seed
        if seed == Seed.RANDOM:
            import secrets

            seed = secrets.randbelow(Seed.MAX + 1)
        return BatchSource(named_fields(fields), bucket, batch_size=self.batch_size, shuffle=self.shuffle,
                           drop_last=self.drop_last, workers=self.workers, seed=seed, node_id=ctx.node_id, ctx=ctx)
