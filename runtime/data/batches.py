"""The batch source: what a batches stage outputs and the training loop consumes.

Contract (``BatchSource``):

- ``source.fields`` -> names of the fields in each batch (the connected output ports' names);
- ``source.batch_size`` -> int; ``len(source)`` -> batches per epoch (from epoch 0's plan);
- ``source.epoch(epoch, start=0)`` -> iterator of batch dicts, from batch ``start`` (resume).
  The same graph, seed and epoch give the same batches. A batch maps each field name to
  a stacked tensor when the items are equal-shape tensors, to a 1-D tensor when they are
  numbers, to an (N, k) tensor when they are equal-length tuples of numbers (sizes, crop
  offsets), and to a list otherwise (captions, paths, PIL images); ``"_index"`` lists the
  items' sample indices and ``"_epoch"`` (an int) is the epoch the batch belongs to, so that
  (``_epoch``, ``_index[i]``) names a sample whatever the batch and rank it lands in;
- ``source.epoch_summary(epoch)`` -> ``EpochSummary`` (items, batches, skipped items).

Bad items: files that cannot be read at scan time never enter the index space
(``summary.scan_skipped``). An item found bad while an epoch runs (a truncated
image, a caption deleted since the scan) leaves its batch, which is then
smaller; a warning names the file once, and the item is left out of later
epochs too. The batch plan never depends on what was found bad, so batch
``b`` of an epoch is the same batch after a resume. Each epoch's summary is
also logged when the epoch ends.

Several ranks (torch.distributed initialised with a world size above 1, or
``rank``/``world`` passed explicitly): every rank computes the plan one process
would use at batch size ``world * batch_size`` (same shuffle, same buckets), and
each of its batches becomes a step: split into ``world`` batches, rank ``r`` takes
the ``r``-th. A step of N ranks at batch b thus trains on the samples of one
batch of a single process at batch N*b. See ``split_steps`` for the uneven end.
``len(source)`` and ``start`` then count this rank's batches. A disk cache is
filled once per folder, its missing entries split by the ranks that see it.

Workers: with ``workers > 0``, batches are built in torch DataLoader worker
processes (forked, so they see what the epoch barrier prepared: aggregate
columns, RAM caches). Stages holding a GPU model belong above a cache, or
use ``workers = 0``.
"""

from __future__ import annotations

import random as _random
from dataclasses import dataclass, field as _dc_field
from typing import Any as _Any, Iterator

from .engine import Eval, Field, Preparer, Skipped, frontier_barriers
from .item import SkipItem, mix_seed, stable_id


def named_fields(fields: list[Field]) -> dict[str, Field]:
    """Fields by their port name; two connected ports with the same name are an error naming both links."""
    out: dict[str, Field] = {}
    for f in fields:
        if not isinstance(f, Field):
            raise TypeError(f"input 'fields' got {type(f).__name__}, not a data-graph field")
        if f.port in out:
            raise ValueError(f"two connected fields are both named {f.port!r}: {out[f.port].link} and {f.link}; "
                             f"batch keys come from output port names, so each must be distinct")
        if f.port.startswith("_"):
            raise ValueError(f"field {f.link}: names starting with '_' are reserved")
        out[f.port] = f
    if not out:
        raise ValueError("no fields connected: connect the data stages whose outputs go into each batch")
    return out


@dataclass
class EpochSummary:
    """What one epoch delivered and what it left out."""

    epoch: int
    batches: int = 0
    items: int = 0
    #: items left out during this epoch (unreadable at load time), each once
    skipped: list[Skipped] = _dc_field(default_factory=list)
    #: files left out when the concepts were scanned (never part of the index space)
    scan_skipped: list[Skipped] = _dc_field(default_factory=list)
    complete: bool = False

    @property
    def skipped_count(self) -> int:
        return len(self.skipped) + len(self.scan_skipped)

    def text(self) -> str:
        head = f"epoch {self.epoch}: {self.items} item(s) in {self.batches} batch(es)"
        if not self.skipped_count:
            return head + ", nothing skipped"
        reasons: dict[str, int] = {}
        for s in self.scan_skipped + self.skipped:
            reasons[_reason_kind(s.reason)] = reasons.get(_reason_kind(s.reason), 0) + 1
        detail = ", ".join(f"{n} {k}" for k, n in sorted(reasons.items()))
        return (f"{head}; skipped {self.skipped_count} ({len(self.scan_skipped)} at scan, "
                f"{len(self.skipped)} while loading): {detail}")


def _reason_kind(reason: str) -> str:
    return reason.split(":", 1)[0].strip()


