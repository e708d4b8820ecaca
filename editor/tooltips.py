"""Rich-text tooltips for nodes, ports and params, generated from node specs."""

from __future__ import annotations

from html import escape

from runtime.params import MISSING, Param
from runtime.spec import Input, NodeSpec, Output


def _doc_html(text: str) -> str:
    paras = [" ".join(p.split()) for p in text.strip().split("\n\n") if p.strip()]
    return "".join(f"<p>{escape(p)}</p>" for p in paras)


def port_tooltip(port: Input | Output, is_input: bool) -> str:
    t = port.type
    flags = [t.lifetime]
    if is_input:
        flags.insert(0, "optional" if port.optional else "required")
        if port.multi:
            flags.append("takes several links")
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
