"""Help texts: rich-text tooltips for nodes, ports and params (generated from node specs), the node
reference, the README's quick reference and the About versions (no Qt here)."""

from __future__ import annotations

import re
from html import escape
from pathlib import Path

from runtime.params import MISSING, Param
from runtime.spec import Input, NodeSpec, Output


def _doc_html(text: str) -> str:
    paras = [" ".join(p.split()) for p in text.strip().split("\n\n") if p.strip()]
    return "".join(f"<p>{escape(p)}</p>" for p in paras)


def port_tooltip(port: Input | Output, is_input: bool, type=None) -> str:
    """``type``: the type the port has as connected, when it is not the declared one (a cache's field)."""
    t = type or port.type
    flags = [t.lifetime]
    if is_input:
        flags.insert(0, "optional" if port.optional else "required")
        if port.multi:
            flags.append("takes several links")
    elif getattr(port, "source", None) is not None:
        flags.append(f"hands on {port.source}")
    elif getattr(port, "mirrors", None) is not None:
        flags.append(f"one port per link of {port.mirrors}")
    chain = " &rarr; ".join(escape(a.name) for a in t.ancestry())
    html = f"<b>{escape(port.name)}</b>: {escape(t.name)} <i>({', '.join(flags)})</i>"
    if port.doc:
        html += f"<br>{escape(port.doc)}"
    if t.doc:
        html += f"<br><span style='color:gray'>{escape(t.name)}: {escape(t.doc)}</span>"
    if len(t.ancestry()) > 1:
        html += f"<br><span style='color:gray'>is-a {chain}</span>"
    return html


def param_summary(p: Param) -> str:
    """``kind, default X, range a..b`` for one param."""
    d = p.describe()
    parts = [p.kind.name]
    if "options" in d:
        parts.append("one of " + ", ".join(d["options"]))
    if "mode" in d:
        parts.append(d["mode"])
    if p.min is not None or p.max is not None:
        parts.append(f"range {'' if p.min is None else p.min}..{'' if p.max is None else p.max}")
    parts.append("required" if p.default is MISSING else f"default {p.default!r}")
    return ", ".join(parts)


def param_tooltip(p: Param) -> str:
    html = f"<b>{escape(p.name)}</b> <i>({escape(param_summary(p))})</i>"
    if p.doc:
        html += f"<br>{escape(p.doc)}"
    return html


def node_tooltip(spec: NodeSpec, node_id: str) -> str:
    html = (f"<b>{escape(spec.title)}</b> &nbsp;<span style='color:gray'>{escape(spec.qualified)} "
            f"&middot; id <tt>{escape(node_id)}</tt> &middot; {escape(spec.category)}</span>")
    html += _doc_html(spec.doc)
    if spec.inputs:
        html += "<b>Inputs</b><ul>" + "".join(f"<li>{port_tooltip(p, True)}</li>" for p in spec.inputs.values()) + "</ul>"
    if spec.outputs:
        html += "<b>Outputs</b><ul>" + "".join(f"<li>{port_tooltip(p, False)}</li>" for p in spec.outputs.values()) + "</ul>"
    if spec.params:
        html += "<b>Params</b><ul>" + "".join(f"<li>{param_tooltip(p)}</li>" for p in spec.params.values()) + "</ul>"
    return html


def placeholder_tooltip(type_text: str, node_id: str, suggestions: list[str]) -> str:
    html = (f"<b style='color:#e53935'>Unknown node type {escape(type_text)}</b><br>"
            f"id <tt>{escape(node_id)}</tt>. No installed node or pack provides this type. "
            "Its params and links are kept and saved unchanged.")
    if suggestions:
        html += "<br>Did you mean: " + ", ".join(escape(s) for s in suggestions) + "?"
    return html


def problems_html(messages: list[tuple[str, str]]) -> str:
    """(severity, message) pairs as a list for a node tooltip."""
    if not messages:
        return ""
    items = "".join(
        f"<li style='color:{'#e53935' if sev == 'error' else '#f0a500'}'>{escape(msg)}</li>" for sev, msg in messages
    )
    return f"<hr><b>Problems</b><ul>{items}</ul>"


#: README sections shown by Help > Quick Reference (a heading that starts with one of these)
QUICK_REFERENCE_SECTIONS = ("Editor", "Command line", "Long runs")
#: a README is read only this far (it is ours, but a file must never make us read without limit)
MAX_README_CHARS = 400_000


def markdown_sections(text: str, titles: tuple[str, ...]) -> list[str]:
    """The ``## `` sections of a Markdown text whose titles start with one of ``titles``, in file order,
    each with its heading; headings inside code fences do not count. Images are left out."""
    sections: list[list[str]] = []
    current: list[str] | None = None
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        heading = None if fenced else re.match(r"##\s+(.*\S)\s*$", line)
        if heading:
            current = [line] if heading.group(1).startswith(titles) else None
            if current is not None:
                sections.append(current)
            continue
        if not fenced and re.match(r"#\s", line):  # a top-level heading ends any section
            current = None
        if current is not None and not re.match(r"\s*!\[", line):
            current.append(line)
    return ["\n".join(lines).strip() for lines in sections]


def quick_reference(readme: Path, titles: tuple[str, ...] = QUICK_REFERENCE_SECTIONS) -> str:
    """Markdown of the README's quick-reference sections, or a line saying why there is none."""
    try:
        with open(readme, encoding="utf-8", errors="replace") as f:
            text = f.read(MAX_README_CHARS)
    except OSError as e:
        return f"The quick reference comes from {readme}, which cannot be read ({e.strerror or e})."
    found = markdown_sections(text, titles)
    if not found:
        return f"{readme} has no section {', '.join(repr(t) for t in titles)}."
    return "\n\n".join(found)


def node_reference(spec: NodeSpec | None, node_id: str | None = None, type_text: str = "") -> str:
    """``nodetrainer nodes --describe TYPE`` text for a node (plain text), or why there is none."""
    if spec is None:
        if node_id is None:
            return ("No node is selected. Select one node on the canvas (or a node type in the Nodes "
                    "library), then choose Help > Node Reference again.")
        return (f"Node '{node_id}' has the type {type_text or '(none)'}, which no installed node or pack "
                "provides, so there is no reference for it.")
    from runtime.cli import describe_text  # the CLI's own text, so both say the same

    head = f"node '{node_id}'\n\n" if node_id else ""
    return head + describe_text(spec)


def package_version(*names: str) -> str | None:
    """The installed version of the first distribution of ``names`` that is installed; nothing is imported."""
    from importlib.metadata import PackageNotFoundError, version

    for name in names:
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return None


def about_versions(qt_versions: dict[str, str]) -> list[tuple[str, str]]:
    """(name, version) rows for Help > About; ``qt_versions``: what the running Qt stack reports.
    torch is looked up in the installed metadata only: the editor never imports it."""
    import platform

    from runtime import __version__

    rows = [("nodetrainer", __version__), ("Python", platform.python_version())]
    rows += list(qt_versions.items())
    for label, dists in (("torch", ("torch",)), ("diffusers", ("diffusers",)), ("NodeGraphQt", ("NodeGraphQt",))):
        if label not in qt_versions:
            rows.append((label, package_version(*dists) or "not installed"))
    return rows
