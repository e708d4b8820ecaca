"""Reading and writing graph files.

``load_graph`` parses with the safe YAML dialect, migrates old file formats
and old node versions, and checks the file's *structure*; every structural
problem is reported at once as a ``GraphFileError``. Whether node types exist
and params fit is the validator's job, so the editor can still open a graph
that names a node type it does not have.

``dumps_graph`` is deterministic and round-trips exactly: load, save, load,
save gives byte-identical files.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any as _Any

import yaml

from . import yaml_dialect
from .errors import GraphFileError, Problem, shown
from .file_migrations import CURRENT_FORMAT, FORMAT_PREFIX, MIGRATIONS
from .fileio import atomic_write_text
from .graph import NODE_ID_RE, Graph, GraphInput, Link, NodeEntry, Note
from .params import INPUT_KINDS, MISSING
from .yaml_dialect import FlowList, FlowMap

if TYPE_CHECKING:
    from .registry import Registry

# \Z, not $: "$" also matches before a final newline, and "scan\n" is not a name
TYPE_RE = re.compile(r"([a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+)(?:@([0-9]+))?\Z")
INPUT_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
FORMAT_VERSION_RE = re.compile(r"[0-9]{1,9}\Z")
#: node versions are small whole numbers; a longer one is a hostile or broken file
MAX_VERSION_DIGITS = 9
TOP_KEYS = ("format", "name", "description", "inputs", "nodes", "layout", "notes")
NODE_KEYS = ("type", "in", "params")
INPUT_KEYS = ("type", "default", "min", "max", "choices", "doc")
MAX_FILE_BYTES = 16 * 1024 * 1024
#: far more than any pipeline needs; validation's cost grows with the node count
MAX_NODES = 5000


# -- loading -----------------------------------------------------------------

def load_graph(path: str | Path, registry: Registry | None = None) -> Graph:
    """Read a graph file. Raises ``GraphFileError`` listing every structural problem."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise GraphFileError([Problem(f"file is larger than {MAX_FILE_BYTES // 2**20} MB", code="too_large")],
                                 f"cannot read {path}")
        text = path.read_text(encoding="utf-8")
    except GraphFileError:
        raise
    except (OSError, UnicodeDecodeError) as e:
        raise GraphFileError([Problem(str(e), code="unreadable")], f"cannot read {path}") from None
    return loads_graph(text, registry, path=path)


def loads_graph(text: str, registry: Registry | None = None, path: Path | None = None) -> Graph:
    """Parse graph text. ``registry`` (default: the discovered one) drives node-version migrations."""
    where = str(path) if path else "graph"
    try:
        data = yaml_dialect.parse(text)
    except RecursionError:
        raise GraphFileError([Problem("the YAML is nested too deeply", code="syntax")], f"cannot read {where}") from None
    except Exception as e:  # any parser or constructor failure is a syntax problem of this file
        raise GraphFileError([Problem(_yaml_message(e), code="syntax")], f"cannot read {where}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise GraphFileError([Problem("a graph file must be a mapping (format, name, nodes, ...)", code="structure")],
                             f"cannot read {where}")
    data = _migrate_format(data, where)
    problems: list[Problem] = []
    graph = _build(data, problems, path)
    if problems:
        raise GraphFileError(problems, f"{where} is not a valid graph file")
    if registry is None:
        from .registry import default_registry

        registry = default_registry()
    upgrade_nodes(graph, registry)
    return graph


def _yaml_message(e: Exception) -> str:
    mark = getattr(e, "problem_mark", None)
    if isinstance(e, yaml.MarkedYAMLError) and mark is not None:
        text = "; ".join(part for part in (e.context, e.problem) if part)
        return f"YAML syntax, line {mark.line + 1}, column {mark.column + 1}: {text}"
    text = " ".join(str(e).replace('in "<unicode string>", ', "").split())
    return f"YAML syntax: {text}" if text else f"YAML syntax: {type(e).__name__}"