class BatchSource:
    """Batches of named fields, epoch by epoch; see the module doc for the contract."""

    def __init__(self, fields: dict[str, Field], bucket: Field | None = None, *, batch_size: int = 1,
                 shuffle: bool = True, drop_last: bool = False, workers: int = 0, seed: int = 0,
                 node_id: str = "batches", ctx=None, rank: int | None = None, world: int | None = None):
        spaces = {id(f.space): f for f in list(fields.values()) + ([bucket] if bucket is not None else [])}
        if len(spaces) > 1:
            shown = ", ".join(f"{f.link} (source {f.space.node_id!r})" for f in spaces.values())
            raise ValueError(f"fields come from different sources and cannot share batches: {shown}")
        self._fields = dict(fields)
        self._bucket = bucket
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.workers = int(workers)
        self.seed = int(seed)
        self.node_id = node_id
        self.ctx = ctx
        self._space = next(iter(fields.values())).space
        if bucket is not None:
            check_bucket(bucket, fields, node_id)
        if (rank is None) != (world is None):
            raise ValueError(f"node {node_id!r}: pass both rank and world, or neither")
        if world is not None and not (int(world) >= 1 and 0 <= int(rank) < int(world)):
            raise ValueError(f"node {node_id!r}: rank {rank} is not in a world of {world}")
        self._ranks = None if world is None else (int(rank), int(world))
        #: (epoch, batch size) -> (bucket key, batch) of the plan
        self._plans: dict[tuple[int, int], list[tuple[_Any, list[int]]]] = {}
        #: epoch -> (generator state after the item shuffle, shuffled items per bucket)
        self._groups: dict[int, tuple[tuple, dict[_Any, list[int]]]] = {}
        self._summaries: dict[int, EpochSummary] = {}
        self._bad: dict[int, Skipped] = {}
        self._warned: set[str] = set()

    # -- contract ----------------------------------------------------------------
    @property
    def fields(self) -> list[str]:
        return list(self._fields)

    @property
    def items(self) -> int:
        """Items per epoch (the index space)."""
        return self._space.length

    def __len__(self) -> int:
        return len(self.plan(0))

    def for_rank(self, rank: int, world: int) -> BatchSource:
        """This source as rank ``rank`` of ``world`` sees it, whatever torch.distributed says
        (``for_rank(0, 1)``: the whole plan, e.g. for a validation pass on one rank); caches
        then fill without waiting for other ranks."""
        return BatchSource(self._fields, self._bucket, batch_size=self.batch_size, shuffle=self.shuffle,
                           drop_last=self.drop_last, workers=self.workers, seed=self.seed,
                           node_id=self.node_id, ctx=self.ctx, rank=rank, world=world)

    def ranks(self) -> tuple[int, int]:
        """``(rank, world)``: as passed, else from an initialised torch.distributed, else ``(0, 1)``."""
        return self._ranks or process_group() or (0, 1)

    def _preparer(self) -> Preparer:
        # only ranks found in torch.distributed prepare together (explicit ones have no process group)
        group = process_group() if self._ranks is None else None
        return Preparer(self.seed, fill=True, workers=self.workers, group=group)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[dict]:
        """This rank's batches of ``epoch`` from its batch index ``start``."""
        prep = self._preparer()
        prep.prepare_fields(self._all_fields(), epoch)
        plan = self.plan(epoch, prep)
        rank, world = self.ranks()
        if not plan:
            on_ranks = f", {world} ranks (with drop_last a step needs {world} full batches of one bucket)" \
                if world > 1 else ""
            raise ValueError(f"node {self.node_id!r}: no batches: {self.items} item(s), batch size "
                             f"{self.batch_size}, drop_last {'on' if self.drop_last else 'off'}{on_ranks}")
        summary = EpochSummary(epoch, scan_skipped=self.scan_skipped())
        self._summaries[epoch] = summary
        seen: set[int] = set()
        # items found bad inside a branch of a merge carry the branch's index: they surface below
        for s in prep.skipped_in(self._space) + list(self._bad.values()):
            self._note(summary, seen, s)  # known-bad items count in every epoch's summary
        work = [[i for i in batch if i not in self._bad] for batch in plan[start:]]
        for k, batch in enumerate(self._run(epoch, work)):
            for s in batch.pop("_skipped"):
                self._note(summary, seen, s)
            if not batch["_index"] and world > 1:
                # every rank must yield a batch at every step, or the others wait in the next all-reduce
                batch = self._stand_in(epoch, start + k, rank, summary, seen)
            if not batch["_index"]:
                continue
            summary.batches += 1
            summary.items += len(batch["_index"])
            yield batch
        summary.complete = True
        if self.ctx is not None:
            self.ctx.log(summary.text(), "warning" if summary.skipped_count else "info", epoch=epoch,
                         items=summary.items, batches=summary.batches, skipped=summary.skipped_count)

    def as_fields(self) -> dict[str, Field]:
        """The batch fields (and the bucket), for the preview."""
        out = dict(self._fields)
        if self._bucket is not None and "bucket" not in out:
            out["bucket"] = self._bucket
        return out

    def epoch_summary(self, epoch: int) -> EpochSummary:
        """The summary of ``epoch`` (partial while it runs; empty if it has not started)."""
        return self._summaries.get(epoch) or EpochSummary(epoch, scan_skipped=self.scan_skipped())

    # -- helpers -----------------------------------------------------------------
    def scan_skipped(self) -> list[Skipped]:
        space = self._space
        return list(space.scan_skipped()) if hasattr(space, "scan_skipped") else []

    def _all_fields(self) -> list[Field]:
        return list(self._fields.values()) + ([self._bucket] if self._bucket is not None else [])

    def plan(self, epoch: int, prep: Preparer | None = None) -> list[list[int]]:
        """Sample indices of this rank's batches of ``epoch`` (the whole plan on one rank)."""
        rank, world = self.ranks()
        if world == 1:
            return self.global_plan(epoch, prep)
        return [step[rank] for step in self.steps(epoch, prep)]

    def steps(self, epoch: int, prep: Preparer | None = None) -> list[list[list[int]]]:
        """The plan of ``epoch`` as steps: per step, one batch per rank, all of one bucket; the steps are
        the batches of a single process at batch size ``world * batch_size``, each split over the ranks."""
        world = self.ranks()[1]
        return split_steps(self._keyed_plan(epoch, prep, self.batch_size * world), world)

    def global_plan(self, epoch: int, prep: Preparer | None = None) -> list[list[int]]:
        """Sample indices of each batch of ``epoch`` as one process batches it (bucket-homogeneous with a
        bucket)."""
        return [batch for _, batch in self._keyed_plan(epoch, prep, self.batch_size)]

    def _keyed_plan(self, epoch: int, prep: Preparer | None, batch_size: int) -> list[tuple[_Any, list[int]]]:
        found = self._plans.get((epoch, batch_size))
        if found is not None:
            return found
        state, groups = self._grouped(epoch, prep)
        batches = []
        for key, members in groups.items():
            for k in range(0, len(members), batch_size):
                chunk = members[k:k + batch_size]
                if len(chunk) < batch_size and self.drop_last:
                    continue
                batches.append((key, chunk))
        if self.shuffle:
            rng = _random.Random()
            rng.setstate(state)  # the generator as the item shuffle left it: one seed orders both
            rng.shuffle(batches)
        if len(self._plans) >= 8:
            self._plans.pop(next(iter(self._plans)))
        self._plans[(epoch, batch_size)] = batches
        return batches

    def _grouped(self, epoch: int, prep: Preparer | None) -> tuple[tuple, dict[_Any, list[int]]]:
        """The shuffled items of ``epoch`` grouped by bucket, with the state of the generator after the
        shuffle (the batch shuffle continues from it)."""
        found = self._groups.get(epoch)
        if found is not None:
            return found
        n = self.items
        rng = _random.Random(mix_seed(self.seed, stable_id(self.node_id), epoch))
        order = list(range(n))
        if self.shuffle:
            rng.shuffle(order)
        groups: dict[_Any, list[int]] = {}
        if self._bucket is None:
            groups[None] = order
        else:
            # filling: a bucket that comes through a cache is then read from it, not computed twice
            prep = prep or self._preparer()
            prep.prepare_fields([self._bucket], epoch)
            ev = Eval(epoch, self.seed, prep.fill)
            for i in order:
                try:
                    b = self._bucket.get(ev, i, {})
                except SkipItem as e:
                    s = prep.skip(self.node_id, ev, i, e, self._bucket.stage)
                    self._bad.setdefault(i, s)
                    continue
                groups.setdefault(_hashable(b), []).append(i)
        if len(self._groups) >= 4:
            self._groups.pop(next(iter(self._groups)))
        self._groups[epoch] = (rng.getstate(), groups)
        return self._groups[epoch]

    def _stand_in(self, epoch: int, pos: int, rank: int, summary: EpochSummary, seen: set[int]) -> dict:
        """A batch for a rank whose batch at step ``pos`` lost every item: readable items of the same
        step's other batches (same bucket), up to the batch's planned size; an error if there are none."""
        step = self.steps(epoch)[pos]
        size = max(1, len(step[rank]))
        others = [i for j, b in enumerate(step) if j != rank for i in b if i not in self._bad]
        batch = make_batch(self._fields, Eval(epoch, self.seed, True), others[:size])
        for s in batch.pop("_skipped"):
            self._note(summary, seen, s)
        if not batch["_index"]:
            raise ValueError(f"node {self.node_id!r}: epoch {epoch}, step {pos}: every item of the step's "
                             f"batches is unreadable, and with several ranks each rank needs a batch at "
                             f"every step; remove the unreadable files (see the warnings)")
        return batch

    def _note(self, summary: EpochSummary, seen: set[int], s: Skipped) -> None:
        if s.index in seen:
            return
        seen.add(s.index)
        summary.skipped.append(s)
        if s.index is not None:
            self._bad.setdefault(s.index, s)
        key = s.path or f"item {s.index}"
        if key not in self._warned:
            self._warned.add(key)
            if self.ctx is not None:
                by = f" (found by {s.node!r})" if s.node else ""
                self.ctx.warn(f"skipped {key}{by}: {s.reason}", path=s.path, index=s.index, epoch=summary.epoch)

    def _run(self, epoch: int, work: list[list[int]]) -> Iterator[dict]:
        job = BatchJob(self._fields, Eval(epoch, self.seed, True), work)
        if self.workers <= 0:
            # no cancellation check here: the consumer stops between steps (and writes its backup)
            for k in range(len(job)):
                yield job[k]
            return
        import torch
        from torch.utils.data import DataLoader

        # without a generator of its own, DataLoader draws its workers' base seed from torch's global one
        gen = torch.Generator()
        gen.manual_seed(mix_seed(self.seed, stable_id(self.node_id), epoch, 0xD47A))
        loader = DataLoader(job, batch_size=None, shuffle=False, num_workers=self.workers,
                            collate_fn=_identity, persistent_workers=False, generator=gen)
        yield from loader

    def __repr__(self) -> str:
        return (f"BatchSource(fields={self.fields}, items={self.items}, batch_size={self.batch_size}, "
                f"workers={self.workers}, seed={self.seed})")


