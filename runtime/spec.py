"""The node API: one declarative class per node type.

::

    @node("sd.lora_setup", version=1, title="LoRA", category="Setup")
    class LoraSetup:
        \"\"\"Wrap the denoiser with LoRA adapters.\"\"\"
        model = Input(SDModel, doc="base model to adapt")
        adapted = Output(SDModel, doc="model whose only trainable weights are the adapters")
        rank = Param(int, 16, min=1, max=1024, doc="LoRA rank")

        def run(self, ctx, model):
            return {"adapted": ...}

The decorator collects ports and params (in declaration order) into a
``NodeSpec`` stored on the class as ``__node_spec__``. The registry checks the
spec and refuses an inconsistent one. At run time the executor creates the
class with no arguments, sets each param as an attribute and calls
``run(ctx, **inputs)``, which returns a dict of outputs.
"""

from __future__ import annotations

import dataclasses
import inspect
import keyword
import re
from dataclasses import dataclass, field
from typing import Any as _Any, Callable

from .params import MISSING, Param, ParamError
from .port_types import SAMPLE, PortType, is_compatible

# \Z, not $: "$" also matches before a final newline
TYPE_ID_RE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+\Z")
NAME_RE = re.compile(r"[a-z_][a-z0-9_]*\Z")
_NODE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")  # a node id, as runtime.graph.NODE_ID_RE
RESERVED_NAMES = {"ctx", "self", "run", "type", "params", "in", "id"}


class Input:
    """An input port. ``multi=True`` takes a list of links; ``optional=True`` may be left unconnected."""

    def __init__(self, type: PortType | str, *, doc: str = "", optional: bool = False, multi: bool = False):
        self.type = type
        self.doc = doc
        self.optional = optional
        self.multi = multi
        self.name = ""

    def describe(self) -> dict:
        return {
            "name": self.name,
            "type": _type_name(self.type),
            "doc": self.doc,
            "optional": self.optional,
            "multi": self.multi,
        }


class Output:
    """An output port.

    ``follows="model"`` makes it a pass-through: in a graph its type is the type of whatever feeds
    input ``model`` (recursively through other pass-throughs); ``type`` is then the upper bound and
    must be a supertype of that input's type. ``serves=T`` says the value is for models of type ``T``
    (an objective, a family's sampler or saver): a node it feeds refuses, on its inputs that take a
    supertype of ``T`` (its model inputs), a model whose type is not a ``T``. ``serves="samplers"``
    (the name of an input) says the value is for the models whatever feeds that input serves (a hook
    made of samplers), so train.loop refuses an SD sampler in the hook of an SDXL loop.

    ``mirrors="fields"`` declares not one port but one per link of the multi input ``fields``: each is
    named like the link's source port and has the type of that source (bounded by ``type``); a cache
    hands on whatever fields it is given under their names. ``renames="rename"`` names a strlist param
    whose entries ``FROM=TO`` rename a field (``FROM``: the source port, or ``node.port`` for one
    link). In a graph, ``NodeSpec.connected`` replaces such a declaration with the ports it stands for.
    """

    def __init__(self, type: PortType | str, *, doc: str = "", follows: str | None = None,
                 serves: PortType | str | None = None, mirrors: str | None = None, renames: str | None = None):
        self.type = type
        self.doc = doc
        self.follows = follows
        self.serves = serves
        self.mirrors = mirrors
        self.renames = renames
        self.name = ""
        #: for a port that stands for one link of ``mirrors``: that link (None on the declaration)
        self.source = None

    @property
    def is_template(self) -> bool:
        """A ``mirrors`` declaration: stands for the ports of its input's links, is none itself."""
        return self.mirrors is not None and self.source is None

    def mirrored(self, name: str, source) -> Output:
        """The port this declaration gives the link ``source`` (a ``Link``), named ``name``."""
        out = Output(self.type, doc=self.doc, mirrors=self.mirrors, renames=self.renames)
        out.name, out.source = name, source
        return out

    def describe(self) -> dict:
        out = {"name": self.name, "type": _type_name(self.type), "doc": self.doc}
        if self.follows is not None:
            out["follows"] = self.follows
        if self.serves is not None:
            out["serves"] = _type_name(self.serves)
        if self.mirrors is not None:
            out["mirrors"] = self.mirrors
        if self.renames is not None:
            out["renames"] = self.renames
        return out


