"""The run panel: start/stop/resume and commands, progress with ETA, loss chart, samples, log."""

from __future__ import annotations

from html import escape
from pathlib import Path

from PySide6 import QtCore, QtGui, QtWidgets

from runtime.errors import clip

from .run_process import CPU_PROCESSES, DeviceCount, RunProcess, run_command, shown_command
from .run_state import BUTTON_COMMANDS, RunState, command_tooltip, log_line
from .run_widgets import LogView, LossChart, SampleGallery

FINISHED_TEXT = {
    "ok": "finished",
    "failed": "failed",
    "cancelled": "stopped",
    "aborted": "aborted",
    "invalid": "not started: the graph is invalid (see the log)",
}
#: warnings named in the summary line under the status (all of them are in its tooltip)
SHOWN_WARNINGS = 3


class RunPanel(QtWidgets.QWidget):
    """Shows one run at a time; the window decides what file to run (``start``)."""

    run_requested = QtCore.Signal()
    resume_requested = QtCore.Signal()
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
        #: command -> nodes of the current run that act on it (None: not known, all enabled)
        self.commands: dict[str, list[str]] | None = None
        #: command -> node types that could act on it, for the disabled buttons' hints
        self.providers: dict[str, list[str]] = {}
        self.graph_name = ""

        self.run_button = QtWidgets.QPushButton("Run")
        self.run_button.setToolTip("Save (or snapshot) the graph and run it as a separate process")
        self.stop_button = QtWidgets.QPushButton("Stop")
        self.sample_button = QtWidgets.QPushButton("Sample now")
        self.save_button = QtWidgets.QPushButton("Save now")
        self.backup_button = QtWidgets.QPushButton("Backup now")
        self.resume_button = QtWidgets.QPushButton("Resume last")
        self.resume_button.setEnabled(False)
        self.resume_button.setToolTip("Continue a stopped run from its newest backup (no backup of this graph yet)")
        self.command_buttons = {"sample": self.sample_button, "save": self.save_button, "backup": self.backup_button}
        self.run_button.clicked.connect(self.run_requested)
        self.resume_button.clicked.connect(self.resume_requested)
        self.stop_button.clicked.connect(self.stop)
        self.sample_button.clicked.connect(lambda: self.send("sample"))
        self.save_button.clicked.connect(lambda: self.send("save"))
        self.backup_button.clicked.connect(lambda: self.send("backup"))
        self.processes = QtWidgets.QSpinBox()
        self.processes.setRange(1, CPU_PROCESSES)  # until the GPUs are counted (when the panel is first shown)
        self.processes.setValue(1)
        self.processes.setPrefix("GPUs ")
        self.processes.setToolTip("Processes to train on (counting this machine's GPUs\u2026)")
        self.progress = QtWidgets.QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setTextVisible(True)
        self.progress.setFormat("idle")
        self.title = QtWidgets.QLabel("")  # the graph whose run this is
        self.ranks_label = QtWidgets.QLabel("")  # "rank 0 of N" on several processes
        self.ranks_label.setStyleSheet("color: #8fb8e8")
        self.ranks_label.hide()
        self.label = QtWidgets.QLabel("")
        self.label.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.warnings_label = QtWidgets.QLabel("")
        self.warnings_label.setStyleSheet("color: #f0a500")
        self.warnings_label.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.warnings_label.hide()
        for label in (self.label, self.warnings_label):  # a long message must not widen the dock
            label.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred)

        bar = QtWidgets.QHBoxLayout()
        for b in (self.run_button, self.resume_button, self.stop_button, self.sample_button, self.save_button,
                  self.backup_button):
            bar.addWidget(b)
            if b is self.run_button:
                bar.addWidget(self.processes)
        bar.addWidget(self.progress, 1)
        status = QtWidgets.QHBoxLayout()
        status.addWidget(self.title)
        status.addWidget(self.ranks_label)
        status.addWidget(self.label, 1)

        self.chart = LossChart()
        self.gallery = SampleGallery()
        self.log = LogView(max_lines=5000)
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
        main.addLayout(status)
        main.addWidget(self.warnings_label)
        main.addWidget(split, 1)
        self._set_running(False)

        self._chart_timer = QtCore.QTimer(self)  # repaint the chart at most 10 times a second
        self._chart_timer.setSingleShot(True)
        self._chart_timer.setInterval(100)
        self._chart_timer.timeout.connect(lambda: self.chart.set_data(self.state.losses, self.state.smoothed))
        self.devices = DeviceCount.shared()
        self.devices.counted.connect(self._set_devices)
        if self.devices.value is not None:
            self._set_devices(self.devices.value)

    def showEvent(self, event: QtGui.QShowEvent) -> None:
        super().showEvent(event)
        self.devices.start()  # once per editor, in a child process: the editor does not import torch

    def _set_devices(self, gpus: int) -> None:
        """The GPUs are counted: one process per GPU, or up to ``CPU_PROCESSES`` on the CPU."""
        self.processes.setMaximum(gpus or CPU_PROCESSES)
        if gpus:
            self.processes.setPrefix("GPUs ")
            self.processes.setToolTip(f"GPUs to train on ({gpus} on this machine): one process per GPU; more "
                                      "than 1 starts the run through torchrun (DistributedDataParallel)")
        else:
            self.processes.setPrefix("processes ")
            self.processes.setToolTip(f"No CUDA GPU here: up to {CPU_PROCESSES} processes train on the CPU over "
                                      "gloo, through torchrun. Slow; for trying a several-GPU run out")

    @property
    def running(self) -> bool:
        return self.process.running

    def _set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.processes.setEnabled(not running)
        self.stop_button.setEnabled(running)
        if running:
            self.resume_button.setEnabled(False)
        for command, button in self.command_buttons.items():
            nodes = None if self.commands is None else self.commands.get(command, [])
            button.setEnabled(running and (nodes is None or bool(nodes)))
            button.setToolTip(command_tooltip(command, nodes if nodes is not None else ["the running graph"],
                                              self.providers.get(command, []), running))

    def set_resume(self, available: bool, tip: str) -> None:
        """Whether a backup of the shown graph exists to resume from (the window looks)."""
        self.resume_button.setEnabled(available and not self.running)
        self.resume_button.setToolTip(tip)

    def show_graph(self, name: str) -> None:
        """Another graph was opened: an idle panel forgets the last run; a running one says whose run it is."""
        if self.running:
            self.title.setText(f"<b>{escape(self.graph_name)}</b> (still running; now editing {escape(name)})")
            return
        self.graph_name = name
        self._clear()
        self.title.setText(f"<b>{escape(name)}</b>")
        self.label.setText("no run yet")

    def _clear(self) -> None:
        self.state = RunState()
        self.chart.set_data([], [])
        self.gallery.clear()
        self.log.clear()
        self.warnings_label.clear()
        self.warnings_label.hide()
        self._show_ranks(1)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("idle")

    def start(self, graph_file: Path, runs_dir: Path, cleanup: list[Path] = (),
              commands: dict[str, list[str]] | None = None, resume: str | None = None, name: str = "") -> None:
        """Run ``graph_file`` (``commands``: which nodes of the run act on each command button;
        ``resume``: a ``--resume`` value; ``name``: the graph's name for the title)."""
        self._clear()
        self.cleanup = list(cleanup)
        self.commands = {c: list(commands.get(c, [])) for c in BUTTON_COMMANDS} if commands is not None else None
        self.graph_name = name or graph_file.stem
        self.title.setText(f"<b>{escape(self.graph_name)}</b>")
        self.progress.setRange(0, 0)  # busy until the first progress event
        self.progress.setFormat("starting\u2026")
        self.label.setText(("resuming " if resume else "running ") + graph_file.name)
        n = self._process_count()
        self._show_ranks(n)
        self._append("$ " + shown_command(run_command(graph_file, runs_dir, resume=resume, processes=n)))
        self._set_running(True)
        if n > 1:
            self.process.start(graph_file, runs_dir, resume=resume, processes=n)
        else:
            self.process.start(graph_file, runs_dir, resume=resume)

    def _process_count(self) -> int:
        """The processes asked for, at most what the machine has (the GPUs may not have been counted yet)."""
        n = self.processes.value()
        if n > 1:
            limit = self.devices.wait() or CPU_PROCESSES
            if n > limit:
                self._append(f"only {limit} GPU(s) here: running on {limit} process(es)")
                n = limit
                self.processes.setValue(n)
        return n

    def _show_ranks(self, n: int) -> None:
        self.ranks_label.setVisible(n > 1)
        self.ranks_label.setText(f"\u00b7 rank 0 of {n}" if n > 1 else "")
        self.ranks_label.setToolTip(f"{n} processes (torchrun): the progress, loss, samples and log are rank 0's; "
                                    "ranks 1.. log to rank-N.log in the run folder" if n > 1 else "")

    def _ranks_finished(self, code: int, status: str) -> None:
        """Lines that explain the end of a torchrun run: where the other ranks logged, and torchrun's own
        failure report of a stopped run (its ranks exit with 130, which torchrun counts as failed)."""
        if status == "cancelled" and code not in (0, 130):
            self._append("(torchrun reports the stopped ranks' exit code 130 as a failure: the run was stopped)")
        if status != "ok" and self.state.workspace:
            self._append(f"the other ranks' logs: {self.state.workspace}/rank-N.log")

    def send(self, command: str) -> None:
        if self.process.send(command):
            self._append(f"> {command}")

    def stop(self) -> None:
        if self.running:
            self._append("> stop (the run ends after its current step)")
            self.process.stop()

    # -- events --------------------------------------------------------------------
    def _append(self, text: str) -> None:
        self.log.add_line(text)

    def _on_output(self, text: str) -> None:
        self._append(text)
        plain = text.strip().removeprefix("- ")
        if plain.lower().startswith("warning:"):  # the CLI's validation warnings, skipped backups
            self.state.add_warning(plain[len("warning:"):].strip())
            self._show_warnings()

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
        if "warnings" in changed:
            self._show_warnings()
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

    def _show_warnings(self) -> None:
        s = self.state
        if not s.warning_count:
            return
        shown = s.warnings[-SHOWN_WARNINGS:]
        more = s.warning_count - len(shown)
        firsts = [clip(w.splitlines()[0], 160) for w in shown if w]
        text = f"\u26a0 {s.warning_count} warning(s): " + "  \u00b7  ".join(firsts)
        if more > 0:
            text += f"  (+{more} more, in the tooltip and the log)"
        self.warnings_label.setText(text)
        self.warnings_label.setToolTip("\n".join(s.warnings))
        self.warnings_label.show()

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
        if self.state.warning_count:
            text += f" \u00b7 {self.state.warning_count} warning(s)"
        if self.state.workspace:
            text += f"  \u00b7  {self.state.workspace}"
        self.label.setText(text)
        self._append(f"process exited with code {code}")
        if self.process.processes > 1:
            self._ranks_finished(code, status)
        self._set_running(False)
        for path in self.cleanup:
            try:
                path.unlink()
            except OSError:
                pass
        self.cleanup = []
        self.node_states_changed.emit(dict(self.state.node_states))
        self.finished.emit(status)
