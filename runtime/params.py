"""Param kinds and the ``Param`` declaration used on node classes.

A kind knows how to check and normalise a value read from a graph file or the
command line, and how to describe itself to the editor. ``Param`` adds the
default, bounds, optionality and the one-line doc.
"""

from __future__ import annotations

import math
from typing import Any as _Any


class ParamError(ValueError):
    """A value does not fit a param; the message says why, without naming the node."""


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: _Any = _Missing()


def _type_name(value: object) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"boolean {value!r}"
    if isinstance(value, (int, float)):
        return f"number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"text {shown!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _check_utf8(value: str) -> str:
    """Text from a file system or a command line may hold bytes that are not UTF-8 (lone surrogates):
    no graph file, event or run record can hold it, so it is refused here, shown with escapes."""
    from .events import safe_text

    shown = safe_text(value)
    if shown != value:
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise ParamError(f"text '{shown}' is not valid UTF-8 (rename it)")
    return value


class ParamKind:
    """Base of all kinds. ``name`` is also the type name used by graph inputs."""

    name = "any"
    numeric = False
    is_path = False
    #: graph-input types that may feed a param of this kind
    accepts_inputs: frozenset[str] = frozenset()

    def coerce(self, value: _Any) -> _Any:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"kind": self.name}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class IntKind(ParamKind):
    name = "int"
    numeric = True
    accepts_inputs = frozenset({"int", "seed"})

    def coerce(self, value):
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ParamError(f"expected a whole number, got {_type_name(value)}")
        return value


