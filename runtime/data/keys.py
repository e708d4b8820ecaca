"""Content keys for caches: what everything upstream of a field is made of.

A field's *structural* key hashes, for every stage above it: node type and
version, params, the fingerprints of value inputs, the links, and (for stages
that draw random numbers) the node id. Per item, the key adds the identity of
the source files the field reads (path, size, mtime) and, when anything
upstream is random, the seed, variation and index. So a param change or an
edited file invalidates exactly the cache entries it affects.

A merge is a boundary: its structural key is its own (type, version, params),
and an item's key adds the key of the branch field it comes from at the
branch's own index. So a change in one branch misses only that branch's items.
"""

from __future__ import annotations

import hashlib
from typing import Any as _Any

from .engine import Field, Stage


def _h(*parts: str) -> str:
    # surrogatepass: a path with undecodable bytes (surrogate escapes) still keys, distinctly
    return hashlib.blake2b("\x1f".join(parts).encode("utf-8", "surrogatepass"), digest_size=20).hexdigest()


def node_params(node) -> list[tuple[str, _Any]]:
    """(name, value) of the params that define a node's output (all but those in ``not_in_cache_key``)."""
    spec = getattr(type(node), "__node_spec__", None)
    names = list(spec.params) if spec is not None else []
    ignore = set(getattr(node, "not_in_cache_key", ()))
    return [(n, getattr(node, n, None)) for n in names if n not in ignore]


def value_fingerprint(value: _Any, where: str, port: str) -> str:
    """The cache-key contribution of a value input: ``value.fingerprint`` or a plain value's repr."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(value_fingerprint(v, where, port) for v in value) + "]"
    fp = getattr(value, "fingerprint", None)
    if isinstance(fp, str) and fp:
        return fp
    raise ValueError(
        f"{where}: value input {port!r} ({type(value).__name__}) has no fingerprint, so a cache cannot tell "
        f"when it changes; the node producing it must set a str attribute '.fingerprint' on its output"
    )


def stage_key(stage: Stage, memo: dict | None = None) -> str:
    memo = {} if memo is None else memo
    found = memo.get(id(stage))
    if found is not None:
        return found
    where = f"node {stage.node_id!r} ({stage.type_id})"
    parts = [stage.kind, stage.type_id, str(stage.version)]
    parts += [f"{n}={v!r}" for n, v in node_params(stage.node)]
    # An unconnected optional input (None) is left out: adding one to a node keeps its caches valid.
    parts += [f"{p}:{value_fingerprint(v, where, p)}" for p, v in sorted(stage.values.items()) if v is not None]
    if stage.random:
        parts.append(f"node={stage.node_id}")
    if stage.kind == "source":
        parts.append(stage.node.content_key())
    if stage.kind == "merge":  # branches key per item (ItemKeyer), so one branch's change keeps the others'
        key = memo[id(stage)] = _h(*parts)
        return key
    for port, f in sorted(stage.inputs.items()):
        fs = f if isinstance(f, list) else [f]
        parts.append(port + "<" + ",".join(field_key(x, memo) for x in fs))
    key = memo[id(stage)] = _h(*parts)
    return key


def field_key(field: Field, memo: dict | None = None) -> str:
    """Structural key of a field; caches are transparent (their output is their input's content)."""
    memo = {} if memo is None else memo
    while field.stage.kind == "cache":
        field = field.stage.source_of(field.port)
    return _h(stage_key(field.stage, memo), field.port)


def _closure(field: Field):
    seen: set[tuple] = set()
    stack = [field]
    while stack:
        f = stack.pop()
        yield f
        st = f.stage
        mark = (id(st), f.port) if st.kind == "cache" else (id(st), None)
        if mark in seen:
            continue
        seen.add(mark)
        if st.kind == "cache":
            stack.append(st.source_of(f.port))
        elif st.kind != "merge":
            for up in st.upstream():
                stack.append(up)


def _by_link(found: dict) -> list[Field]:
    return [f for _, f in sorted(found.items(), key=lambda kv: kv[1].link)]


class ItemKeyer:
    """Per-item cache keys of one field."""

    def __init__(self, field: Field):
        self.struct = field_key(field)
        fields = list(_closure(field))
        self.random = any(f.stage.random for f in fields)
        sources = {(id(f.stage), f.port): f for f in fields if f.stage.kind == "source"}
        self.sources = [(f.stage.node, f.port) for f in _by_link(sources)]
        merges = {(id(f.stage), f.port): f for f in fields if f.stage.kind == "merge"}
        self.merges = [(f.stage, f.port) for f in _by_link(merges)]
        #: (position in ``merges``, branch) -> keyer of that branch's field
        self._branch: dict[tuple[int, int], ItemKeyer] = {}

    def key(self, seed: int, variation: int, index: int) -> str:
        parts = [self.struct]
        parts += [node.identity(port, variation, index, seed) for node, port in self.sources]
        for k, (stage, port) in enumerate(self.merges):
            b, j = stage.locate(index)
            parts.append(self._branch_keyer(k, b).key(seed, variation, j))
        if self.random:
            parts.append(f"{seed}:{variation}:{index}")
        return _h(*parts)

    def _branch_keyer(self, k: int, branch: int) -> ItemKeyer:
        found = self._branch.get((k, branch))
        if found is None:
            stage, port = self.merges[k]
            found = self._branch[(k, branch)] = ItemKeyer(stage.branch_field(branch, port))
        return found
