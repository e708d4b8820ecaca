"""Cache stages: per-item storage (RAM or disk) keyed by upstream content, filled at epoch barriers.

Epoch ``e`` reads variation ``e % variations``: with the default of one
variation, every epoch reuses what the first one computed (so random stages
above a cache are frozen at that variation). Entries are content-addressed
(see ``keys``): nothing is ever looked up by position, so a changed param or
file simply misses and is recomputed, and stale entries are never served.

Several ranks (``Preparer.group`` set: every rank of a torch.distributed process
group prepares together): a disk store is filled once per folder. The ranks find
out which of them see the same folder (each leaves a probe file there and looks
for the others': one machine, or several on a shared filesystem; a machine with a
folder of its own fills it alone), exchange what each finds missing, and the ranks
of one folder split the union of their missing entries; then they exchange the
items found bad, which is also the barrier after which every rank reads. A RAM
store is per process, so each rank fills its own. Under a process group the fill
goes in rounds of a few items per rank, each ended by a collective that asks
whether any rank was told to stop: a stop on any rank stops all of them within a
round (``Cancelled``), and what was written stays whole (files are renamed into
place).
"""

from __future__ import annotations

import os
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any as _Any

from ..errors import Cancelled
from .engine import Eval, Preparer, Skipped, Stage, _Outputs, upstream_stages
from .item import DataStageError, SkipItem
from .keys import ItemKeyer

MISSING = object()
#: items each rank computes between two checks for a stop on any rank (a collective), at least
ROUND_ITEMS = 8


class RamStore:
    """Entries in this process's memory. Worker processes see what was stored before they started."""

    #: one per process: every rank fills its own
    shared = False

    def __init__(self) -> None:
        self.data: dict[str, _Any] = {}

    def has(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str) -> _Any:
        return self.data.get(key, MISSING)

    def put(self, key: str, value: _Any) -> None:
        self.data[key] = value

    def __len__(self) -> int:
        return len(self.data)


class DiskStore:
    """One ``.pt`` file per entry under ``folder`` (``torch.save``; read back with ``weights_only=True``).

    Values may be tensors, numbers, strings, None, PIL images, numpy arrays and
    lists/tuples/dicts of those. A write goes to a temporary file that is
    renamed into place; an entry that fails to load counts as missing and is
    recomputed, so no fsync is needed. Readers in other processes (ranks, workers)
    see a whole file or none: a reader keeps the file it opened when a writer
    replaces it, and a writer that cannot replace a file another process holds
    open (Windows) leaves that equal entry in place.
    """

    #: a folder that other ranks may see too (the ranks find out which: on one machine all of them)
    shared = True

    def __init__(self, folder: str | os.PathLike):
        self.folder = os.fspath(folder)

    def path(self, key: str) -> str:
        return os.path.join(self.folder, key[:2], key + ".pt")

    def has(self, key: str) -> bool:
        return os.path.exists(self.path(key))

    def get(self, key: str) -> _Any:
        import torch

        try:
            # mmap: tensors are read straight from the page cache when a batch is stacked
            obj = torch.load(self.path(key), weights_only=True, map_location="cpu", mmap=True)
        except FileNotFoundError:
            return MISSING
        except Exception:  # a torn or foreign file: recompute it
            return MISSING
        return decode(obj)

    def put(self, key: str, value: _Any) -> None:
        import torch

        path = self.path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            torch.save(encode(value), tmp)
            try:
                os.replace(tmp, path)
            except PermissionError:
                if not os.path.exists(path):
                    raise
                os.unlink(tmp)  # another process wrote this entry and holds it open: same content
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def __len__(self) -> int:
        n = 0
        for _, _, files in os.walk(self.folder):
            n += sum(1 for f in files if f.endswith(".pt"))
        return n


