"""Data preview: the first N samples a data node produces (image, caption, size).

Token ids show the text they decode to and their pieces; latents show the picture
their VAE decodes them to (or their channels as grey images) and their shape.

The samples are computed by ``editor.preview_worker`` in a child process with
the runtime's preview function (``runtime.data.preview.preview``, what
``nodetrainer preview`` prints), so the editor never runs nodes itself. The
worker writes thumbnails and prints one JSON line per sample; skipped items
show why they were skipped.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path

from PySide6 import QtCore, QtGui, QtWidgets

from runtime.paths import ROOT

from .document import Document

DEFAULT_COUNT = 8


def preview_available() -> bool:
    return importlib.util.find_spec("runtime.data.preview") is not None


def can_preview(doc: Document, node_id: str) -> str | None:
    """Why ``node_id`` cannot be previewed, or None."""
    spec = doc.spec(node_id)
    if spec is None:
        return f"node {node_id!r} has an unknown type"
    if not (spec.is_data_stage or spec.category.strip().lower() == "data"):
        return f"{spec.title} ({node_id}) is not a data node: only data-graph nodes can be previewed"
    if not preview_available():
        return "the data preview needs runtime/data/preview.py, which this installation does not have"
    return None


def worker_command(graph_file: Path, node_id: str, count: int, out_dir: Path) -> list[str]:
    return ["-m", "editor.preview_worker", str(graph_file), node_id, "--count", str(count), "--out", str(out_dir)]


class PreviewDialog(QtWidgets.QDialog):
    """Runs the preview worker and lists its samples as they arrive."""

    done = QtCore.Signal(int)  # number of samples shown

    def __init__(self, doc: Document, node_id: str, parent: QtWidgets.QWidget | None = None,
                 count: int = DEFAULT_COUNT):
        super().__init__(parent)
        self.doc = doc
        self.node_id = node_id
        self.count = count
        self.items: list[dict] = []
        self.errors: list[str] = []
        self.stderr: list[str] = []
        self.setWindowTitle(f"Preview of {node_id}")
        self.resize(820, 560)
        self.table = QtWidgets.QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["image", "caption / text", "size", "fields"])
        self.table.setColumnWidth(1, 300)
        self.table.setWordWrap(True)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setIconSize(QtCore.QSize(96, 96))
        self.table.verticalHeader().setDefaultSectionSize(100)
        self.status = QtWidgets.QLabel("computing\u2026")
        self.status.setWordWrap(True)
        lay = QtWidgets.QVBoxLayout(self)
        lay.addWidget(self.status)
        lay.addWidget(self.table, 1)
        self._tmp = tempfile.TemporaryDirectory(prefix="nodetrainer-preview-")
        self._graph_file: Path | None = None
        self._buffer = b""
        self.proc = QtCore.QProcess(self)
        self.proc.readyReadStandardOutput.connect(self._read)
        self.proc.readyReadStandardError.connect(
            lambda: self.stderr.append(bytes(self.proc.readAllStandardError()).decode("utf-8", "replace")))
        self.proc.finished.connect(self._finished)

    def start(self) -> None:
        # the document may be unsaved: preview a snapshot beside it so relative paths resolve the same
        base = self.doc.graph.base_dir
        try:
            fd, name = tempfile.mkstemp(prefix=".preview-", suffix=".unsaved-preview", dir=base)
        except OSError:
            fd, name = tempfile.mkstemp(prefix="preview-", suffix=".unsaved-preview", dir=self._tmp.name)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(self.doc.text())
        self._graph_file = Path(name)
        env = QtCore.QProcessEnvironment.systemEnvironment()
        path = env.value("PYTHONPATH", "")
        env.insert("PYTHONPATH", str(ROOT) + (os.pathsep + path if path else ""))
        self.proc.setProcessEnvironment(env)
        self.proc.start(sys.executable, worker_command(self._graph_file, self.node_id, self.count,
                                                       Path(self._tmp.name)))

    def _read(self) -> None:
        self._buffer += bytes(self.proc.readAllStandardOutput())
        *lines, self._buffer = self._buffer.split(b"\n")
        for raw in lines:
            try:
                item = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if not isinstance(item, dict):
                continue
            if "failure" in item:
                self.errors.append(str(item["failure"]))
            elif isinstance(item.get("item"), dict):
                self._add(item["item"])

    def _add(self, item: dict) -> None:
        self.items.append(item)
        row = self.table.rowCount()
        self.table.insertRow(row)
        cell = QtWidgets.QTableWidgetItem()
        if item.get("thumbnail"):
            pix = QtGui.QPixmap(item["thumbnail"])
            if not pix.isNull():
                cell.setIcon(QtGui.QIcon(pix))
        cell.setToolTip("\n".join(str(item[k]) for k in ("path", "note") if item.get(k)))
        self.table.setItem(row, 0, cell)
        text = QtWidgets.QTableWidgetItem(self.item_text(item))
        text.setToolTip(str(item.get("detail") or item.get("caption") or ""))
        self.table.setItem(row, 1, text)
        self.table.setItem(row, 2, QtWidgets.QTableWidgetItem(self.size_text(item)))
        fields = item.get("fields") or {}
        self.table.setItem(row, 3, QtWidgets.QTableWidgetItem(", ".join(f"{k}: {v}" for k, v in fields.items())))
        if item.get("kind") == "tokens":  # the ids with their pieces take a few lines
            self.table.resizeRowToContents(row)
            self.table.setRowHeight(row, max(100, min(self.table.rowHeight(row), 240)))

    @staticmethod
    def item_text(item: dict) -> str:
        """The text cell: why it was skipped; decoded tokens and their ids; the caption (and for a latent,
        how its picture was made)."""
        if item.get("error"):
            return f"skipped: {item['error']}"
        if item.get("kind") == "tokens":
            lines = [f"\u201c{item['text']}\u201d" if item.get("text") is not None else "(no tokenizer to decode)",
                     str(item.get("detail") or "")]
        else:
            lines = [str(item.get("caption") or ""), str(item.get("note") or "")]
        return "\n".join(line for line in lines if line)

    @staticmethod
    def size_text(item: dict) -> str:
        """``64×64``, ``4×32×32`` (a latent) or ``77 ids``; empty when nothing tells."""
        text = str(item.get("size_text") or "")
        if not text:
            size = item.get("size")
            text = f"{size[0]}x{size[1]}" if size else ""
        return "" if text == "?" else text.replace("x", "\u00d7")

    def _finished(self, code: int, _status) -> None:
        self._read()
        if self._graph_file is not None and self._graph_file.parent != Path(self._tmp.name):
            try:
                self._graph_file.unlink()
            except OSError:
                pass
        if code == 0 and not self.errors:
            self.status.setText(f"first {len(self.items)} sample(s) of {self.node_id}")
        else:
            why = "\n".join(e.strip() for e in self.errors) or "".join(self.stderr).strip()[-2000:]
            self.status.setText(f"preview failed: {why or f'exit code {code}'}")
        self.done.emit(len(self.items))

    def closeEvent(self, event) -> None:
        if self.proc.state() != QtCore.QProcess.ProcessState.NotRunning:
            self.proc.kill()
            self.proc.waitForFinished(2000)
        super().closeEvent(event)