def _migrate_format(data: dict, where: str) -> dict:
    fmt = data.get("format", f"{FORMAT_PREFIX}{CURRENT_FORMAT}")
    version = None
    if isinstance(fmt, str) and fmt.startswith(FORMAT_PREFIX):
        digits = fmt[len(FORMAT_PREFIX):]
        version = int(digits) if FORMAT_VERSION_RE.fullmatch(digits) else None
    if version is None:
        raise GraphFileError([Problem(f"unknown file format {shown(fmt)} (expected '{FORMAT_PREFIX}{CURRENT_FORMAT}')",
                                      field="format", code="format")], f"cannot read {where}")
    if version > CURRENT_FORMAT:
        raise GraphFileError([Problem(f"this file uses format {version}, written by a newer nodetrainer; "
                                      f"this version reads formats up to {CURRENT_FORMAT}",
                                      field="format", code="format")], f"cannot read {where}")
    while version < CURRENT_FORMAT:
        try:
            data = MIGRATIONS[version](data)
        except Exception as e:
            raise GraphFileError([Problem(f"cannot migrate from format {version}: {e}", field="format",
                                          code="format")], f"cannot read {where}") from None
        version += 1
    return data


def _is_scalar(v: object) -> bool:
    return v is None or isinstance(v, (str, bool, int, float))


def _build(data: dict, problems: list[Problem], path: Path | None) -> Graph:
    def bad(message: str, node: str | None = None, field: str | None = None) -> None:
        problems.append(Problem(message, node, field, code="structure"))

    for key in data:
        if key not in TOP_KEYS:
            bad(f"unknown top-level key {shown(key)} (expected one of {', '.join(TOP_KEYS)})")

    graph = Graph(path=path)
    name = data.get("name", path.stem if path else "untitled")
    if isinstance(name, str) and name.strip():
        graph.name = name
    else:
        bad("name must be non-empty text", field="name")
    desc = data.get("description")
    if desc is not None and not isinstance(desc, str):
        bad("description must be text", field="description")
    graph.description = desc if isinstance(desc, str) else ""

    def section(key: str, shape: str) -> dict:
        value = data.get(key) or {}
        if not isinstance(value, dict):
            bad(f"'{key}' must be a mapping of {shape}", field=key)
            return {}
        return value

    for name, decl in section("inputs", "name -> {type, default, doc}").items():
        gi = _build_input(name, decl, bad)
        if gi:
            graph.inputs[gi.name] = gi
    nodes = section("nodes", "node id -> {type, in, params}")
    if len(nodes) > MAX_NODES:
        bad(f"a graph holds at most {MAX_NODES} nodes, this one {len(nodes)}", field="nodes")
        nodes = {}
    for node_id, body in nodes.items():
        entry = _build_node(node_id, body, bad)
        if entry:
            graph.nodes[entry.id] = entry
    for node_id, pos in section("layout", "node id -> [x, y]").items():
        if (not isinstance(node_id, str) or not isinstance(pos, list) or len(pos) != 2
                or not all(_is_number(v) for v in pos)):
            bad(f"layout entry {shown(node_id)} must be [x, y] numbers", field="layout")
            continue
        graph.layout[node_id] = (pos[0], pos[1])

    notes = data.get("notes") or []
    if not isinstance(notes, list):
        bad("'notes' must be a list", field="notes")
        notes = []
    for i, item in enumerate(notes):
        note = _build_note(item)
        if note is None:
            bad(f"note {i} must be {{title, text, rect: [x, y, w, h]}}", field="notes")
        else:
            graph.notes.append(note)
    return graph


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def _build_input(name: object, decl: object, bad) -> GraphInput | None:
    field = f"input {shown(name)}"
    if not isinstance(name, str) or not INPUT_NAME_RE.fullmatch(name):
        bad(f"graph input name {shown(name)} must be an identifier", field=field)
        return None
    if not isinstance(decl, dict):
        bad("must be a mapping such as {type: path, doc: ...}", field=field)
        return None
    for key in decl:
        if key not in INPUT_KEYS:
            bad(f"unknown key {shown(key)} (expected {', '.join(INPUT_KEYS)})", field=field)
    kind = decl.get("type")
    if not isinstance(kind, str) or kind not in INPUT_KINDS:
        bad(f"type must be one of {', '.join(INPUT_KINDS)}, not {shown(kind)}", field=field)
        return None
    gi = GraphInput(name, kind)
    if "default" in decl:
        default = decl["default"]
        if _is_scalar(default) or (isinstance(default, list) and all(_is_scalar(v) for v in default)):
            gi.default = default
        else:
            bad("default must be a plain value or a list of plain values", field=field)
    doc = decl.get("doc", "")
    if doc is not None and not isinstance(doc, str):
        bad("doc must be text", field=field)
    gi.doc = doc if isinstance(doc, str) else ""
    for bound in ("min", "max"):
        if bound in decl:
            if _is_number(decl[bound]):
                setattr(gi, bound, decl[bound])
            else:
                bad(f"{bound} must be a number", field=field)
    if "choices" in decl:
        ch = decl["choices"]
        if isinstance(ch, list) and ch and all(isinstance(c, str) for c in ch):
            gi.choices = list(ch)
        else:
            bad("choices must be a non-empty list of texts", field=field)
    if kind == "choice" and not gi.choices:
        bad("a choice input needs 'choices'", field=field)
    return gi


