"""Validation and resolution of a graph, with every problem reported at once.

``validate`` checks node types, params, edges, port types, cycles and graph
inputs, applies ``--set`` overrides and ``${name}`` references, and resolves
relative paths (against the graph file's folder, or the current directory for
values given on the command line). With ``for_run=True``, what would only be
a warning in the editor becomes an error: graph inputs without a value, files
that do not exist, a graph with nothing to run.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any as _Any, Iterable

from .checks import NodeView, run_checks
from .errors import ERROR, WARNING, Problem, did_you_mean, errors_of
from .graph import Graph, Link
from .overrides import Override, parse_overrides
from .params import MISSING, Device, ParamError, Seed
from .references import NAME_RE, is_full_ref, refs_in, substitute
from .registry import Registry
from .spec import NodeSpec, rename_map
from .topology import GraphTypes, dependencies, find_cycles, plan


@dataclass
class ResolvedNode:
    """A node ready to run: its spec, final param values and incoming links."""

    id: str
    spec: NodeSpec
    params: dict[str, _Any]
    inputs: dict[str, Link | list[Link]]


@dataclass
class Validation:
    """The outcome: problems, and (when the graph is sound) what would run."""

    problems: list[Problem] = field(default_factory=list)
    nodes: dict[str, ResolvedNode] = field(default_factory=dict)
    input_values: dict[str, _Any] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    overrides: list[Override] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return errors_of(self.problems)

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class _Value:
    value: _Any
    base: Path  # folder that relative paths in this value resolve against


def validate(
    graph: Graph,
    registry: Registry,
    overrides: Iterable[str] | Iterable[Override] = (),
    *,
    for_run: bool = False,
    cwd: Path | None = None,
    random_seeds: int | None = None,
) -> Validation:
    """Check ``graph`` and resolve it; see the module doc. ``random_seeds``: where the seeds a run picks
    for ``seed: -1`` come from (None: fresh ones; a number: derived from it and the node and field, so
    several processes of one run, each validating the graph, pick the same ones)."""
    return _Validator(graph, registry, for_run, cwd or Path.cwd(), random_seeds).run(list(overrides))


def derived_seed(source: int, node_id: str, field: str) -> int:
    """The seed ``seed: -1`` of ``node_id``'s ``field`` gets from the shared ``source``."""
    import hashlib

    digest = hashlib.sha256(f"{source}:{node_id}:{field}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % (Seed.MAX + 1)


class _Validator:
    def __init__(self, graph: Graph, registry: Registry, for_run: bool, cwd: Path, random_seeds: int | None = None):
        self.g = graph
        self.reg = registry
        self.for_run = for_run
        self.random_seeds = random_seeds
        self.cwd = cwd
        self.base = graph.base_dir
        self.out = Validation()
        self.severity_for_run = ERROR if for_run else WARNING

    def problem(self, message: str, node: str | None = None, field: str | None = None, code: str = "invalid",
                severity: str = ERROR) -> None:
        self.out.problems.append(Problem(message, node, field, code, severity))

    # -- driver --------------------------------------------------------------
    def run(self, overrides: list) -> Validation:
        if overrides and isinstance(overrides[0], str):
            overrides, bad = parse_overrides(overrides)
            self.out.problems.extend(bad)
        self.out.overrides = overrides
        input_over, node_over = self.split_overrides(overrides)
        inputs = self.check_inputs(input_over)
        used: set[str] = set()
        specs: dict[str, NodeSpec] = {}
        for entry in self.g.nodes.values():
            spec = self.check_type(entry)
            if spec is None:
                # still report references to undeclared inputs on unknown nodes
                for pname, value in entry.params.items():
                    used.update(self.check_refs(entry.id, pname, value))
                continue
            specs[entry.id] = spec
            params = self.check_params(entry, spec, node_over.get(entry.id, {}), inputs, used)
            self.out.nodes[entry.id] = ResolvedNode(entry.id, spec, params, {})
        self.types = GraphTypes(self.g, specs.get)
        for entry in self.g.nodes.values():
            if entry.id in specs:
                self.out.nodes[entry.id].inputs = self.check_links(entry, specs)
                if specs[entry.id].mirror is not None:
                    self.check_mirror(entry, specs[entry.id], node_over.get(entry.id, {}))
                    # what runs is the node as connected: a port per mirrored link
                    self.out.nodes[entry.id].spec = specs[entry.id].connected(entry.inputs, entry.params)
            else:
                self.check_link_targets(entry)
        self.check_served()
        deps = dependencies(self.g)
        for cycle in find_cycles(deps):
            path = " -> ".join(cycle + [cycle[0]])
            self.problem(f"cycle: {path}", cycle[0], code="cycle")
        for name in self.g.inputs:
            if name not in used:
                self.problem("declared but not used by any param", field=f"input {name!r}", code="unused_input")
        sinks = [n for n, s in specs.items() if s.is_sink]
        if not sinks and self.g.nodes:
            self.problem("nothing to run: the graph has no sink (a node without outputs, such as a saver)",
                         code="no_sink", severity=self.severity_for_run)
        self.out.input_values = {k: v.value for k, v in inputs.items()}
        self.node_checks(specs)
        if self.out.ok:
            self.out.order = plan(deps, sinks)
        return self.out

    def node_checks(self, specs: dict[str, NodeSpec]) -> None:
        """Each node's own ``check`` (runtime.checks), for nodes whose params and links all resolved."""
        views = {n: NodeView(n, rn.spec, rn.params, rn.inputs) for n, rn in self.out.nodes.items()}
        flawed = {p.node for p in self.out.errors}
        ready = [n for n, rn in self.out.nodes.items() if n not in flawed and len(rn.params) == len(rn.spec.params)
                 and set(rn.inputs) == set(self.g.nodes[n].inputs)]
        self.out.problems.extend(run_checks(views, ready, self.for_run))

    def split_overrides(self, overrides: list[Override]):
        input_over: dict[str, Override] = {}
        node_over: dict[str, dict[str, Override]] = {}
        for ov in overrides:
            if ov.node is None:
                if ov.name not in self.g.inputs:
                    hint = did_you_mean(ov.name, self.g.inputs)
                    extra = "" if hint else (" (the graph declares no inputs; use NODE.PARAM=VALUE)"
                                             if not self.g.inputs else "")
                    self.problem(f"--set {ov.text!r}: the graph has no input {ov.name!r}{hint}{extra}",
                                 field="--set", code="bad_override")
                else:
                    input_over[ov.name] = ov
            elif ov.node not in self.g.nodes:
                self.problem(f"--set {ov.text!r}: no node {ov.node!r}{did_you_mean(ov.node, self.g.nodes)}",
                             field="--set", code="bad_override")
            else:
                node_over.setdefault(ov.node, {})[ov.name] = ov
        return input_over, node_over

    # -- graph inputs ----------------------------------------------------------
    def check_inputs(self, overrides: dict[str, Override]) -> dict[str, _Value]:
        values: dict[str, _Value] = {}
        for name, gi in self.g.inputs.items():
            field = f"input {name!r}"
            kind = gi.kind()
            if name in overrides:
                raw, base, source = overrides[name].value, self.cwd, "--set"
            elif gi.has_default:
                raw, base, source = gi.default, self.base, "default"
            else:
                self.problem(f"has no default and was not set; pass --set {name}=VALUE", field=field,
                             code="missing_value", severity=self.severity_for_run)
                continue
            try:
                value = kind.coerce(raw)
                if kind.numeric and gi.min is not None and value < gi.min:
                    raise ParamError(f"{value} is below the minimum {gi.min}")
                if kind.numeric and gi.max is not None and value > gi.max:
                    raise ParamError(f"{value} is above the maximum {gi.max}")
            except ParamError as e:
                self.problem(f"{source} value: {e}", field=field, code="bad_value")
                continue
            if kind.is_path:
                value = self.abspath(value, base)
                self.check_exists(value, kind, None, field)
            values[name] = _Value(value, base)
        return values

    # -- node types ------------------------------------------------------------
    def check_type(self, entry) -> NodeSpec | None:
        spec = self.reg.get(entry.type)
        if spec is None:
            near = self.reg.suggest(entry.type)
            hint = f"; did you mean {', '.join(map(repr, near))}?" if near else ""
            self.problem(f"unknown node type {entry.type!r} (no installed node or pack provides it){hint}",
                         entry.id, "type", code="unknown_type")
            return None
        if entry.version is not None and entry.version > spec.version:
            self.problem(f"the file needs {spec.type_id}@{entry.version}, but the installed version is "
                         f"@{spec.version}; update nodetrainer or the pack", entry.id, "type", code="version")
            return None
        return spec

    # -- params ----------------------------------------------------------------
    def check_refs(self, node_id: str, pname: str, value: _Any) -> set[str]:
        names = set()
        for name in refs_in(value):
            if not NAME_RE.match(name):
                self.problem(f"bad reference ${{{name}}}", node_id, f"param {pname!r}", code="bad_reference")
            elif name not in self.g.inputs:
                self.problem(f"refers to undeclared graph input ${{{name}}}{did_you_mean(name, self.g.inputs)}",
                             node_id, f"param {pname!r}", code="undeclared_input")
            names.add(name)
        return names

    def check_params(self, entry, spec: NodeSpec, overrides: dict[str, Override], inputs: dict[str, _Value],
                     used: set[str]) -> dict[str, _Any]:
        for pname in list(entry.params) + list(overrides):
            if pname not in spec.params:
                src = f"--set {overrides[pname].text!r}: " if pname in overrides else ""
                self.problem(f"{src}unknown param {pname!r}{did_you_mean(pname, spec.params)}",
                             entry.id, f"param {pname!r}", code="unknown_param")
        resolved: dict[str, _Any] = {}
        for pname, param in spec.params.items():
            field = f"param {pname!r}"
            if pname in overrides:
                raw, base = overrides[pname].value, self.cwd
            elif pname in entry.params:
                raw, base = entry.params[pname], self.base
            else:
                raw, base = param.default, self.base
            if raw is MISSING:
                self.problem("required param is not set", entry.id, field, code="missing_param")
                continue
            names = self.check_refs(entry.id, pname, raw)
            used.update(names)
            if names:
                if any(n not in self.g.inputs for n in names):
                    continue
                if not self.refs_fit(entry.id, pname, param, raw):
                    continue
                if any(n not in inputs for n in names):
                    continue  # the input has no value (reported once, on the input)
                full = is_full_ref(raw)
                if full is not None:
                    base = inputs[full].base
                raw = substitute(raw, {n: inputs[n].value for n in names})
            try:
                value = param.check(raw)
            except ParamError as e:
                self.problem(str(e), entry.id, field, code="bad_param")
                continue
            if param.kind.is_path and value is not None:
                value = self.abspath(value, base)
                self.check_exists(value, param.kind, entry.id, field)
            if isinstance(param.kind, Seed) and value == Seed.RANDOM and self.for_run:
                value = (secrets.randbelow(Seed.MAX + 1) if self.random_seeds is None
                         else derived_seed(self.random_seeds, entry.id, field))
            if isinstance(param.kind, Device) and self.for_run:
                why = Device.missing(value)
                if why:
                    self.problem(why, entry.id, field, code="device")
                    continue
            resolved[pname] = value
        return resolved

    def refs_fit(self, node_id: str, pname: str, param, raw: _Any) -> bool:
        """Static check: a referenced input's type suits the param's kind."""
        full = is_full_ref(raw) if not isinstance(raw, list) else None
        ok = True
        for name in refs_in(raw):
            gi = self.g.inputs[name]
            if full is not None:
                fits = gi.type in param.kind.accepts_inputs or gi.type == param.kind.name
            else:  # inside text, or an item of a list: any plain value becomes text
                fits = param.kind.is_path or param.kind.name in ("str", "text", "strlist") or (
                    param.kind.name == "choice" and gi.type in ("str", "choice"))
            if not fits:
                self.problem(f"graph input ${{{name}}} is {gi.type}, but this param takes {param.kind.name}",
                             node_id, f"param {pname!r}", code="type_mismatch")
                ok = False
        return ok

    def abspath(self, value: str, base: Path) -> str:
        p = Path(os.path.expanduser(value))
        if not p.is_absolute():
            p = base / p
        return os.path.abspath(p)

    def check_exists(self, value: str, kind, node: str | None, field: str) -> None:
        if getattr(kind, "mode", "open") != "open":
            return
        p = Path(value)
        picks = getattr(kind, "picks", ("file",))
        want_dir = picks == ("dir",)
        what = "file or folder" if len(picks) > 1 else ("folder" if want_dir else "file")
        if not p.exists():
            self.problem(f"{what} not found: {value}", node, field,
                         code="not_found", severity=self.severity_for_run)
        elif want_dir and not p.is_dir():
            self.problem(f"not a folder: {value}", node, field, code="not_found", severity=self.severity_for_run)

    # -- edges -----------------------------------------------------------------
    def check_links(self, entry, specs: dict[str, NodeSpec]) -> dict[str, Link | list[Link]]:
        spec = specs[entry.id]
        resolved: dict[str, Link | list[Link]] = {}
        for port, value in entry.inputs.items():
            field = f"input {port!r}"
            if port not in spec.inputs:
                self.problem(f"{spec.type_id} has no input {port!r}{did_you_mean(port, spec.inputs)}",
                             entry.id, field, code="unknown_port")
                continue
            decl = spec.inputs[port]
            links = value if isinstance(value, list) else [value]
            if not decl.multi and len(links) > 1:
                self.problem(f"takes one link, got {len(links)}", entry.id, field, code="too_many_links")
                continue
            good = []
            for link in links:
                src_spec = self.link_source(entry.id, field, link, specs)
                if src_spec is None:
                    continue
                why = self.types.type_refusal(link, decl.type)
                if why:
                    self.problem(f"type mismatch: {why}", entry.id, field, code="type_mismatch")
                    continue
                good.append(link)
            if len(good) == len(links):
                resolved[port] = good if decl.multi else good[0]
        for port, decl in spec.inputs.items():
            if not decl.optional and port not in entry.inputs:
                self.problem(f"required input is not connected (needs {decl.type.name})", entry.id,
                             f"input {port!r}", code="missing_input")
        return resolved

    def check_served(self) -> None:
        """Models fed to a node beside an output that serves other models (an objective's ``serves``)."""
        for node_id, rn in self.out.nodes.items():
            for port, message in self.types.serve_refusals(node_id, rn.inputs):
                self.problem(message, node_id, f"input {port!r}", code="type_mismatch")

    def link_source(self, node_id: str, field: str, link: Link, specs: dict[str, NodeSpec]) -> NodeSpec | None:
        if link.node not in self.g.nodes:
            self.problem(f"edge from unknown node {link.node!r}{did_you_mean(link.node, self.g.nodes)}",
                         node_id, field, code="unknown_node")
            return None
        src = specs.get(link.node)
        if src is None:
            return None  # the source's own type is unknown; reported on that node
        names = self.types.output_names(link.node)
        if link.port not in names:
            decl = src.mirror
            if decl is None:
                self.problem(f"node {link.node!r} ({src.type_id}) has no output {link.port!r}"
                             f"{did_you_mean(link.port, names)}", node_id, field, code="unknown_port")
            else:
                fields = [n for n in names if n not in src.outputs or src.outputs[n] is decl]
                have = f"its fields: {', '.join(fields)}" if fields else "it has no fields yet"
                self.problem(f"node {link.node!r} ({src.type_id}) has no output {link.port!r}: it hands on "
                             f"the fields connected to its {decl.mirrors!r} input, and it is not one of them "
                             f"({have}){did_you_mean(link.port, names)}", node_id, field, code="unknown_port")
            return None
        return src

    def check_mirror(self, entry, spec: NodeSpec, overrides: dict[str, Override]) -> None:
        """A node whose outputs mirror an input's links: one name per field, and a rename param written out
        in the file (it names ports, so neither a ``${input}`` nor ``--set`` may change it)."""
        decl = spec.mirror
        field = f"input {decl.mirrors!r}"
        for message in self.types.duplicate_fields(entry.id):
            self.problem(message, entry.id, field, code="duplicate_field")
        if decl.renames is None:
            return
        pfield = f"param {decl.renames!r}"
        raw = entry.params.get(decl.renames)
        if decl.renames in overrides:
            self.problem("names output ports, so it cannot be set with --set; edit the graph instead",
                         entry.id, pfield, code="bad_override")
        if raw is not None and refs_in(raw):
            self.problem("names output ports, so it must be written out, not taken from a graph input",
                         entry.id, pfield, code="bad_param")
            return
        renames, bad = rename_map(raw)
        for message in bad:
            self.problem(message, entry.id, pfield, code="bad_param")
        links = entry.inputs.get(decl.mirrors)
        links = links if isinstance(links, list) else [links] if links is not None else []
        known = {str(lk) for lk in links} | {lk.port for lk in links}
        for src in renames:
            if src not in known:
                self.problem(f"renames {src!r}, which is not connected to {decl.mirrors!r} "
                             f"(connected: {', '.join(map(str, links)) or 'nothing'})", entry.id, pfield,
                             code="unused_rename", severity=WARNING)

    def check_link_targets(self, entry) -> None:
        for port, link in entry.links():
            if link.node not in self.g.nodes:
                self.problem(f"edge from unknown node {link.node!r}{did_you_mean(link.node, self.g.nodes)}",
                             entry.id, f"input {port!r}", code="unknown_node")