def rename_map(entries: _Any) -> tuple[dict[str, str], list[str]]:
    """``{FROM: TO}`` from a rename param's ``FROM=TO`` entries (as written in the file), and a message
    per entry that is not of that form. Entries are never evaluated: a ``${...}`` is just a bad name."""
    if entries is None or entries is MISSING:
        return {}, []
    items = [entries] if isinstance(entries, str) else entries if isinstance(entries, list) else None
    if items is None:
        return {}, [f"expected a list of 'from=to' entries, got {type(entries).__name__}"]
    out: dict[str, str] = {}
    bad: list[str] = []
    for item in items:
        src, sep, dst = item.partition("=") if isinstance(item, str) else ("", "", "")
        src, dst = src.strip(), dst.strip()
        link = src.rpartition(".")
        ok_src = NAME_RE.fullmatch(link[2]) is not None and (not link[1] or _NODE_RE.fullmatch(link[0]) is not None)
        if not sep or not ok_src or not NAME_RE.fullmatch(dst) or dst.startswith("_"):
            bad.append(f"{str(item)[:80]!r} is not 'from=to' (from: a port or node.port; to: a lower-case name "
                       f"not starting with '_')")
        elif src in out and out[src] != dst:
            bad.append(f"{src!r} is renamed twice ({out[src]!r} and {dst!r})")
        else:
            out[src] = dst
    return out, bad


def field_name(node: str, port: str, renames: dict[str, str]) -> str:
    """The name under which a mirroring node hands on the link ``node.port``."""
    return renames.get(f"{node}.{port}", renames.get(port, port))


def _type_name(t: PortType | str) -> str:
    return t.name if isinstance(t, PortType) else str(t)


# A migration takes {"params": {...}, "in": {...}} at version k and returns it at k + 1.
Migration = Callable[[dict], dict]


