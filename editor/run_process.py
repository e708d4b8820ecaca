"""A run as a child process: ``python -m runtime run GRAPH --events jsonl``.

The editor never runs nodes itself. Events arrive as JSON lines on the
child's stdout and are re-emitted as dicts; commands go to its stdin as JSON
lines. Everything is asynchronous (QProcess), so the window stays responsive.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from PySide6 import QtCore

from runtime.paths import ROOT

COMMANDS = ("stop", "sample", "save", "backup")


def run_command(graph_file: Path, runs_dir: Path, sets: list[str] = (), resume: str | None = None) -> list[str]:
    """The argument list after the Python executable (``resume``: a ``--resume`` value, e.g. ``last``)."""
    args = ["-m", "runtime", "run", str(graph_file), "--events", "jsonl", "--runs-dir", str(runs_dir)]
    for s in sets:
        args += ["--set", s]
    if resume:
        args += ["--resume", resume]
    return args


class RunProcess(QtCore.QObject):
    event = QtCore.Signal(dict)
    output = QtCore.Signal(str)  # stderr, and stdout lines that are not events
    finished = QtCore.Signal(int)  # exit code (-1 if it crashed)

    def __init__(self, parent: QtCore.QObject | None = None):
        super().__init__(parent)
        self.proc: QtCore.QProcess | None = None
        self._buffer = b""
        self._err_buffer = b""
        self._kill_timer = QtCore.QTimer(self)
        self._kill_timer.setSingleShot(True)
        self._kill_timer.timeout.connect(self._escalate)
        self._stop_stage = 0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.state() != QtCore.QProcess.ProcessState.NotRunning

    def start(self, graph_file: Path, runs_dir: Path, sets: list[str] = (), cwd: Path | None = None,
              resume: str | None = None) -> None:
        if self.running:
            raise RuntimeError("a run is already going")
        self._buffer = self._err_buffer = b""
        self._stop_stage = 0
        proc = QtCore.QProcess(self)
        env = QtCore.QProcessEnvironment.systemEnvironment()
        path = env.value("PYTHONPATH", "")
        env.insert("PYTHONPATH", str(ROOT) + (os.pathsep + path if path else ""))
        env.insert("PYTHONUNBUFFERED", "1")
        proc.setProcessEnvironment(env)
        if cwd is not None:
            proc.setWorkingDirectory(str(cwd))
        proc.readyReadStandardOutput.connect(self._read_stdout)
        proc.readyReadStandardError.connect(self._read_stderr)
        proc.finished.connect(self._on_finished)
        proc.errorOccurred.connect(self._on_error)
        self.proc = proc
        proc.start(sys.executable, run_command(graph_file, runs_dir, list(sets), resume))

    def send(self, command: str) -> bool:
        """Send a command (stop, sample, save, backup) to the running graph."""
        if command not in COMMANDS:
            raise ValueError(f"unknown command {command!r}")
        if not self.running:
            return False
        self.proc.write((json.dumps({"command": command}) + "\n").encode())
        return True

    def stop(self, grace_ms: int = 15000) -> None:
        """Ask the run to stop after its current step; terminate, then kill, if it does not."""
        if not self.running:
            return
        self.send("stop")
        self._stop_stage = 1
        self._kill_timer.start(grace_ms)

    def _escalate(self) -> None:
        if not self.running:
            return
        if self._stop_stage == 1:
            self.proc.terminate()  # SIGTERM: the runtime stops gracefully
            self._stop_stage = 2
            self._kill_timer.start(5000)
        else:
            self.proc.kill()

    def _read_stdout(self) -> None:
        self._buffer += bytes(self.proc.readAllStandardOutput())
        *lines, self._buffer = self._buffer.split(b"\n")
        for raw in lines:
            self._line(raw)

    def _line(self, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace").strip()
        if not text:
            return
        try:
            event = json.loads(text)
        except json.JSONDecodeError:
            self.output.emit(text)
            return
        if isinstance(event, dict) and "event" in event:
            self.event.emit(event)
        else:
            self.output.emit(text)

    def _read_stderr(self) -> None:
        self._err_buffer += bytes(self.proc.readAllStandardError())
        *lines, self._err_buffer = self._err_buffer.split(b"\n")
        for raw in lines:
            text = raw.decode("utf-8", "replace").rstrip()
            if text:
                self.output.emit(text)

    def _on_finished(self, code: int, status) -> None:
        self._read_stdout()
        self._read_stderr()
        if self._buffer:
            self._line(self._buffer)
            self._buffer = b""
        if self._err_buffer.strip():
            self.output.emit(self._err_buffer.decode("utf-8", "replace").rstrip())
            self._err_buffer = b""
        self._kill_timer.stop()
        crashed = status == QtCore.QProcess.ExitStatus.CrashExit
        self.finished.emit(-1 if crashed else int(code))

    def _on_error(self, error) -> None:
        if error == QtCore.QProcess.ProcessError.FailedToStart:
            self.output.emit(f"could not start {sys.executable}: {self.proc.errorString()}")
            self.finished.emit(-1)