def process_group() -> tuple[int, int] | None:
    """``(rank, world)`` of the initialised torch.distributed process group when its world is above 1,
    else None; imports nothing when torch is not loaded (then no group can exist)."""
    import sys

    if "torch" not in sys.modules:
        return None
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        return None
    world = dist.get_world_size()
    return (dist.get_rank(), world) if world > 1 else None


def split_steps(plan: list[tuple[_Any, list[int]]], world: int) -> list[list[list[int]]]:
    """Split each ``(bucket, batch)`` of a plan made at batch size ``world * b`` into a step of ``world``
    batches (rank ``r`` takes the ``r``-th), keeping the plan's order.

    A full batch gives every rank ``b`` items. The uneven end (``drop_last`` leaves it out of the
    plan): a bucket's last, smaller batch is spread over the ranks (sizes differ by at
    most one); when it has fewer items than ranks, it is spread together with another batch of its
    bucket (the nearest one before it, else after it) over the two batches' steps; only where that
    is too few items (batch size 1, or fewer than ``2 * world`` in the bucket) are items repeated,
    so that every rank gets one.
    Batches never exceed ``b`` items and every step has one bucket.
    """
    if world == 1:
        return [[batch] for _, batch in plan]
    steps: list[list[list[int]] | None] = [None] * len(plan)
    small = []
    for k, (key, batch) in enumerate(plan):
        if len(batch) >= world:
            steps[k] = _spread(batch, world)
        else:
            small.append(k)
    for k in small:  # at most one per bucket: its last batch
        batch = plan[k][1]
        partner = _partner(plan, k)
        if partner is None or len(plan[partner][1]) + len(batch) < 2 * world:
            steps[k] = _spread(batch, world)
            continue
        first, second = sorted((partner, k))
        both = _spread(plan[first][1] + plan[second][1], 2 * world)
        steps[first], steps[second] = both[:world], both[world:]
    return [s for s in steps if s is not None]


