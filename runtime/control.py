"""Controlling a running graph: the cancellation flag, signals and stdin commands.

The first SIGINT or SIGTERM (or a ``stop`` command) asks the run to stop: nodes
poll ``ctx.cancelled`` and finish cleanly (the training loop ends its step and
writes a backup). A second signal aborts at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import threading
from typing import IO, Iterator

from .events import EventBus

#: commands a running graph understands; nodes read them through ``ctx.commands()``
COMMANDS = ("stop", "sample", "save", "backup")


class CancelToken:
    """A thread-safe 'please stop' flag with the reason it was raised."""

    def __init__(self) -> None:
        self._flag = threading.Event()
        self.reason = ""

    def request(self, reason: str = "stop requested") -> None:
        if not self._flag.is_set():
            self.reason = reason
        self._flag.set()

    @property
    def requested(self) -> bool:
        return self._flag.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._flag.wait(timeout)


class CommandInbox:
    """Commands waiting for the running node. ``stop`` also raises the cancel flag,
    so a node that never polls commands still stops at its next cancel check."""

    def __init__(self, cancel: CancelToken):
        self.cancel = cancel
        self._queue: queue.Queue[dict] = queue.Queue()

    def put(self, command: dict) -> None:
        self._queue.put(command)
        if command.get("command") == "stop":
            self.cancel.request("stop command")

    def drain(self) -> list[dict]:
        out = []
        while True:
            try:
                out.append(self._queue.get_nowait())
            except queue.Empty:
                return out


def parse_command(line: str) -> tuple[dict | None, str]:
    """A command dict from one JSON line, or (None, why not)."""
    line = line.strip()
    if not line:
        return None, ""
    try:
        cmd = json.loads(line)
    except json.JSONDecodeError as e:
        return None, f"ignored a command line that is not JSON: {e.msg}"
    if not isinstance(cmd, dict) or not isinstance(cmd.get("command"), str):
        return None, 'ignored a command without a "command" field'
    if cmd["command"] not in COMMANDS:
        return None, f"ignored unknown command {cmd['command']!r} (known: {', '.join(COMMANDS)})"
    return cmd, ""


def start_command_reader(stream: IO[str], inbox: CommandInbox, bus: EventBus) -> threading.Thread:
    """Read JSON-line commands from ``stream`` in a daemon thread."""

    def loop() -> None:
        for line in stream:
            cmd, why = parse_command(line)
            if cmd is not None:
                inbox.put(cmd)
                bus.emit("log", level="info", message=f"command received: {cmd['command']}")
            elif why:
                bus.emit("log", level="warning", message=why)

    thread = threading.Thread(target=loop, name="nodetrainer-commands", daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def signal_handlers(cancel: CancelToken) -> Iterator[None]:
    """SIGINT/SIGTERM: the first requests a graceful stop, the second raises KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    count = 0

    def handler(signum, frame):
        nonlocal count
        count += 1
        name = signal.Signals(signum).name
        if count == 1:
            cancel.request(f"{name} received")
            # os.write is safe inside a signal handler; the event bus may hold its lock
            with contextlib.suppress(OSError):
                os.write(2, f"\n{name}: stopping after the current step (again to abort)\n".encode())
        else:
            raise KeyboardInterrupt(name)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
