"""A run as a child process: ``python -m runtime run GRAPH --events jsonl``.

The editor never runs nodes itself. Events arrive as JSON lines on the
child's stdout and are re-emitted as dicts; commands go to its stdin as JSON
lines. Everything is asynchronous (QProcess), so the window stays responsive.

On several processes the child is torchrun (``python -m torch.distributed.run``), which starts one
``runtime run`` per rank. ``--local-ranks-filter 0`` passes rank 0's stdout and stderr through
unchanged (the events and the commands' stdin are rank 0's) and discards the other ranks' console
(they log to ``rank-N.log`` in the run folder). torchrun forwards SIGTERM to every rank and kills what
is left after ``--shutdown-timeout``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from PySide6 import QtCore

from runtime.paths import ROOT

COMMANDS = ("stop", "sample", "save", "backup")
#: processes a machine without CUDA may start (they train on the CPU over gloo)
CPU_PROCESSES = 4
#: seconds torchrun gives its ranks after forwarding SIGTERM before it kills them (one process: ours)
SHUTDOWN_S = 5


def run_command(graph_file: Path, runs_dir: Path, sets: list[str] = (), resume: str | None = None,
                processes: int = 1) -> list[str]:
    """The argument list after the Python executable (``resume``: a ``--resume`` value, e.g. ``last``;
    ``processes`` > 1: through torchrun, one rank per process)."""
    args = ["-m", "runtime", "run", str(graph_file), "--events", "jsonl", "--runs-dir", str(runs_dir)]
    for s in sets:
        args += ["--set", s]
    if resume:
        args += ["--resume", resume]
    if processes > 1:
        return torchrun_args(processes) + args
    return args


def torchrun_args(processes: int) -> list[str]:
    """torchrun on this machine with ``processes`` ranks, rank 0's console only (followed by ``-m ...``)."""
    return ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
            "--local-ranks-filter", "0", "--shutdown-timeout", str(SHUTDOWN_S)]


def shown_command(args: list[str]) -> str:
    """The command line as the log shows it: ``nodetrainer run ...`` or ``torchrun ... -m runtime run ...``."""
    if args[:2] == ["-m", "torch.distributed.run"]:
        return "torchrun " + " ".join(args[2:])
    return "nodetrainer " + " ".join(args[2:]) if args[:3] == ["-m", "runtime", "run"] else " ".join(args)


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc; empty elsewhere)."""
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read(4096)
        except OSError:
            continue
        fields = stat.rpartition(b")")[2].split()  # after the command name, which may hold spaces
        if len(fields) > 1 and fields[1] == str(pid).encode():
            found.append(int(name))
    return found


class DeviceCount(QtCore.QObject):
    """How many CUDA devices torch reports, counted once per editor by a child process (the editor does
    not import torch; the count takes a few seconds), waited for in a daemon thread so that neither the
    window nor the editor's exit waits on it. ``value``: None until counted; 0 when torch has no CUDA
    or the count failed."""

    counted = QtCore.Signal(int)
    _arrived = QtCore.Signal()  # from the thread; queued to the object's (the main) thread
    _shared: DeviceCount | None = None

    def __init__(self):
        super().__init__()
        self.value: int | None = None
        self.thread: threading.Thread | None = None
        self._result: int | None = None
        self._arrived.connect(self._deliver)

    @classmethod
    def shared(cls) -> DeviceCount:
        if cls._shared is None:
            cls._shared = cls()
        return cls._shared

    def start(self) -> None:
        """Start counting (once; a later call does nothing)."""
        if self.value is not None or self.thread is not None:
            return
        self.thread = threading.Thread(target=self._count, name="nodetrainer-gpu-count", daemon=True)
        self.thread.start()

    def wait(self, seconds: float = 60.0) -> int:
        """The count, waiting for it (at most ``seconds``; 0 if it does not come)."""
        self.start()
        if self.value is None:
            self.thread.join(seconds)
            self._deliver()
        return self.value or 0

    def limit(self) -> int:
        """The most processes a run may have: one per GPU, else ``CPU_PROCESSES`` on the CPU."""
        return self.value if self.value else CPU_PROCESSES

    def _count(self) -> None:
        try:
            done = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
                                  capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
            text = done.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            text = ""
        self._result = int(text) if text.isdigit() else 0
        try:
            self._arrived.emit()
        except RuntimeError:  # the editor is closing: nobody to tell
            pass

    def _deliver(self) -> None:
        if self.value is None:
            self.value = self._result or 0
            self.counted.emit(self.value)


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
        self.processes = 1
        self.arguments: list[str] = []  # of the last start, after the Python executable

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.state() != QtCore.QProcess.ProcessState.NotRunning

    def start(self, graph_file: Path, runs_dir: Path, sets: list[str] = (), cwd: Path | None = None,
              resume: str | None = None, processes: int = 1) -> None:
        """Start the run (``processes`` > 1: through torchrun, one rank per process)."""
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
        self.processes = processes
        self.arguments = run_command(graph_file, runs_dir, list(sets), resume, processes)
        proc.start(sys.executable, self.arguments)

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
            self.proc.terminate()  # SIGTERM: the runtime stops gracefully (torchrun forwards it to each rank)
            self._stop_stage = 2
            self._kill_timer.start(SHUTDOWN_S * 1000 + (2000 if self.processes > 1 else 0))
        else:
            if self.processes > 1:  # torchrun did not end its ranks: they are in sessions of their own
                for pid in child_pids(int(self.proc.processId())):
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except OSError:
                        pass
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
