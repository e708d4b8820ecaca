"""The sample engine: fields, stages and how one item is evaluated.

A data node's ``run`` builds one engine ``Stage`` (it wraps the node instance
and its links) and returns a ``Field`` per sample output port. A field is a
lazy column: ``field.get(ev, index, memo)`` evaluates item ``index`` of epoch
``ev.epoch`` by pulling only the upstream it depends on. ``memo`` (one dict
per item evaluation) holds each stage's outputs, so a stage feeding several
consumers runs once per item. Stages and fields pickle (worker processes get
copies); the node's ``RunContext`` is left behind.

Barrier stages (aggregates, caches) need work before an epoch's items can be
evaluated; ``Preparer`` does it, upstream first.

A field's *space* is the stage that fixes its index space: a source, or a
merge (``MergeEngine``), whose items are its branches' items one after the
other. A branch's stages see branch-local indices (so their seeds and cache
keys do not move when another branch changes); stages after the merge see the
merged index.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any as _Any, Iterable, Mapping

from .item import DataStageError, Item, SkipItem, mix_seed, stable_id


class Eval:
    """Settings of one evaluation: the epoch, the run seed, and whether caches may be filled."""

    __slots__ = ("epoch", "seed", "fill")

    def __init__(self, epoch: int, seed: int, fill: bool = True):
        self.epoch = epoch
        self.seed = seed
        self.fill = fill

    def at(self, epoch: int) -> Eval:
        return Eval(epoch, self.seed, self.fill)


class Field:
    """One sample output port of a data stage: a lazily evaluated, random-access column."""

    __slots__ = ("stage", "port", "type")

    def __init__(self, stage: Stage, port: str, type_name: str):
        self.stage = stage
        self.port = port
        self.type = type_name

    def get(self, ev: Eval, index: int, memo: dict) -> _Any:
        stage = self.stage
        out = memo.get(stage)
        if out is None:
            out = stage.compute(ev, index, memo)
            memo[stage] = out
        return out[self.port]

    @property
    def node_id(self) -> str:
        return self.stage.node_id

    @property
    def link(self) -> str:
        """``node.port``, as a graph file writes the edge."""
        return f"{self.stage.node_id}.{self.port}"

    @property
    def space(self) -> SourceEngine:
        return self.stage.space

    def __len__(self) -> int:
        return self.stage.space.length

    def __getstate__(self):
        return (self.stage, self.port, self.type)

    def __setstate__(self, state):
        self.stage, self.port, self.type = state

    def __repr__(self) -> str:
        return f"Field({self.link}: {self.type})"


@dataclass(frozen=True)
class Skipped:
    """An item left out as bad data: where, which file, why, and which node found it."""

    index: int | None
    path: str | None
    reason: str
    node: str = ""

    def __str__(self) -> str:
        return f"{self.path or f'item {self.index}'}: {self.reason}"


def evaluate(fields: Mapping[str, Field], ev: Eval, index: int) -> dict[str, _Any]:
    """Item ``index`` of every field, sharing upstream work. Raises ``SkipItem`` for bad data."""
    memo: dict = {}
    return {name: f.get(ev, index, memo) for name, f in fields.items()}


class Stage:
    """Engine side of a data node. Subclasses say how an item's outputs are computed."""

    kind = "stage"
    barrier = False

    def __init__(self, node, node_id: str, type_id: str, version: int, inputs: dict, values: dict,
                 outputs: Iterable[str] = ()):
        self.node = node
        self.node_id = node_id
        self.type_id = type_id
        self.version = version
        #: sample inputs that are connected: port -> Field, or list of Fields for a multi input
        self.inputs: dict[str, Field | list[Field]] = {p: f for p, f in inputs.items() if f not in (None, [])}
        #: what ``process`` gets besides connected sample inputs: value inputs and unconnected sample inputs
        self.values = dict(values)
        for p, f in inputs.items():
            if p not in self.inputs:
                self.values[p] = [] if isinstance(f, list) else None
        self.outputs = tuple(outputs)
        self.random = bool(getattr(node, "random", False))
        self.seed_base = stable_id(node_id)
        self.ctx = None
        self.space = self._common_space()

    # -- structure -------------------------------------------------------------
    def source_of(self, port: str) -> Field | None:
        """The upstream field that output ``port`` hands on unchanged (a cache's), or None."""
        return None

    def upstream(self) -> list[Field]:
        out: list[Field] = []
        for f in self.inputs.values():
            out.extend(f if isinstance(f, list) else [f])
        return out

    def _common_space(self):
        spaces: dict[int, tuple] = {}
        for port, f in self.inputs.items():
            for one in f if isinstance(f, list) else [f]:
                if not isinstance(one, Field):
                    raise TypeError(f"input {port!r} got {type(one).__name__}, not a data-graph field")
                spaces.setdefault(id(one.space), (one.space, port, one))
        if not spaces:
            return None
        if len(spaces) > 1:
            shown = "; ".join(f"input {port!r} <- {f.link} (source {s.node_id!r})" for s, port, f in spaces.values())
            raise ValueError(f"sample inputs come from different sources and cannot be combined item by item: {shown}")
        return next(iter(spaces.values()))[0]

    @property
    def length(self) -> int:
        return self.space.length

    def item_seed(self, ev: Eval, index: int | None) -> int:
        return mix_seed(ev.seed, self.seed_base, ev.epoch, -1 if index is None else index)

    def describe_item(self, ev: Eval, index: int) -> str | None:
        return self.space.describe_item(ev, index) if self.space is not None else None

    def failure(self, ev: Eval, index: int | None, e: BaseException) -> DataStageError:
        where = f"item {index}" if index is not None else "the whole column"
        if index is not None:
            try:
                path = self.describe_item(ev, index)
            except Exception:  # describing must never hide the real error
                path = None
            if path:
                where += f" ({path})"
        return DataStageError(f"node {self.node_id!r} ({self.type_id}) failed on {where} of epoch {ev.epoch}: "
                              f"{type(e).__name__}: {e}")

    # -- evaluation --------------------------------------------------------------
    def compute(self, ev: Eval, index: int, memo: dict) -> Mapping[str, _Any]:
        raise NotImplementedError

    def prepare(self, epoch: int, prep: Preparer) -> None:
        """Barrier work before ``epoch`` (aggregates and caches)."""

    def __getstate__(self):
        state = dict(self.__dict__)
        state["ctx"] = None
        return state

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.node_id!r})"