class FloatKind(ParamKind):
    name = "float"
    numeric = True
    accepts_inputs = frozenset({"int", "float"})

    def coerce(self, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamError(f"expected a number, got {_type_name(value)}")
        value = float(value)
        if not math.isfinite(value):
            raise ParamError(f"expected a finite number, got {value}")
        return value


class BoolKind(ParamKind):
    name = "bool"
    accepts_inputs = frozenset({"bool"})

    def coerce(self, value):
        if not isinstance(value, bool):
            raise ParamError(f"expected true or false, got {_type_name(value)}")
        return value


class StrKind(ParamKind):
    name = "str"
    accepts_inputs = frozenset({"str", "text", "choice", "int", "float"})

    def coerce(self, value):
        if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
            raise ParamError(f"expected text, got {_type_name(value)}")
        if isinstance(value, (int, float)):
            return str(value)
        if not isinstance(value, str):
            raise ParamError(f"expected text, got {_type_name(value)}")
        return _check_utf8(value)


class TextKind(StrKind):
    """Multi-line text (a prompt, a note)."""

    name = "text"


class Choice(ParamKind):
    """One of a fixed list of strings."""

    name = "choice"
    accepts_inputs = frozenset({"choice", "str"})

    def __init__(self, *options: str):
        if len(options) == 1 and isinstance(options[0], (list, tuple)):
            options = tuple(options[0])
        self.options = tuple(options)

    def coerce(self, value):
        if not isinstance(value, str) or value not in self.options:
            shown = ", ".join(self.options)
            raise ParamError(f"expected one of [{shown}], got {_type_name(value)}")
        return value

    def describe(self) -> dict:
        return {"kind": self.name, "options": list(self.options)}

    def __repr__(self) -> str:
        return f"Choice{self.options!r}"


class Device(Choice):
    """Where torch runs: ``auto`` (a GPU if there is one), ``cpu``, ``cuda`` or ``mps``.

    A run refuses a device this machine does not have before any node runs
    (``missing``); torch is imported for that only when a GPU is named.
    """

    OPTIONS = ("auto", "cpu", "cuda", "mps")

    def __init__(self, *options: str):
        super().__init__(*(options or self.OPTIONS))

    @staticmethod
    def missing(value: str) -> str | None:
        """Why ``value`` cannot be used on this machine, or None when it can."""
        if value not in ("cuda", "mps") and not value.startswith("cuda:"):
            return None
        import torch

        if value == "mps":
            mps = getattr(torch.backends, "mps", None)
            return None if mps is not None and mps.is_available() else \
                "device 'mps' was chosen but Apple MPS is not available here (use auto or cpu)"
        if not torch.cuda.is_available():
            return f"device {value!r} was chosen but torch sees no CUDA GPU here (use auto or cpu)"
        return None

    @staticmethod
    def resolve(value: str) -> str:
        """The device ``value`` names here: ``auto`` is CUDA, else Apple MPS, else the CPU. A device
        this machine lacks raises ``RuntimeError`` saying so."""
        import torch

        if value == "auto":
            mps = getattr(torch.backends, "mps", None)
            return "cuda" if torch.cuda.is_available() else "mps" if mps is not None and mps.is_available() else "cpu"
        why = Device.missing(value)
        if why:
            raise RuntimeError(why)
        return value

    @staticmethod
    def describe_on_machine(value: str) -> str:
        """What ``value`` means here, for the run record: ``cpu``, ``cuda:0 (NVIDIA H200)``, ``mps``."""
        import torch

        value = Device.resolve(value)
        if value.startswith("cuda"):
            index = int(value.partition(":")[2] or torch.cuda.current_device())
            return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
        return value


class RunPath(StrKind):
    """A file or folder name inside the run folder (``samples``, ``lora/manifest.json``).

    Relative only: an absolute path, a ``~`` or a ``..`` that leaves the run folder is
    refused, so a graph from someone else cannot write elsewhere. Normalised to
    forward slashes.
    """

    name = "str"
    within_run = True

    def coerce(self, value):
        value = super().coerce(value)
        text = value.strip().replace("\\", "/")
        if not text:
            raise ParamError("expected a name inside the run folder, got empty text")
        if "\x00" in text:
            raise ParamError("a path cannot contain a NUL character")
        if text.startswith(("/", "~")) or (len(text) > 1 and text[1] == ":"):
            raise ParamError(f"{_type_name(value)} is not inside the run folder: give a relative name "
                             f"(use a saver's 'folder' to write elsewhere)")
        parts = [p for p in text.split("/") if p not in ("", ".")]
        if ".." in parts or not parts:
            raise ParamError(f"{_type_name(value)} leaves the run folder: '..' is not allowed here")
        return "/".join(parts)

    def describe(self) -> dict:
        return {"kind": self.name, "within": "run folder"}


class _PathKind(ParamKind):
    is_path = True
    accepts_inputs = frozenset({"path", "file", "dir", "str"})
    target = "path"
    #: what a picker offers: "file", "dir" or both
    picks: tuple[str, ...] = ()

    def __init__(self, mode: str = "open", filter: str = ""):
        if mode not in ("open", "save"):
            raise ValueError(f"path mode must be 'open' or 'save', not {mode!r}")
        self.mode = mode
        self.filter = filter

    def coerce(self, value):
        if not isinstance(value, str) or not value.strip():
            raise ParamError(f"expected a {self.target} path, got {_type_name(value)}")
        if "\x00" in value:
            raise ParamError("a path cannot contain a NUL character")
        return _check_utf8(value)

    def describe(self) -> dict:
        d = {"kind": self.name, "mode": self.mode, "picks": list(self.picks)}
        if self.filter:
            d["filter"] = self.filter
        return d

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mode={self.mode!r})"


class File(_PathKind):
    """A file path; ``mode='open'`` must exist when the graph runs, ``'save'`` is written."""

    name = "file"
    target = "file"
    picks = ("file",)


class Dir(_PathKind):
    """A folder path."""

    name = "dir"
    target = "folder"
    picks = ("dir",)


class FileOrDir(_PathKind):
    """A path that names a file or a folder (a diffusers folder or a single ``.safetensors`` file).

    Saved as plain text like any path; ``filter`` applies when a file is picked. Its name is
    the graph-input type ``path``.
    """

    name = "path"
    target = "file or folder"
    picks = ("file", "dir")


