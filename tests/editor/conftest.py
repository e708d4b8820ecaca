"""Fixtures for the editor tests (pytest-qt, offscreen)."""

from __future__ import annotations

import os

# Before anything imports Qt: no display needed, PySide6 for NodeGraphQt's Qt.py shim.
os.environ["QT_QPA_PLATFORM"] = "offscreen"
os.environ.setdefault("QT_PREFERRED_BINDING", "PySide6")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import sys  # noqa: E402

import pytest  # noqa: E402
from PySide6 import QtCore, QtWidgets  # noqa: E402

from runtime.registry import Registry  # noqa: E402

from . import sample_nodes  # noqa: E402


def _quiet(mode, context, message):  # the offscreen platform warns about every window resize
    if "propagateSizeHints" in message or "not accepted by receiving widget" in message:
        return
    sys.stderr.write(message + "\n")


QtCore.qInstallMessageHandler(_quiet)


@pytest.fixture(scope="session")
def registry() -> Registry:
    """The built-in nodes plus the editor's test-only node types (sample_nodes.py)."""
    reg = Registry.discover(entry_points=False)
    for cls in sample_nodes.CLASSES:
        reg.register(cls, "tests")
    return reg


@pytest.fixture
def settings(tmp_path) -> QtCore.QSettings:
    return QtCore.QSettings(str(tmp_path / "editor.ini"), QtCore.QSettings.Format.IniFormat)


@pytest.fixture
def doc(qapp, registry):
    from editor.document import Document

    return Document(registry)


@pytest.fixture
def canvas(qtbot, doc):
    from editor.canvas import Canvas

    c = Canvas()
    c.set_document(doc)
    qtbot.addWidget(c.widget)
    c.widget.resize(1000, 700)
    return c


class Dialogs:
    """Records modal message boxes instead of showing them; ``answer`` is what question() returns."""

    def __init__(self):
        self.calls: list[tuple[str, str]] = []
        self.answer = QtWidgets.QMessageBox.StandardButton.Discard

    def question(self, parent, title, text, *args, **kwargs):
        self.calls.append(("question", text))
        return self.answer

    def critical(self, parent, title, text, *args, **kwargs):
        self.calls.append(("critical", text))
        return QtWidgets.QMessageBox.StandardButton.Ok


@pytest.fixture
def dialogs(monkeypatch) -> Dialogs:
    d = Dialogs()
    monkeypatch.setattr(QtWidgets.QMessageBox, "question", d.question)
    monkeypatch.setattr(QtWidgets.QMessageBox, "critical", d.critical)
    return d


@pytest.fixture
def window(qtbot, registry, settings, tmp_path, dialogs):
    from editor.main_window import MainWindow

    w = MainWindow(registry=registry, settings=settings, runs_dir=tmp_path / "runs")
    qtbot.addWidget(w)
    w.resize(1400, 900)
    w.show()
    yield w
    if w.run_panel.running and w.run_panel.process.proc is not None:
        w.run_panel.process.proc.kill()
        w.run_panel.process.proc.waitForFinished(5000)
    w.doc.undo.setClean()  # no unsaved-changes prompt on teardown


def pytest_configure(config):
    # NodeGraphQt still calls Qt5-era QMouseEvent.pos(); PySide6 warns on each mouse event
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:NodeGraphQt.*")


@pytest.fixture
def no_exceptions(monkeypatch):
    """Fails the test on any exception Qt reports from a Python override (a slot, ``stepEnabled``,
    a paint or mouse handler): PySide prints those through ``sys.excepthook`` and carries on."""
    caught: list[str] = []

    def hook(kind, value, tb):
        caught.append(f"{kind.__name__}: {value}")

    monkeypatch.setattr(sys, "excepthook", hook)
    monkeypatch.setattr(sys, "unraisablehook", lambda u: caught.append(f"unraisable: {u.exc_value!r}"))
    yield caught
    assert not caught, f"{len(caught)} exception(s) during normal use: {caught[:5]}"