class SourceEngine(Stage):
    """Fixes the index space: its node knows the length and fetches item ``index`` by itself."""

    kind = "source"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.space = self
        self.length_value = 0

    @property
    def length(self) -> int:
        return self.length_value

    def compute(self, ev, index, memo):
        if not 0 <= index < self.length_value:
            raise IndexError(f"item {index} is outside 0..{self.length_value - 1} of source {self.node_id!r}")
        try:
            return self.node.fetch(ev.epoch, index, ev.seed)
        except SkipItem as e:
            e.node = e.node or self.node_id
            raise
        except DataStageError:
            raise
        except Exception as e:
            raise self.failure(ev, index, e) from e

    def describe_item(self, ev: Eval, index: int) -> str | None:
        return self.node.describe(ev.epoch, index, ev.seed)

    def scan_skipped(self) -> list[Skipped]:
        """Files left out when the source scanned (never part of the index space)."""
        node = self.node
        return list(node.scan_skipped()) if hasattr(node, "scan_skipped") else []


class _Outputs(dict):
    """A stage's outputs for one item; ports the stage did not return read as None."""

    __slots__ = ()

    def __missing__(self, key):
        return None


class PerSampleEngine(Stage):
    """Calls ``node.process(item, **inputs)`` for each item."""

    kind = "per_sample"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._single = [(p, f) for p, f in self.inputs.items() if not isinstance(f, list)]
        self._multi = [(p, f) for p, f in self.inputs.items() if isinstance(f, list)]
        self._checked = False

    def compute(self, ev, index, memo):
        kwargs = dict(self.values)
        for port, f in self._single:
            kwargs[port] = f.get(ev, index, memo)
        for port, fs in self._multi:
            kwargs[port] = [f.get(ev, index, memo) for f in fs]
        item = Item(ev.epoch, index, mix_seed(ev.seed, self.seed_base, ev.epoch, index))
        try:
            out = self.node.process(item, **kwargs)
        except SkipItem as e:
            e.node = e.node or self.node_id
            raise
        except DataStageError:
            raise
        except Exception as e:
            raise self.failure(ev, index, e) from e
        if not self._checked:
            self._check(out, ev, index)
        return _Outputs(out)

    def _check(self, out, ev, index) -> None:
        if not isinstance(out, dict):
            raise self.failure(ev, index, TypeError(
                f"process() returned {type(out).__name__}; it must return a dict of outputs ({', '.join(self.outputs)})"))
        extra = [k for k in out if k not in self.outputs]
        if extra:
            raise self.failure(ev, index, TypeError(f"process() returned undeclared output(s) {', '.join(map(str, extra))}"))
        self._checked = True