def _partner(plan: list[tuple[_Any, list[int]]], k: int) -> int | None:
    """The nearest other batch of ``plan[k]``'s bucket before ``k``, else after it, else None."""
    key = plan[k][0]
    for j in list(range(k - 1, -1, -1)) + list(range(k + 1, len(plan))):
        if plan[j][0] == key:
            return j
    return None


def _spread(items: list[int], world: int) -> list[list[int]]:
    """``items`` as ``world`` batches whose sizes differ by at most one (repeated when too few)."""
    if len(items) < world:
        items = (items * world)[:world]
    q, r = divmod(len(items), world)
    out, k = [], 0
    for j in range(world):
        size = q + (1 if j < r else 0)
        out.append(items[k:k + size])
        k += size
    return out


def check_bucket(bucket: Field, fields: dict[str, Field], node_id: str) -> None:
    """A bucket that varies per epoch (drawn at random: several resolutions) must reach the batches
    through the cache that holds the fields sized by it; read past the cache it would be the epoch's draw
    while the cached fields keep their variation's, and batches would mix sizes."""
    varying = {id(st): st for st, behind in _made_of(bucket) if st.random and behind is None}
    if not varying:
        return
    for name, f in fields.items():
        for st, cache in _made_of(f):
            if cache is not None and id(st) in varying:
                raise ValueError(
                    f"node {node_id!r}: input 'bucket' ({bucket.link}) is drawn at random per epoch by "
                    f"{st.node_id!r}, but field {name!r} comes through cache {cache.node_id!r}, which keeps "
                    f"what that node drew for its variation; connect the bucket through the same cache "
                    f"(add {bucket.link} to {cache.node_id!r}'s fields, connect {cache.node_id}.{bucket.port} "
                    f"to 'bucket')")