class StrList(ParamKind):
    """A list of strings (prompts, tags). A single string is taken as a list of one."""

    name = "strlist"
    accepts_inputs = frozenset({"strlist", "str", "text"})

    def coerce(self, value):
        if isinstance(value, str):
            return [_check_utf8(value)]
        if not isinstance(value, list):
            raise ParamError(f"expected a list of texts, got {_type_name(value)}")
        out = []
        for i, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, (str, int, float)):
                raise ParamError(f"item {i}: expected text, got {_type_name(item)}")
            out.append(_check_utf8(str(item)))
        return out


class Seed(IntKind):
    """A random seed: 0 .. 2**32-1, or -1 for a fresh one chosen when the run starts."""

    name = "seed"
    numeric = False
    RANDOM = -1
    MAX = 2**32 - 1

    def coerce(self, value):
        value = super().coerce(value)
        if value != self.RANDOM and not 0 <= value <= self.MAX:
            raise ParamError(f"a seed is -1 (random) or between 0 and {self.MAX}, got {value}")
        return value


_PY_KINDS = {int: IntKind, float: FloatKind, bool: BoolKind, str: StrKind}

#: graph-input type name -> kind, for the ``inputs:`` section of a graph file
INPUT_KINDS: dict[str, type[ParamKind]] = {
    "int": IntKind,
    "float": FloatKind,
    "bool": BoolKind,
    "str": StrKind,
    "text": TextKind,
    "choice": Choice,
    "path": FileOrDir,
    "file": File,
    "dir": Dir,
    "strlist": StrList,
    "seed": Seed,
}


def as_kind(kind: _Any) -> ParamKind:
    """Accept ``int``/``float``/``bool``/``str``, a kind class, or a kind instance."""
    if isinstance(kind, ParamKind):
        return kind
    if kind in _PY_KINDS:
        return _PY_KINDS[kind]()
    if isinstance(kind, type) and issubclass(kind, ParamKind):
        return kind()
    raise TypeError(f"not a param kind: {kind!r}")


class Param:
    """A node parameter: kind, default, bounds and doc.

    ``Param(int, 16, min=1, max=1024, doc="LoRA rank")``. Omit the default to make
    the param required; ``optional=True`` allows ``null`` (default ``None``).
    """

    def __init__(
        self,
        kind: _Any,
        default: _Any = MISSING,
        *,
        min: float | None = None,
        max: float | None = None,
        doc: str = "",
        optional: bool = False,
        label: str | None = None,
    ):
        self.kind = as_kind(kind)
        self.optional = optional
        self.default = None if (default is MISSING and optional) else default
        self.min = min
        self.max = max
        self.doc = doc
        self.label = label
        self.name = ""  # set by the node decorator

    @property
    def required(self) -> bool:
        return self.default is MISSING

    def check(self, value: _Any) -> _Any:
        """Return the normalised value or raise ``ParamError``."""
        if value is None:
            if self.optional:
                return None
            raise ParamError("a value is required (got null)")
        value = self.kind.coerce(value)
        if self.kind.numeric or isinstance(self.kind, Seed):
            if self.min is not None and value < self.min:
                raise ParamError(f"{value} is below the minimum {self.min}")
            if self.max is not None and value > self.max:
                raise ParamError(f"{value} is above the maximum {self.max}")
        return value

    def describe(self) -> dict:
        d = {"name": self.name, **self.kind.describe(), "doc": self.doc}
        d["default"] = None if self.default is MISSING else self.default
        d["required"] = self.required
        d["optional"] = self.optional
        if self.min is not None:
            d["min"] = self.min
        if self.max is not None:
            d["max"] = self.max
        if self.label:
            d["label"] = self.label
        return d

    def __repr__(self) -> str:
        return f"Param({self.name or '?'}: {self.kind.name})"