class AggregateEngine(Stage):
    """Sees whole columns: ``node.aggregate(item, **columns)`` once (or once per epoch), then per-item lookups."""

    kind = "aggregate"
    barrier = True
    KEEP_EPOCHS = 4

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.per_epoch = bool(getattr(self.node, "per_epoch", False))
        self._columns: dict[tuple, dict[str, list]] = {}
        self._bad: dict[tuple, dict[int, Skipped]] = {}

    def _key(self, epoch: int, seed: int) -> tuple:
        """Columns are computed once, per epoch when ``per_epoch``, per run seed when the node draws."""
        return (epoch if self.per_epoch else None, seed if self.random else None)

    def prepare(self, epoch, prep):
        key = self._key(epoch, prep.seed)
        if key in self._columns:
            return
        prep.prepare_fields(self.upstream(), epoch)
        ev = Eval(epoch, prep.seed, prep.fill)
        n = self.length
        columns: dict[str, list] = {p: [None] * n for p in self.inputs}
        bad: dict[int, Skipped] = {}
        for i in range(n):
            memo: dict = {}
            for port, f in self.inputs.items():
                try:
                    columns[port][i] = ([x.get(ev, i, memo) for x in f] if isinstance(f, list)
                                        else f.get(ev, i, memo))
                except SkipItem as e:
                    bad[i] = prep.skip(self.node_id, ev, i, e, self)
                    break
        item = Item(epoch, None, self.item_seed(ev, None))
        try:
            result = self.node.aggregate(item, **columns, **self.values)
        except (SkipItem, DataStageError):
            raise
        except Exception as e:
            raise self.failure(ev, None, e) from e
        if not isinstance(result, dict):
            raise self.failure(ev, None, TypeError("aggregate() must return a dict of output columns"))
        for port in self.outputs:
            col = result.get(port)
            if col is None or len(col) != n:
                raise self.failure(ev, None, ValueError(
                    f"aggregate() must return a column of {n} values for output {port!r}"))
        if len(self._columns) >= self.KEEP_EPOCHS:
            self._bad.pop(next(iter(self._columns)), None)
            self._columns.pop(next(iter(self._columns)))
        self._bad[key] = bad
        self._columns[key] = result

    def compute(self, ev, index, memo):
        key = self._key(ev.epoch, ev.seed)
        cols = self._columns.get(key)
        if cols is None:  # not prepared here (a preview, or a stray worker): do it now
            self.prepare(ev.epoch, Preparer(ev.seed, fill=False))
            cols = self._columns[key]
        bad = self._bad[key].get(index)
        if bad is not None:
            raise SkipItem(bad.reason, bad.path)
        return _Outputs({port: cols[port][index] for port in self.outputs})


class _Lazy(dict):
    """A merged item's outputs: each field is evaluated in its branch when first read."""

    __slots__ = ("fields", "ev", "index", "memo")

    def __init__(self, fields: dict[str, Field], ev: Eval, index: int):
        super().__init__()
        self.fields, self.ev, self.index, self.memo = fields, ev, index, {}

    def __missing__(self, port):
        f = self.fields.get(port)
        if f is None:
            return None
        value = self[port] = f.get(self.ev, self.index, self.memo)
        return value


