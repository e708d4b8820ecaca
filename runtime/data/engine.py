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
"""

from __future__ import annotations

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
        self._columns: dict[int | None, dict[str, list]] = {}
        self._bad: dict[int | None, dict[int, Skipped]] = {}

    def _key(self, epoch: int) -> int | None:
        return epoch if self.per_epoch else None

    def prepare(self, epoch, prep):
        key = self._key(epoch)
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
        key = self._key(ev.epoch)
        cols = self._columns.get(key)
        if cols is None:  # not prepared here (a preview, or a stray worker): do it now
            self.prepare(ev.epoch, Preparer(ev.seed, fill=False))
            cols = self._columns[key]
        bad = self._bad[key].get(index)
        if bad is not None:
            raise SkipItem(bad.reason, bad.path)
        return _Outputs({port: cols[port][index] for port in self.outputs})


class Preparer:
    """Runs barrier work (aggregate columns, cache fills) before an epoch, upstream first.

    ``skipped`` collects items found bad while preparing; ``workers`` is how many
    threads a cache may use to fill; ``report(kind, **data)`` receives progress.
    """

    def __init__(self, seed: int, fill: bool = True, workers: int = 0, report=None):
        self.seed = seed
        self.fill = fill
        self.workers = workers
        self.report = report
        self.skipped: dict[tuple[int, int], Skipped] = {}
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
        self.skipped.setdefault((ev.epoch, index), s)
        return s


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
