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
    (an objective): a node it feeds refuses, on its inputs that take a supertype of ``T`` (its model
    inputs), a model whose type is not a ``T``.
    """

    def __init__(self, type: PortType | str, *, doc: str = "", follows: str | None = None,
                 serves: PortType | str | None = None):
        self.type = type
        self.doc = doc
        self.follows = follows
        self.serves = serves
        self.name = ""

    def describe(self) -> dict:
        out = {"name": self.name, "type": _type_name(self.type), "doc": self.doc}
        if self.follows is not None:
            out["follows"] = self.follows
        if self.serves is not None:
            out["serves"] = _type_name(self.serves)
        return out


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
        """``follows`` names a single input whose type is a subtype of the output's; ``serves`` is a type."""
        out = []
        for name, o in self.outputs.items():
            if o.serves is not None and not isinstance(o.serves, PortType):
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
