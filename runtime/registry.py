"""The node registry: built-in nodes from ``nodes/``, packs from entry points.

Nothing is ever imported because a graph names it: discovery imports the
``nodes`` package and the modules that installed packs declare under the
``nodetrainer.nodes`` entry-point group, and nothing else.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
from dataclasses import dataclass
from types import ModuleType
from typing import Iterable

from . import port_types
from .errors import SpecError, closest
from .port_types import PortType
from .spec import NodeSpec, spec_of

ENTRY_POINT_GROUP = "nodetrainer.nodes"


@dataclass(frozen=True)
class LoadError:
    """A pack, module or node class that could not be registered."""

    source: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.message}"


class Registry:
    """Node specs by type id, and port types by name."""

    def __init__(self) -> None:
        self._specs: dict[str, NodeSpec] = {}
        self._types: dict[str, PortType] = {}
        self._origin: dict[str, str] = {}
        self.load_errors: list[LoadError] = []
        for t in port_types.BUILTIN_TYPES:
            self.register_type(t)

    # -- types -------------------------------------------------------------
    def register_type(self, t: PortType) -> PortType:
        for a in reversed(t.ancestry()):
            known = self._types.get(a.name)
            if known is None:
                self._types[a.name] = a
            elif known is not a:
                raise SpecError(f"port type name {a.name!r} is declared twice with different definitions")
        return t

    def type(self, name: str) -> PortType | None:
        return self._types.get(name)

    def types(self) -> list[PortType]:
        return list(self._types.values())

    # -- nodes -------------------------------------------------------------
    def register(self, cls: type, origin: str = "") -> NodeSpec:
        """Check and add a node class; raise ``SpecError`` naming the class and the problem."""
        label = f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', cls)}"
        spec = spec_of(cls)
        if spec is None:
            raise SpecError(f"{label}: not a node class (missing @node decorator)")
        problems = self._resolve_port_types(spec) + spec.problems()
        if problems:
            raise SpecError(f"{label} ({spec.type_id}): " + "; ".join(problems))
        if spec.type_id in self._specs:
            raise SpecError(
                f"{label}: type id {spec.type_id!r} is already registered by {self._origin[spec.type_id]}"
            )
        ports = list(spec.inputs.values()) + list(spec.outputs.values())
        try:
            for p in ports:
                self.register_type(p.type)
                if isinstance(getattr(p, "serves", None), PortType):  # the kind of model an objective serves
                    self.register_type(p.serves)
        except SpecError as e:
            raise SpecError(f"{label} ({spec.type_id}): {e}") from None
        self._specs[spec.type_id] = spec
        self._origin[spec.type_id] = origin or label
        return spec

    def _resolve_port_types(self, spec: NodeSpec) -> list[str]:
        """Replace port types given by name with the registered type."""
        problems = []
        for group, ports in (("input", spec.inputs), ("output", spec.outputs)):
            for name, port in ports.items():
                if isinstance(port.type, str):
                    found = self._types.get(port.type)
                    if found is None:
                        hint = closest(port.type, self._types)
                        extra = f" (did you mean {', '.join(hint)}?)" if hint else ""
                        problems.append(f"{group} {name!r} has unknown type {port.type!r}{extra}")
                    else:
                        port.type = found
        return problems

    def get(self, type_id: str) -> NodeSpec | None:
        return self._specs.get(type_id)

    def __contains__(self, type_id: str) -> bool:
        return type_id in self._specs

    def specs(self) -> list[NodeSpec]:
        return sorted(self._specs.values(), key=lambda s: (s.category.lower(), s.type_id))

    def by_category(self) -> dict[str, list[NodeSpec]]:
        out: dict[str, list[NodeSpec]] = {}
        for s in self.specs():
            out.setdefault(s.category, []).append(s)
        return out

    def suggest(self, type_id: str) -> list[str]:
        """Known type ids close to an unknown one (also matching on the last part)."""
        near = closest(type_id, self._specs)
        tail = type_id.rsplit(".", 1)[-1]
        near += [t for t in self._specs if t.rsplit(".", 1)[-1] == tail and t not in near]
        return near[:3]

    # -- discovery ---------------------------------------------------------
    def register_module(self, module: ModuleType, origin: str = "") -> int:
        """Register every node class defined in ``module``; errors go to ``load_errors``."""
        count = 0
        for value in list(vars(module).values()):
            if isinstance(value, type) and value.__module__ == module.__name__ and spec_of(value):
                try:
                    self.register(value, origin or module.__name__)
                    count += 1
                except SpecError as e:
                    self.load_errors.append(LoadError(origin or module.__name__, str(e)))
        return count

    def register_package(self, package: str | ModuleType, origin: str = "") -> int:
        """Import a package and all its submodules, registering their node classes."""
        try:
            pkg = importlib.import_module(package) if isinstance(package, str) else package
        except Exception as e:  # a broken pack must not take the others down
            self.load_errors.append(LoadError(origin or str(package), f"import failed: {type(e).__name__}: {e}"))
            return 0
        count = self.register_module(pkg, origin)
        for info in pkgutil.walk_packages(getattr(pkg, "__path__", []), pkg.__name__ + "."):
            try:
                mod = importlib.import_module(info.name)
            except Exception as e:
                self.load_errors.append(LoadError(info.name, f"import failed: {type(e).__name__}: {e}"))
                continue
            count += self.register_module(mod, origin)
        return count

    def register_entry_points(self, group: str = ENTRY_POINT_GROUP) -> int:
        """Load third-party packs: each entry point names a module/package or a
        callable that returns node classes."""
        count = 0
        for ep in sorted(importlib.metadata.entry_points(group=group), key=lambda e: e.name):
            origin = f"pack {ep.name!r} ({ep.value})"
            try:
                target = ep.load()
            except Exception as e:
                self.load_errors.append(LoadError(origin, f"import failed: {type(e).__name__}: {e}"))
                continue
            if isinstance(target, ModuleType):
                count += self.register_package(target, origin)
            elif callable(target):
                try:
                    classes: Iterable[type] = target()
                    classes = list(classes)
                except Exception as e:
                    self.load_errors.append(LoadError(origin, f"failed: {type(e).__name__}: {e}"))
                    continue
                for cls in classes:
                    try:
                        self.register(cls, origin)
                        count += 1
                    except SpecError as e:
                        self.load_errors.append(LoadError(origin, str(e)))
            else:
                self.load_errors.append(LoadError(origin, "entry point is neither a module nor a callable"))
        return count

    @classmethod
    def discover(cls, builtin: bool = True, entry_points: bool = True) -> Registry:
        reg = cls()
        if builtin:
            reg.register_package("nodes", "built-in")
        if entry_points:
            reg.register_entry_points()
        return reg


_default: Registry | None = None


def default_registry() -> Registry:
    """The process-wide registry of built-in nodes and installed packs."""
    global _default
    if _default is None:
        _default = Registry.discover()
    return _default