@dataclass
class NodeSpec:
    """Everything the editor, the validator and the executor know about a node type."""

    type_id: str
    version: int
    title: str
    category: str
    doc: str
    cls: type
    inputs: dict[str, Input] = field(default_factory=dict)
    outputs: dict[str, Output] = field(default_factory=dict)
    params: dict[str, Param] = field(default_factory=dict)
    migrations: dict[int, Migration] = field(default_factory=dict)
    sink: bool = False
    #: run commands (``runtime.control.COMMANDS``) this node acts on while it runs, when it is in the run
    commands: tuple[str, ...] = ()

    @property
    def qualified(self) -> str:
        return f"{self.type_id}@{self.version}"

    @property
    def is_sink(self) -> bool:
        """Sinks are what a run is for; the plan keeps only what they need."""
        return self.sink or not self.outputs

    @property
    def is_data_stage(self) -> bool:
        ports = list(self.inputs.values()) + list(self.outputs.values())
        return any(isinstance(p.type, PortType) and p.type.lifetime == SAMPLE for p in ports)

    @property
    def summary(self) -> str:
        """The doc's first sentence, whole (it may span lines), as plain text: ``code`` loses its backticks."""
        return first_sentence(self.doc)

    @property
    def mirror(self) -> Output | None:
        """The output declared ``mirrors=`` (one port per link of that input), if any."""
        return next((o for o in self.outputs.values() if o.is_template), None)

    def mirrored(self, inputs: dict, params: dict) -> list[tuple[str, _Any]]:
        """``(field name, link)`` for each link into the mirrored input, in link order, given the node's
        links and params as written in the file. Names may repeat: reporting that is the validator's."""
        decl = self.mirror
        if decl is None:
            return []
        links = inputs.get(decl.mirrors)
        links = [] if links is None else links if isinstance(links, list) else [links]
        renames = rename_map(params.get(decl.renames) if decl.renames else None)[0]
        return [(field_name(lk.node, lk.port, renames), lk) for lk in links]

    def connected(self, inputs: dict, params: dict) -> NodeSpec:
        """This spec as one node of a graph has it: a ``mirrors`` declaration replaced by the ports it stands
        for (the first link of a repeated name wins); the spec itself when it has none."""
        decl = self.mirror
        if decl is None:
            return self
        outputs: dict[str, Output] = {}
        for name, o in self.outputs.items():
            if o is not decl:
                outputs[name] = o
                continue
            for fname, link in self.mirrored(inputs, params):
                outputs.setdefault(fname, decl.mirrored(fname, link))
        return dataclasses.replace(self, outputs=outputs)

    def problems(self) -> list[str]:
        """Inconsistencies in this spec, as messages (empty when the spec is sound)."""
        out: list[str] = []
        if not isinstance(self.type_id, str) or not TYPE_ID_RE.fullmatch(self.type_id):
            out.append(f"type id {self.type_id!r} must look like 'family.name' (lower case, dots between parts)")
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            out.append(f"version must be a whole number >= 1, not {self.version!r}")
        if not isinstance(self.title, str) or not self.title.strip():
            out.append("title must be a non-empty string")
        if not isinstance(self.category, str) or not self.category.strip():
            out.append("category must be a non-empty string")
        for group, items in (("input", self.inputs), ("output", self.outputs), ("param", self.params)):
            for name, item in items.items():
                bad_name = not isinstance(name, str) or not NAME_RE.fullmatch(name)
                if bad_name or keyword.iskeyword(name) or name in RESERVED_NAMES:
                    out.append(f"{group} name {name!r} is not allowed (lower-case identifier, not reserved)")
                if group != "param" and not isinstance(item.type, PortType):
                    out.append(f"{group} {name!r} has unknown type {item.type!r}")
        out.extend(self._pass_through_problems())
        for name in set(self.params) & set(self.inputs):
            out.append(f"{name!r} is both an input and a param")
        for name, p in self.params.items():
            out.extend(f"param {name!r}: {m}" for m in _param_problems(p))
        out.extend(self._run_problems())
        out.extend(self._migration_problems())
        out.extend(self._command_problems())
        return out

    def _pass_through_problems(self) -> list[str]:
        """``follows`` names a single input whose type is a subtype of the output's; ``serves`` is a type;
        ``mirrors`` names a multi input likewise."""
        out = self._mirror_problems()
        for name, o in self.outputs.items():
            if isinstance(o.serves, str) and o.serves not in self.inputs:
                known = ", ".join(map(repr, self.inputs)) or "none"
                out.append(f"output {name!r}: serves {o.serves!r} is not a port type object or an input "
                           f"(inputs: {known})")
            elif o.serves is not None and not isinstance(o.serves, (PortType, str)):
                out.append(f"output {name!r}: serves takes a port type object, not {o.serves!r}")
            if o.follows is None:
                continue
            src = self.inputs.get(o.follows) if isinstance(o.follows, str) else None
            if src is None:
                known = ", ".join(map(repr, self.inputs)) or "none"
                out.append(f"output {name!r} follows {o.follows!r}, which is not an input (inputs: {known})")
            elif src.multi:
                out.append(f"output {name!r} follows {o.follows!r}, which takes several links: a pass-through "
                           "follows a single input")
            elif isinstance(o.type, PortType) and isinstance(src.type, PortType) and not is_compatible(
                    src.type, o.type):
                out.append(f"output {name!r} ({o.type.name}) follows input {o.follows!r} ({src.type.name}): "
                           f"a pass-through output's type must be {src.type.name} or a supertype of it")
        return out

    def _mirror_problems(self) -> list[str]:
        out = []
        decls = [(n, o) for n, o in self.outputs.items() if o.mirrors is not None or o.renames is not None]
        if len(decls) > 1:
            out.append(f"outputs {', '.join(repr(n) for n, _ in decls)} all mirror inputs: a node mirrors one input")
        for name, o in decls:
            src = self.inputs.get(o.mirrors) if isinstance(o.mirrors, str) else None
            if o.follows is not None:
                out.append(f"output {name!r} both follows and mirrors an input: it does one or the other")
            if src is None:
                known = ", ".join(repr(n) for n, i in self.inputs.items() if i.multi) or "none"
                out.append(f"output {name!r} mirrors {o.mirrors!r}, which is not an input (multi inputs: {known})")
            elif not src.multi:
                out.append(f"output {name!r} mirrors {o.mirrors!r}, which takes one link: a mirror has a port "
                           "per link of a multi input (use follows= for one)")
            elif isinstance(o.type, PortType) and isinstance(src.type, PortType) and not is_compatible(
                    src.type, o.type):
                out.append(f"output {name!r} ({o.type.name}) mirrors input {o.mirrors!r} ({src.type.name}): "
                           f"its type must be {src.type.name} or a supertype of it")
            if o.renames is not None:
                param = self.params.get(o.renames) if isinstance(o.renames, str) else None
                if param is None or param.kind.name != "strlist":
                    out.append(f"output {name!r}: renames={o.renames!r} must name a strlist param of this node")
        return out

    def _command_problems(self) -> list[str]:
        from .control import COMMANDS

        if not isinstance(self.commands, tuple):
            return [f"commands must be a tuple of names, not {self.commands!r}"]
        return [f"unknown command {c!r} (known: {', '.join(COMMANDS)})" for c in self.commands if c not in COMMANDS]

    def _run_problems(self) -> list[str]:
        run = getattr(self.cls, "run", None)
        if not callable(run):
            return ["has no run(self, ctx, **inputs) method"]
        try:
            sig = inspect.signature(run)
        except (TypeError, ValueError):
            return []
        params = list(sig.parameters.values())
        if any(p.kind is p.VAR_KEYWORD for p in params):
            return []
        names = {p.name for p in params[2:]}  # self, ctx
        missing = [n for n in self.inputs if n not in names]
        if missing:
            return [f"run() does not accept input(s) {', '.join(missing)}"]
        return []

    def _migration_problems(self) -> list[str]:
        out = []
        for k, fn in self.migrations.items():
            if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < (self.version if isinstance(self.version, int) else 1):
                out.append(f"migration key {k!r} must be a version between 1 and {self.version!r} - 1")
            elif not callable(fn):
                out.append(f"migration from version {k} is not callable")
        return out

    def describe(self) -> dict:
        """A JSON-ready description: what the editor and ``nodes --describe`` show."""
        return {
            "type": self.type_id,
            "version": self.version,
            "title": self.title,
            "category": self.category,
            "doc": self.doc.strip(),
            "sink": self.is_sink,
            "commands": list(self.commands),
            "inputs": [i.describe() for i in self.inputs.values()],
            "outputs": [o.describe() for o in self.outputs.values()],
            "params": [p.describe() for p in self.params.values()],
        }


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(`'\"])")
_INLINE_CODE = re.compile(r"``(.+?)``|`([^`]+)`")


def first_sentence(doc: str) -> str:
    """The first sentence of a docstring's first paragraph, on one line, without reST backticks."""
    paragraph = " ".join(doc.strip().split("\n\n", 1)[0].split())
    sentence = _SENTENCE_END.split(paragraph, 1)[0]
    return _INLINE_CODE.sub(lambda m: m.group(1) or m.group(2), sentence)


def _param_problems(p: Param) -> list[str]:
    out = []
    if p.min is not None and p.max is not None and p.min > p.max:
        out.append(f"min {p.min} is above max {p.max}")
    if p.default is not MISSING:
        try:
            p.check(p.default)
        except ParamError as e:
            out.append(f"default {p.default!r} is invalid: {e}")
    return out


def node(
    type_id: str,
    *,
    version: int = 1,
    title: str | None = None,
    category: str = "Other",
    sink: bool = False,
    commands: tuple[str, ...] = (),
) -> Callable[[type], type]:
    """Class decorator that turns a declarative class into a node type; ``commands`` names the run
    commands the node acts on while it runs (the editor enables those buttons only then)."""

    def wrap(cls: type) -> type:
        inputs: dict[str, Input] = {}
        outputs: dict[str, Output] = {}
        params: dict[str, Param] = {}
        # Walk the MRO so a node may inherit ports and params from a base class.
        seen: dict[str, object] = {}
        for klass in reversed(cls.__mro__):
            seen.update(vars(klass))
        for name, value in seen.items():
            if isinstance(value, Input):
                value.name = name
                inputs[name] = value
            elif isinstance(value, Output):
                value.name = name
                outputs[name] = value
            elif isinstance(value, Param):
                value.name = name
                params[name] = value
        cls.__node_spec__ = NodeSpec(
            type_id=type_id,
            version=version,
            title=title or cls.__name__,
            category=category,
            doc=inspect.getdoc(cls) or "",
            cls=cls,
            inputs=inputs,
            outputs=outputs,
            params=params,
            migrations=dict(getattr(cls, "migrations", {}) or {}),
            sink=sink,
            commands=tuple(commands) if isinstance(commands, (list, tuple)) else commands,
        )
        return cls

    return wrap


def spec_of(cls: _Any) -> NodeSpec | None:
    """The spec a class declares itself (not one inherited from a base class)."""
    spec = getattr(cls, "__node_spec__", None)
    return spec if isinstance(spec, NodeSpec) and spec.cls is cls else None
