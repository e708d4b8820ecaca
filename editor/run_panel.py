"""The run panel: start/stop and commands, progress with ETA, loss chart, samples, log."""

from __future__ import annotations

from pathlib import Path

from PySide6 import QtCore, QtGui, QtWidgets

from .run_process import RunProcess
from .run_state import RunState, log_line
from .run_widgets import LossChart, SampleGallery

FINISHED_TEXT = {
    "ok": "finished",
    "failed": "failed",
    "cancelled": "stopped",
    "aborted": "aborted",
    "invalid": "not started: the graph is invalid (see the log)",
}


class RunPanel(QtWidgets.QWidget):
    """Shows one run at a time; the window decides what file to run (``start``)."""

    run_requested = QtCore.Signal()
    node_states_changed = QtCore.Signal(dict)
    node_failed = QtCore.Signal(str, str)  # node id, message
    finished = QtCore.Signal(str)  # status
    event_received = QtCore.Signal(dict)

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.process = RunProcess(self)
        self.process.event.connect(self._on_event)
        self.process.output.connect(self._on_output)
        self.process.finished.connect(self._on_finished)
        self.state = RunState()
        self.cleanup: list[Path] = []  # temporary files to delete when the run ends

        self.run_button = QtWidgets.QPushButton("Run")
        self.run_button.setToolTip("Save (or snapshot) the graph and run it as a separate process")
        self.stop_button = QtWidgets.QPushButton("Stop")
        self.sample_button = QtWidgets.QPushButton("Sample now")
        self.save_button = QtWidgets.QPushButton("Save now")
        self.backup_button = QtWidgets.QPushButton("Backup now")
        self.run_button.clicked.connect(self.run_requested)
        self.stop_button.clicked.connect(self.stop)
        self.sample_button.clicked.connect(lambda: self.send("sample"))
        self.save_button.clicked.connect(lambda: self.send("save"))
        self.backup_button.clicked.connect(lambda: self.send("backup"))
        self.progress = QtWidgets.QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setTextVisible(True)
        self.progress.setFormat("idle")
        self.label = QtWidgets.QLabel("")
        self.label.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)

        bar = QtWidgets.QHBoxLayout()
        for b in (self.run_button, self.stop_button, self.sample_button, self.save_button, self.backup_button):
            bar.addWidget(b)
        bar.addWidget(self.progress, 1)

        self.chart = LossChart()
        self.gallery = SampleGallery()
        self.log = QtWidgets.QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(5000)
        self.log.setLineWrapMode(QtWidgets.QPlainTextEdit.LineWrapMode.NoWrap)
        font = QtGui.QFontDatabase.systemFont(QtGui.QFontDatabase.SystemFont.FixedFont)
        font.setPointSizeF(max(7.0, font.pointSizeF() - 1))
        self.log.setFont(font)
        split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        for w, title in ((self.chart, "Loss"), (self.gallery, "Samples"), (self.log, "Log")):
            box = QtWidgets.QGroupBox(title)
            lay = QtWidgets.QVBoxLayout(box)
            lay.setContentsMargins(2, 2, 2, 2)
            lay.addWidget(w)
            split.addWidget(box)
        split.setSizes([300, 300, 500])

        main = QtWidgets.QVBoxLayout(self)
        main.setContentsMargins(4, 4, 4, 4)
        main.addLayout(bar)
        main.addWidget(self.label)
        main.addWidget(split, 1)
        self._set_running(False)

        self._chart_timer = QtCore.QTimer(self)  # repaint the chart at most 10 times a second
        self._chart_timer.setSingleShot(True)
        self._chart_timer.setInterval(100)
        self._chart_timer.timeout.connect(lambda: self.chart.set_data(self.state.losses, self.state.smoothed))

    @property
    def running(self) -> bool:
        return self.process.running

    def _set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        for b in (self.stop_button, self.sample_button, self.save_button, self.backup_button):
            b.setEnabled(running)

    def start(self, graph_file: Path, runs_dir: Path, cleanup: list[Path] = ()) -> None:
        self.state = RunState()
        self.cleanup = list(cleanup)
        self.chart.set_data([], [])
        self.gallery.clear()
        self.log.clear()
        self.progress.setRange(0, 0)  # busy until the first progress event
        self.progress.setFormat("starting\u2026")
        self.label.setText(f"running {graph_file.name}")
        self._append(f"$ nodetrainer run {graph_file} --events jsonl --runs-dir {runs_dir}")
        self._set_running(True)
        self.process.start(graph_file, runs_dir)

    def send(self, command: str) -> None:
        if self.process.send(command):
            self._append(f"> {command}")

    def stop(self) -> None:
        if self.running:
            self._append("> stop (the run ends after its current step)")
            self.process.stop()

    # -- events --------------------------------------------------------------------
    def _append(self, text: str) -> None:
        self.log.appendPlainText(text)

    def _on_output(self, text: str) -> None:
        self._append(text)

    def _on_event(self, event: dict) -> None:
        changed = self.state.feed(event)
        line = log_line(event)
        if line:
            self._append(line)
        if "nodes" in changed:
            self.node_states_changed.emit(dict(self.state.node_states))
        if "progress" in changed:
            self._show_progress()
        if "loss" in changed and not self._chart_timer.isActive():
            self._chart_timer.start()
        if "samples" in changed:
            self.gallery.add_sample(self.state.samples[-1])
        if "error" in changed and self.state.error:
            err = self.state.error
            if err.get("traceback"):
                self._append(err["traceback"].rstrip())
            if err.get("node"):
                self.node_failed.emit(err["node"], err["message"])
        self.event_received.emit(event)

    def _show_progress(self) -> None:
        s = self.state
        if s.total:
            self.progress.setRange(0, int(s.total))
            self.progress.setValue(int(s.step or 0))
            self.progress.setFormat("%v/%m  %p%")
        self.label.setText(s.progress_text())

    def _on_finished(self, code: int) -> None:
        self.state.finish_process(code)
        self.chart.set_data(self.state.losses, self.state.smoothed)
        status = self.state.status
        self.progress.setRange(0, 1)
        self.progress.setValue(1 if status == "ok" else 0)
        self.progress.setFormat(FINISHED_TEXT.get(status, status))
        text = FINISHED_TEXT.get(status, status)
        if self.state.seconds is not None:
            text += f" in {self.state.seconds:.1f} s"
        if self.state.error:
            text += f" \u2014 {self.state.error['message']}"
        if self.state.workspace:
            text += f"  \u00b7  {self.state.workspace}"
        self.label.setText(text)
        self._append(f"process exited with code {code}")
        self._set_running(False)
        for path in self.cleanup:
            try:
                path.unlink()
            except OSError:
                pass
        self.cleanup = []
        self.node_states_changed.emit(dict(self.state.node_states))
        self.finished.emit(status)
