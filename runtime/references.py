"""``${name}`` references from params to graph inputs."""

from __future__ import annotations

import re
from typing import Any as _Any

REF_RE = re.compile(r"\$\{([^}]*)\}")
# \Z, not $: "$" also matches before a final newline; callers may use .match or .fullmatch
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def refs_in(value: _Any) -> list[str]:
    """Names referenced by a param value (a string or a list of strings)."""
    items = value if isinstance(value, list) else [value]
    return [m.group(1).strip() for v in items if isinstance(v, str) for m in REF_RE.finditer(v)]


def is_full_ref(value: _Any) -> str | None:
    """The name if ``value`` is exactly ``${name}`` (it then takes the input's typed value)."""
    if isinstance(value, str):
        m = REF_RE.fullmatch(value.strip())
        if m:
            return m.group(1).strip()
    return None


def substitute(value: _Any, values: dict[str, _Any]) -> _Any:
    """Replace references. A whole-value reference keeps the input's type;
    references inside text are replaced by the value's text."""
    if isinstance(value, list):
        out = []
        for item in value:
            name = is_full_ref(item)
            if name is not None and isinstance(values[name], list):
                out.extend(values[name])
            else:
                out.append(substitute(item, values))
        return out
    name = is_full_ref(value)
    if name is not None:
        return values[name]
    if isinstance(value, str):
        return REF_RE.sub(lambda m: _text(values[m.group(1).strip()]), value)
    return value


def _text(v: _Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return ", ".join(map(str, v))
    return str(v)