class MergeEngine(Stage):
    """Joins branches into one index space: item ``i`` is item ``j`` of branch ``b`` (branches in order).

    ``inputs["fields"]`` are the first branch's fields (they name the merged fields);
    ``inputs["more"]`` are the other branches' fields, grouped into branches by their
    space and matched by name. Every branch must have exactly the first one's names.
    """

    kind = "merge"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.space = self
        self.branches: list[dict[str, Field]] = merge_branches(self.inputs.get("fields") or [],
                                                              self.inputs.get("more") or [])
        self.outputs = tuple(self.branches[0])
        #: merged field name -> type name (that of the first branch's field)
        self.field_types = {name: f.type for name, f in self.branches[0].items()}
        self.offsets = [0]
        for b in self.branches:
            self.offsets.append(self.offsets[-1] + len(next(iter(b.values()))))

    def _common_space(self):
        return self

    @property
    def length(self) -> int:
        return self.offsets[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """(branch, index in that branch) of merged item ``index``."""
        if not 0 <= index < self.offsets[-1]:
            raise IndexError(f"item {index} is outside 0..{self.offsets[-1] - 1} of merge {self.node_id!r}")
        b = bisect.bisect_right(self.offsets, index) - 1
        return b, index - self.offsets[b]

    def branch_field(self, branch: int, port: str) -> Field:
        return self.branches[branch][port]

    def source_of(self, port: str) -> Field | None:
        """The first branch's field (all branches hand on fields of its type under this name)."""
        return self.branches[0].get(port)

    def compute(self, ev, index, memo):
        b, j = self.locate(index)
        return _Lazy(self.branches[b], ev, j)

    def describe_item(self, ev: Eval, index: int) -> str | None:
        b, j = self.locate(index)
        return next(iter(self.branches[b].values())).space.describe_item(ev, j)

    def scan_skipped(self) -> list[Skipped]:
        out: list[Skipped] = []
        for b in self.branches:
            space = next(iter(b.values())).space
            out.extend(space.scan_skipped() if hasattr(space, "scan_skipped") else [])
        return out


def merge_branches(first: list[Field], more: list[Field]) -> list[dict[str, Field]]:
    """The branches of a merge, each ``{name: field}``: ``first`` is one branch, ``more`` holds the
    others, one per space, in order of their first link. Raises ValueError naming the input for
    fields from several sources in ``first``, a name twice in a branch, or names that differ."""
    if not first:
        raise ValueError("input 'fields': connect the first branch's fields (they name the merged fields)")
    for f in first:
        if not isinstance(f, Field):
            raise TypeError(f"input 'fields' got {type(f).__name__}, not a data-graph field")
    groups: list[tuple[str, list[Field]]] = [("fields", list(first))]
    by_space: dict[int, list[Field]] = {}
    for f in more:
        if not isinstance(f, Field):
            raise TypeError(f"input 'more' got {type(f).__name__}, not a data-graph field")
        if id(f.space) not in by_space:
            by_space[id(f.space)] = []
            groups.append(("more", by_space[id(f.space)]))
        by_space[id(f.space)].append(f)
    spaces = {id(f.space): f for f in first}
    if len(spaces) > 1:
        shown = ", ".join(f"{f.link} (source {f.space.node_id!r})" for f in spaces.values())
        raise ValueError(f"input 'fields': the first branch's fields come from several sources: {shown}; "
                         f"connect one branch here and the others to 'more'")
    if id(first[0].space) in by_space:
        f = by_space[id(first[0].space)][0]
        raise ValueError(f"input 'more': {f.link} comes from source {f.space.node_id!r}, the first branch's "
                         f"source; a branch goes to 'fields' or to 'more', not both")
    branches: list[dict[str, Field]] = []
    for k, (port, fields) in enumerate(groups):
        named: dict[str, Field] = {}
        for f in fields:
            if f.port in named:
                raise ValueError(f"input {port!r}: branch {k + 1} (source {f.space.node_id!r}) has two fields "
                                 f"named {f.port!r}: {named[f.port].link} and {f.link}")
            named[f.port] = f
        branches.append(named)
    want = branches[0]
    for k, named in enumerate(branches[1:], start=2):
        src = next(iter(named.values())).space.node_id
        missing = [n for n in want if n not in named]
        extra = [n for n in named if n not in want]
        if missing or extra:
            parts = ([f"lacks {', '.join(map(repr, missing))}"] if missing else []) + (
                [f"has {', '.join(map(repr, extra))} the first branch lacks"] if extra else [])
            raise ValueError(f"input 'more': branch {k} (source {src!r}) {' and '.join(parts)}; every branch "
                             f"hands on the first branch's fields ({', '.join(want)}), matched by name")
        for name, f in named.items():
            if not type_fits(f.type, want[name].type):
                raise ValueError(f"input 'more': field {name!r} of branch {k} ({f.link}) is {f.type}, but the "
                                 f"first branch's ({want[name].link}) is {want[name].type}")
    return branches


def type_fits(name: str, wanted: str) -> bool:
    """A field of type ``name`` may join fields of type ``wanted`` (the same type or a built-in subtype)."""
    if name == wanted:
        return True
    from .. import port_types

    t, w = getattr(port_types, name, None), getattr(port_types, wanted, None)
    if isinstance(t, port_types.PortType) and isinstance(w, port_types.PortType):
        return port_types.is_compatible(t, w)
    return False


class Preparer:
    """Runs barrier work (aggregate columns, cache fills) before an epoch, upstream first.

    ``skipped`` collects items found bad while preparing; ``workers`` is how many
    threads a cache may use to fill; ``report(kind, **data)`` receives progress;
    ``group`` is ``(rank, world)`` when every rank of the torch.distributed process
    group prepares together (a disk cache then splits its fill by rank), else None.
    """

    def __init__(self, seed: int, fill: bool = True, workers: int = 0, report=None,
                 group: tuple[int, int] | None = None):
        self.seed = seed
        self.fill = fill
        self.workers = workers
        self.report = report
        self.group = group
        #: (epoch, id of the item's space, index) -> what was found bad
        self.skipped: dict[tuple[int, int, int], Skipped] = {}
        self._done: set[tuple[int, int]] = set()

    def prepare_fields(self, fields: Iterable[Field], epoch: int) -> None:
        for stage in frontier_barriers(fields):
            key = (id(stage), epoch)
            if key not in self._done:
                self._done.add(key)
                stage.prepare(epoch, self)

    def skip(self, node_id: str, ev: Eval, index: int, e: SkipItem, stage: Stage) -> Skipped:
        path = e.path or stage.describe_item(ev, index)
        s = Skipped(index, path, e.reason, e.node or node_id)
        self.skipped.setdefault((ev.epoch, id(stage.space), index), s)
        return s

    def skipped_in(self, space) -> list[Skipped]:
        """What was found bad among the items of ``space`` (indices are that space's)."""
        return [s for (_, sp, _), s in self.skipped.items() if sp == id(space)]


def frontier_barriers(fields: Iterable[Field]) -> list[Stage]:
    """Barrier stages reachable from ``fields`` without passing through another barrier."""
    out: list[Stage] = []
    seen: set[int] = set()
    stack = [f.stage for f in fields]
    while stack:
        st = stack.pop()
        if id(st) in seen:
            continue
        seen.add(id(st))
        if st.barrier:
            out.append(st)
            continue
        stack.extend(f.stage for f in st.upstream())
    return out


def upstream_stages(fields: Iterable[Field], through_caches: bool = True) -> list[Stage]:
    """Every stage the fields depend on (each once), sources last."""
    out: list[Stage] = []
    seen: set[int] = set()
    stack = [f.stage for f in fields]
    while stack:
        st = stack.pop()
        if id(st) in seen:
            continue
        seen.add(id(st))
        out.append(st)
        if through_caches or st.kind != "cache":
            stack.extend(f.stage for f in st.upstream())
    return out
