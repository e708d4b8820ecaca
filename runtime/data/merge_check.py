"""Validation of a merge node before a run: each branch hands on the first branch's fields, typed to fit.

Runs in the editor on every change, so it only walks the graph (no node runs).
A branch is the fields that share a space: the nearest source or merge upstream
of each link, as the engine groups them at run time (``engine.merge_branches``).
"""

from __future__ import annotations

from ..port_types import SAMPLE, PortType, is_compatible

_DEPTH = 256  # a data graph deeper than this is not checked (never a false error)


def check_branches(c) -> None:
    """Report, on input 'fields' or 'more' of the merge node ``c`` checks, what would fail at run time."""
    views = {v.id: v for v in c.ancestors("fields") + c.ancestors("more")}
    first = [(v, _space(v, views)) for v in c.linked("fields")]
    spaces = {s for _, s in first if s is not None}
    if len(spaces) > 1:
        shown = ", ".join(f"{v.id}.{v.port} (source {s!r})" for v, s in first)
        c.error(f"the first branch's fields come from several sources: {shown}; connect one branch here and "
                f"the others to 'more'", input="fields")
        return
    want = _named(first, views)
    if want is None:
        c.error("two links are both named the same; each field is handed on under its name", input="fields")
        return
    groups: dict[str, list] = {}
    for v in c.linked("more"):
        s = _space(v, views)
        if s is None:
            return  # an unknown node upstream: reported on its own
        groups.setdefault(s, []).append((v, s))
    for k, (space, links) in enumerate(groups.items(), start=2):
        if space in spaces:
            c.error(f"{links[0][0].id}.{links[0][0].port} comes from source {space!r}, the first branch's source; "
                    f"a branch goes to 'fields' or to 'more', not both", input="more")
            continue
        named = _named(links, views)
        if named is None:
            c.error(f"branch {k} (source {space!r}) connects two fields of one name", input="more")
            continue
        missing = [n for n in want if n not in named]
        extra = [n for n in named if n not in want]
        if missing or extra:
            parts = ([f"lacks {', '.join(map(repr, missing))}"] if missing else []) + (
                [f"has {', '.join(map(repr, extra))} the first branch lacks"] if extra else [])
            c.error(f"branch {k} (source {space!r}) {' and '.join(parts)}; every branch hands on the first "
                    f"branch's fields ({', '.join(want)}), matched by name", input="more")
            continue
        for name, (link, t) in named.items():
            first_link, wt = want[name]
            if t is not None and wt is not None and not is_compatible(t, wt):
                c.error(f"field {name!r} of branch {k} ({link}) is {t.name}, but the first branch's "
                        f"({first_link}) is {wt.name}", input="more")


def _named(links, views) -> dict | None:
    """``{field name: ("node.port", type or None)}``; None when a name repeats."""
    out: dict = {}
    for v, _ in links:
        if v.port in out:
            return None
        out[v.port] = (f"{v.id}.{v.port}", _type(v, v.port, views, 0))
    return out


def _space(view, views, depth: int = 0) -> str | None:
    """Id of the source or merge node whose index space the output of ``view`` belongs to."""
    from .stages import MergeStage, SourceStage

    if depth > _DEPTH:
        return None
    if issubclass(view.spec.cls, (SourceStage, MergeStage)):
        return view.id
    for name, decl in view.spec.inputs.items():
        if getattr(decl.type, "lifetime", None) != SAMPLE:
            continue
        for link in view.links(name):
            up = views.get(link.node)
            return _space(up, views, depth + 1) if up is not None else None
    return view.id


def _type(view, port: str, views, depth: int) -> PortType | None:
    """The type output ``port`` of ``view`` has as connected (through mirrored and pass-through ports)."""
    out = view.spec.outputs.get(port)
    if out is None or depth > _DEPTH:
        return None
    link = out.source if out.source is not None else (
        (view.links(out.follows) or [None])[0] if out.follows is not None else None)
    if link is not None:
        up = views.get(link.node)
        return _type(up, link.port, views, depth + 1) if up is not None else None
    return out.type if isinstance(out.type, PortType) else None