def _build_node(node_id: object, body: object, bad) -> NodeEntry | None:
    if not isinstance(node_id, str) or not NODE_ID_RE.fullmatch(node_id):
        bad(f"node id {shown(node_id)} must start with a letter or _ and hold only letters, digits, _ and -",
            node=node_id if isinstance(node_id, str) else shown(node_id))
        return None
    if not isinstance(body, dict):
        bad("a node must be a mapping {type, in, params}", node=node_id)
        return None
    for key in body:
        if key not in NODE_KEYS:
            bad(f"unknown key {shown(key)} (expected {', '.join(NODE_KEYS)})", node=node_id)
    type_text = body.get("type")
    m = TYPE_RE.fullmatch(type_text) if isinstance(type_text, str) else None
    if not m:
        bad(f"type must look like 'family.name@1', not {shown(type_text)}", node=node_id, field="type")
        return None
    if m.group(2) is not None and len(m.group(2)) > MAX_VERSION_DIGITS:
        bad(f"node version of {len(m.group(2))} digits; a version is a small whole number such as @1",
            node=node_id, field="type")
        return None
    version = int(m.group(2)) if m.group(2) is not None else None
    if version == 0:
        bad("node versions start at 1", node=node_id, field="type")
        return None
    entry = NodeEntry(node_id, m.group(1), version)

    params = body.get("params") or {}
    if not isinstance(params, dict):
        bad("'params' must be a mapping", node=node_id)
        params = {}
    for pname, value in params.items():
        if not isinstance(pname, str):
            bad(f"param name {shown(pname)} must be text", node=node_id)
        elif _is_scalar(value) or (isinstance(value, list) and all(_is_scalar(v) for v in value)):
            entry.params[pname] = value
        else:
            bad("value must be a plain value or a list of plain values", node=node_id, field=f"param {shown(pname)}")

    ins = body.get("in") or {}
    if not isinstance(ins, dict):
        bad("'in' must be a mapping of input port -> node.port", node=node_id)
        ins = {}
    for port, value in ins.items():
        if not isinstance(port, str) or not INPUT_NAME_RE.fullmatch(port):
            bad(f"input port name {shown(port)} is invalid", node=node_id)
            continue
        field = f"input {port!r}"
        if isinstance(value, list):
            links = [Link.parse(v) for v in value]
            if not value or any(lk is None for lk in links):
                bad("links must be a non-empty list of 'node.port'", node=node_id, field=field)
                continue
            entry.inputs[port] = links
        else:
            link = Link.parse(value)
            if link is None:
                bad(f"{shown(value)} is not a link of the form node.port", node=node_id, field=field)
                continue
            entry.inputs[port] = link
    return entry


def _build_note(item: object) -> Note | None:
    if not isinstance(item, dict) or set(item) - {"title", "text", "rect"}:
        return None
    title, text, rect = item.get("title", ""), item.get("text", ""), item.get("rect", [0, 0, 300, 200])
    if not isinstance(title, str) or not isinstance(text, str):
        return None
    if not isinstance(rect, list) or len(rect) != 4 or not all(_is_number(v) for v in rect):
        return None
    return Note(title, text, tuple(rect))


