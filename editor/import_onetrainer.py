"""File > Import OneTrainer config: a OneTrainer training config (JSON) as a new, unsaved graph.

The graph comes from ``runtime.interop.onetrainer.importer`` (what ``nodetrainer import onetrainer``
writes); the report's unsupported rows and notes become warnings for the problems panel, located at
the node (and param) that the same key was mapped to where there is one, so that nothing the import
could not express goes unseen.
"""

from __future__ import annotations

import re
from pathlib import Path

from runtime.errors import WARNING, Problem
from runtime.graph import Graph
from runtime.interop.onetrainer.importer import import_onetrainer
from runtime.interop.onetrainer.report import MAPPED, NOTE, UNSUPPORTED, Report
from runtime.registry import Registry

from .document import Document

FILE_FILTER = "OneTrainer configs (*.json);;All files (*)"
#: the code of the import's problems (the panel shows them beside validation's)
CODE = "onetrainer_import"
#: the report's key of notes about the config file as a whole
FILE_KEY = "(file)"
_TARGET = re.compile(r"([A-Za-z_][\w-]*)(?:\.([A-Za-z_]\w*))?")


def locate(key: str, report: Report, graph: Graph) -> tuple[str | None, str | None]:
    """The node (and param) that ``key`` was mapped to, where it was: the first target of its mapped
    rows (``node.param``, ``node``, or ``node (type)``) that names a node of the graph."""
    for row in report.rows:
        if row.kind != MAPPED or row.key != key:
            continue
        for target in row.target.split(","):
            m = _TARGET.match(target.strip())
            if m and m.group(1) in graph.nodes:
                return m.group(1), m.group(2)
    return None, None


def import_problems(report: Report, graph: Graph) -> list[Problem]:
    """A WARNING per unsupported row and note of ``report``, in the report's order."""
    out = []
    for row in report.rows:
        if row.kind not in (UNSUPPORTED, NOTE):
            continue
        label = "config" if row.key == FILE_KEY else row.key
        if row.kind == UNSUPPORTED:
            message = f"OneTrainer {label}: unsupported: {row.target}"
        elif row.target.startswith(row.key):  # a note that names its key itself ("key = value: ...")
            message = f"OneTrainer {row.target}"
        else:
            message = f"OneTrainer {label}: {row.target}"
        node, field = locate(row.key, report, graph)
        out.append(Problem(message, node=node, field=field, code=CODE, severity=WARNING))
    return out


def load(path: str | Path, registry: Registry, concepts: str | Path | None = None,
         samples: str | Path | None = None) -> tuple[Document, list[Problem]]:
    """The unsaved document of the graph imported from ``path`` and its warnings.
    ValueError (one line) for a file that cannot be read or imported."""
    imported = import_onetrainer(path, concepts=concepts, samples=samples, registry=registry)
    doc = Document(registry, imported.graph)  # no file path: untitled, Save asks where
    return doc, import_problems(imported.report, imported.graph)


def summary(path: str | Path, doc: Document, problems: list[Problem]) -> str:
    """The status-bar line after an import."""
    nodes = len(doc.graph.nodes)
    what = f"{len(problems)} warning(s) in Problems" if problems else "every changed setting mapped"
    return f"imported {Path(path).name}: {nodes} nodes; {what} (unsaved: Save writes the graph)"