def encode(value: _Any) -> _Any:
    """A value in a form ``torch.load(weights_only=True)`` accepts."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if isinstance(value, tuple):
        return tuple(encode(v) for v in value)
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {"__dict__": {str(k): encode(v) for k, v in value.items()}}
    mod = type(value).__module__
    if mod.startswith("torch"):
        return value.detach().cpu() if hasattr(value, "detach") else value
    if mod.startswith("PIL."):
        return {"__pil__": value.mode, "size": tuple(value.size), "data": value.tobytes()}
    if mod == "numpy":
        import torch

        return {"__np__": torch.from_numpy(value.copy())}
    raise TypeError(f"a disk cache cannot store {type(value).__name__} values")


def decode(obj: _Any) -> _Any:
    if isinstance(obj, dict):
        if "__pil__" in obj:
            from PIL import Image

            return Image.frombytes(obj["__pil__"], tuple(obj["size"]), obj["data"])
        if "__np__" in obj:
            return obj["__np__"].numpy()
        if "__dict__" in obj:
            return {k: decode(v) for k, v in obj["__dict__"].items()}
    if isinstance(obj, tuple):
        return tuple(decode(v) for v in obj)
    if isinstance(obj, list):
        return [decode(v) for v in obj]
    return obj


class _CachedItem(_Outputs):
    """One item's cached fields, each read from the store (or computed, and stored when filling) when first
    asked for: the batch plan reads the bucket without loading the latents."""

    __slots__ = ("stage", "ev", "variation", "index", "keys", "memo")

    def __init__(self, stage, ev: Eval, variation: int, index: int, keys: tuple[str, ...]):
        super().__init__()
        self.stage, self.ev, self.variation, self.index, self.keys = stage, ev, variation, index, keys
        self.memo: dict = {}

    def __missing__(self, port):
        stage = self.stage
        j = stage.slot_of.get(port)
        if j is None:
            return None
        k = self.keys[j]
        value = stage.store.get(k)
        if value is MISSING:
            value = stage.slots[j][1].get(self.ev.at(self.variation), self.index, self.memo)
            if self.ev.fill:
                stage.store.put(k, value)
        self[port] = value
        return value


class CacheEngine(Stage):
    """Pass-through of the connected fields, stored per item under their names; see the module doc."""

    kind = "cache"
    barrier = True

    def __init__(self, *args, sources: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        #: output name -> the upstream field it hands on
        self.sources = dict(sources or {})
        self.slots = list(self.sources.items())
        self.slot_of = {port: j for j, (port, _) in enumerate(self.slots)}
        self.variations = max(1, int(getattr(self.node, "variations", 1)))
        self.store = None
        self._keyers: list[ItemKeyer] | None = None
        self._keys: dict[tuple[int, int], list[tuple[str, ...]]] = {}
        self._failed: dict[tuple[int, int], dict[int, Skipped]] = {}
        self._ready: set[tuple[int, int]] = set()
        #: counts of the last fill: hits, computed, failed
        self.stats = {"hits": 0, "computed": 0, "failed": 0}

    def source_of(self, port: str):
        return self.sources.get(port)

    def keyers(self) -> list[ItemKeyer]:
        if self._keyers is None:
            self._keyers = [ItemKeyer(f) for _, f in self.slots]
        return self._keyers

    def item_keys(self, seed: int, variation: int, index: int) -> tuple[str, ...]:
        return tuple(k.key(seed, variation, index) for k in self.keyers())

    def compute(self, ev, index, memo):
        v = ev.epoch % self.variations
        failed = self._failed.get((ev.seed, v))
        if failed and index in failed:
            s = failed[index]
            raise SkipItem(s.reason, s.path)
        keys = self._keys.get((ev.seed, v))
        ks = keys[index] if keys is not None else self.item_keys(ev.seed, v, index)
        return _CachedItem(self, ev, v, index, ks)

    def prepare(self, epoch, prep):
        v = epoch % self.variations
        tag = (prep.seed, v)
        if tag in self._ready:
            return
        prep.prepare_fields(self.upstream(), v)
        n = self.length
        try:
            keys = [self.item_keys(prep.seed, v, i) for i in range(n)]
        except ValueError as e:
            raise DataStageError(f"node {self.node_id!r} ({self.type_id}): cannot key the cache: {e}") from e
        self._keys[tag] = keys
        if not prep.fill:
            return
        store = self.store
        todo = []
        for i, ks in enumerate(keys):
            miss = [j for j, k in enumerate(ks) if not store.has(k)]
            if miss:
                todo.append((i, miss))
        failed = self._failed.setdefault(tag, {})
        self.stats = {"hits": n - len(todo), "computed": 0, "failed": 0}
        group = prep.group
        shared = group is not None and getattr(store, "shared", False)
        if shared:
            todos = _gathered(todo)
            if any(todos):
                sharers = _sharers(store.folder, *group)
                todo = _share_of([todos[r] for r in sharers], sharers.index(group[0]), len(sharers))
        if todo or group is not None:
            self._fill(todo, keys, Eval(v, prep.seed, True), prep, failed, group is not None)
        if shared:
            for found in _gathered(sorted(failed.items())):
                failed.update(found)
        self._ready.add(tag)
        if self.ctx is not None:
            s = self.stats
            self.ctx.log(f"cache ready for epoch {epoch} (variation {v}): {s['hits']} of {n} item(s) found, "
                         f"{s['computed']} computed, {s['failed']} skipped", epoch=epoch, variation=v, **s)

    def _fill(self, todo, keys, ev: Eval, prep: Preparer, failed: dict, ranks: bool = False) -> None:
        """Compute and store ``todo``; with ``ranks`` (a process group) in rounds that every rank runs,
        each ending in the question whether any rank was told to stop."""
        store = self.store

        def one(job):
            i, miss = job
            memo: dict = {}
            try:
                for j in miss:
                    store.put(keys[i][j], self.slots[j][1].get(ev, i, memo))
            except SkipItem as e:
                return i, e
            return i, None

        threads = prep.workers if self._parallel() else 0
        ctx = self.ctx
        done, last = 0, 0.0
        pool = ThreadPoolExecutor(threads) if threads > 1 and len(todo) > 1 else None
        if ranks:
            size = max(ROUND_ITEMS, 2 * threads)
            parts = [todo[k:k + size] for k in range(0, len(todo), size)]
            parts += [[]] * (max(_gathered(len(parts))) - len(parts))  # every rank takes part in every round
        else:
            parts = [todo]
        try:
            for part in parts:
                results = pool.map(one, part) if pool and len(part) > 1 else map(one, part)
                stop, error = False, None
                try:
                    for i, err in results:
                        done += 1
                        if err is None:
                            self.stats["computed"] += 1
                        else:
                            self.stats["failed"] += 1
                            failed[i] = prep.skip(self.node_id, ev, i, err, self)
                        if ctx is not None:
                            if ctx.cancelled:
                                if not ranks:
                                    ctx.check_cancelled()
                                stop = True
                                break
                            now = time.monotonic()
                            if now - last > 0.5 or done == len(todo):
                                last = now
                                ctx.progress(done, len(todo), phase="cache")
                except Exception as e:
                    if not ranks:
                        raise
                    error = e  # said after the round, so that the other ranks do not wait for this one
                if ranks:
                    self._end_round(stop or (ctx is not None and ctx.cancelled), error)
        finally:
            if pool:
                pool.shutdown(wait=True, cancel_futures=True)

    def _end_round(self, stop: bool, error: Exception | None) -> None:
        """After a round of a fill under a process group: every rank raises when any rank failed (its
        error here, a one-line pointer on the others) or was told to stop (``Cancelled``); a collective."""
        worst = _most_on_any_rank(2 if error is not None else 1 if stop else 0)
        if error is not None:
            raise error
        if worst == 2:
            raise DataStageError(f"node {self.node_id!r} ({self.type_id}): filling the cache failed on another "
                                 f"rank (its log says why)")
        if worst == 1:
            ctx = self.ctx
            if ctx is not None:
                ctx.check_cancelled()
                ctx.cancel.request("stop on another rank")
            raise Cancelled("stop on another rank")

    def _parallel(self) -> bool:
        return all(getattr(st.node, "parallel", True) for st in upstream_stages(self.upstream()))


def _gathered(obj) -> list:
    """``obj`` of every rank of the torch.distributed process group, by rank (a collective)."""
    import torch.distributed as dist

    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _most_on_any_rank(value: int) -> int:
    """The largest of every rank's ``value`` (a collective)."""
    import torch
    import torch.distributed as dist

    t = torch.tensor([int(value)], dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def _sharers(folder: str, rank: int, world: int) -> list[int]:
    """The ranks that see the same cache folder as ``rank`` (it among them, in order; a collective).
    Each rank leaves a probe file in its folder and looks for the others'; ranks that see each other
    (either way: a shared filesystem may be slow to show a new file) share, and so do their sharers."""
    os.makedirs(folder, exist_ok=True)
    name = f".ranks-probe-{secrets.token_hex(8)}"
    probe = os.path.join(folder, name)
    with open(probe, "wb"):
        pass
    try:
        names = _gathered(name)  # after it, every rank's probe is written
        views = _gathered([r for r, other in enumerate(names) if os.path.exists(os.path.join(folder, other))])
    finally:  # every rank has looked: the second exchange is the barrier
        os.unlink(probe)
    linked = [set(v) for v in views]
    for r, seen in enumerate(views):
        for other in seen:
            linked[other].add(r)
    group, stack = {rank}, [rank]
    while stack:
        for other in linked[stack.pop()] - group:
            group.add(other)
            stack.append(other)
    return sorted(group)


def _share_of(todos: list, rank: int, world: int) -> list:
    """Rank ``rank``'s part of the union of every rank's missing ``(item, slots)``: every ``world``-th."""
    union: dict[int, set[int]] = {}
    for todo in todos:
        for i, miss in todo:
            union.setdefault(i, set()).update(miss)
    return [(i, sorted(union[i])) for i in sorted(union)][rank::world]