def upgrade_nodes(graph: Graph, registry: Registry) -> list[str]:
    """Pin unversioned nodes and migrate old node versions to the registered one.

    Returns one message per upgraded node. Nodes of unknown types, or newer
    than the registered version, are left alone for the validator to report.
    """
    messages = []
    problems = []
    for entry in graph.nodes.values():
        spec = registry.get(entry.type)
        if spec is None:
            continue
        if entry.version is None:
            entry.version = spec.version
            continue
        if entry.version >= spec.version:
            continue
        state = {"params": dict(entry.params), "in": {k: _links_text(v) for k, v in entry.inputs.items()}}
        start = entry.version
        try:
            for v in range(entry.version, spec.version):
                fn = spec.migrations.get(v)
                if fn is None:
                    raise ValueError(f"{spec.type_id} has no migration from version {v} to {v + 1}")
                state = fn(state)
                if not isinstance(state, dict) or not isinstance(state.get("params", {}), dict):
                    raise ValueError(f"migration from version {v} returned {type(state).__name__}")
        except Exception as e:
            problems.append(Problem(f"cannot upgrade {entry.type}@{start} to @{spec.version}: {e}",
                                    entry.id, "type", code="migration"))
            continue
        entry.params = dict(state.get("params", {}))
        entry.inputs = {}
        for port, value in (state.get("in") or {}).items():
            links = [Link.parse(v) for v in value] if isinstance(value, list) else Link.parse(value)
            if links is None or (isinstance(links, list) and None in links):
                problems.append(Problem(f"migration produced a bad link {shown(value)}", entry.id,
                                        f"input {shown(port)}", code="migration"))
                continue
            entry.inputs[port] = links
        entry.version = spec.version
        messages.append(f"node {entry.id!r}: upgraded {spec.type_id} from @{start} to @{spec.version}")
    if problems:
        raise GraphFileError(problems, f"cannot upgrade nodes in {graph.path or graph.name}")
    graph.upgrades = messages
    return messages


def _links_text(value: Link | list[Link]):
    return [str(v) for v in value] if isinstance(value, list) else str(value)


# -- saving ------------------------------------------------------------------

def graph_to_data(graph: Graph, registry: Registry | None = None) -> dict:
    """The plain mapping written to the file (ordered, styled for diffs)."""
    data: dict[str, _Any] = {"format": f"{FORMAT_PREFIX}{CURRENT_FORMAT}", "name": graph.name}
    if graph.description:
        data["description"] = graph.description
    if graph.inputs:
        data["inputs"] = {name: _input_data(gi) for name, gi in graph.inputs.items()}
    nodes = {}
    for entry in graph.nodes.values():
        spec = registry.get(entry.type) if registry is not None else None
        body: dict[str, _Any] = {"type": entry.qualified_type}
        if entry.inputs:
            order = list(spec.inputs) if spec else []
            ins = {}
            for port in _ordered(entry.inputs, order):
                value = entry.inputs[port]
                multi = spec is not None and port in spec.inputs and spec.inputs[port].multi
                if isinstance(value, list) or multi:
                    links = value if isinstance(value, list) else [value]
                    ins[port] = FlowList(str(lk) for lk in links)
                else:
                    ins[port] = str(value)
            body["in"] = ins
        if entry.params:
            order = list(spec.params) if spec else []
            body["params"] = {k: _plain(entry.params[k]) for k in _ordered(entry.params, order)}
        nodes[entry.id] = body
    data["nodes"] = nodes
    if graph.layout:
        data["layout"] = {k: FlowList(_round(v) for v in pos) for k, pos in graph.layout.items()}
    if graph.notes:
        data["notes"] = [{"title": n.title, "text": n.text, "rect": FlowList(_round(v) for v in n.rect)}
                         for n in graph.notes]
    return data


def _ordered(mapping: dict, order: list[str]) -> list[str]:
    known = [k for k in order if k in mapping]
    return known + [k for k in mapping if k not in order]


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def _round(v: float) -> int | float:
    return int(round(v))


def _input_data(gi: GraphInput) -> FlowMap:
    d = FlowMap(type=gi.type)
    if gi.default is not MISSING:
        d["default"] = FlowList(gi.default) if isinstance(gi.default, list) else gi.default
    if gi.min is not None:
        d["min"] = gi.min
    if gi.max is not None:
        d["max"] = gi.max
    if gi.choices:
        d["choices"] = FlowList(gi.choices)
    if gi.doc:
        d["doc"] = gi.doc
    return d


def dumps_graph(graph: Graph, registry: Registry | None = None) -> str:
    """Serialise deterministically; params and ports follow the node spec's order."""
    if registry is None:
        from .registry import default_registry

        registry = default_registry()
    return yaml_dialect.dump(graph_to_data(graph, registry))


def save_graph(graph: Graph, path: str | Path, registry: Registry | None = None) -> Path:
    """Write atomically (temp file, then rename); the graph remembers its new path."""
    path = Path(path)
    atomic_write_text(path, dumps_graph(graph, registry))
    graph.path = path
    return path