def _made_of(field: Field) -> list[tuple]:
    """``(stage, cache)`` for every stage whose work ``field`` is made of, with the nearest cache between
    them (None when none). Through a cache or a merge only along the field's own name."""
    out, seen, stack = [], set(), [(field, None)]
    while stack:
        f, cache = stack.pop()
        st = f.stage
        mark = (id(st), f.port if st.kind in ("merge", "cache") else None, cache is None)
        if mark in seen:
            continue
        seen.add(mark)
        if st.kind == "cache":
            up = st.source_of(f.port)
            if up is not None:
                stack.append((up, cache or st))
        elif st.kind == "merge":
            stack.extend((b[f.port], cache) for b in st.branches if f.port in b)
        else:
            out.append((st, cache))
            stack.extend((up, cache) for up in st.upstream())
    return out


def _identity(x):
    return x


def _hashable(value: _Any):
    if isinstance(value, list):
        return tuple(value)
    if hasattr(value, "tolist"):
        v = value.tolist()
        return tuple(v) if isinstance(v, list) else v
    return value


class BatchJob:
    """A picklable, map-style dataset: entry k is batch k of one epoch, evaluated and collated."""

    def __init__(self, fields: dict[str, Field], ev: Eval, batches: list[list[int]]):
        self.fields = fields
        self.ev = ev
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int) -> dict:
        return make_batch(self.fields, self.ev, self.batches[k])


def make_batch(fields: dict[str, Field], ev: Eval, indices: list[int]) -> dict:
    """Evaluate and collate items (``"_index"``: the kept ones, ``"_epoch"``: ``ev.epoch``); bad ones go to
    ``batch["_skipped"]``."""
    rows, kept, skipped = [], [], []
    items = list(fields.items())
    for i in indices:
        memo: dict = {}
        try:
            rows.append([f.get(ev, i, memo) for _, f in items])
        except SkipItem as e:
            stage = items[0][1].stage
            skipped.append(Skipped(i, e.path or stage.describe_item(ev, i), e.reason, getattr(e, "node", "") or ""))
            continue
        kept.append(i)
    batch = {name: collate([r[k] for r in rows]) for k, (name, _) in enumerate(items)}
    batch["_index"] = kept
    batch["_epoch"] = int(ev.epoch)
    batch["_skipped"] = skipped
    return batch


def collate(values: list) -> _Any:
    """Stack equal-shape tensors; numbers and equal-length number tuples become tensors; else a list."""
    if not values:
        return []
    first = values[0]
    mod = type(first).__module__
    if mod.startswith("torch") and hasattr(first, "shape"):
        import torch

        shape = first.shape
        if all(isinstance(v, torch.Tensor) and v.shape == shape for v in values):
            return torch.stack(values)
        return values
    if _is_number(first) and all(_is_number(v) for v in values):
        import torch

        return torch.tensor(values)
    if isinstance(first, (tuple, list)) and first and all(
            isinstance(v, (tuple, list)) and len(v) == len(first) and all(_is_number(x) for x in v) for v in values):
        import torch

        return torch.tensor([list(v) for v in values])
    return list(values)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# frontier_barriers is re-exported for callers that prepare fields themselves (the preview)
__all__ = ["BatchSource", "BatchJob", "EpochSummary", "collate", "make_batch", "named_fields", "frontier_barriers",
           "process_group", "split_steps"]
