"""Controlling a running graph: the cancellation flag, signals and stdin commands.

The first SIGINT or SIGTERM (or a ``stop`` command) asks the run to stop: nodes
poll ``ctx.cancelled`` and finish cleanly (the training loop ends its step and
writes a backup). A second signal aborts at once.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import queue
import signal
import threading
from typing import IO, Iterable, Iterator

from .errors import clip, shown
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


#: a command is a short JSON object; a longer line is skipped without being held whole
MAX_COMMAND_CHARS = 64 * 1024
CHUNK_BYTES = 64 * 1024


def parse_command(line: str | bytes) -> tuple[dict | None, str]:
    """A command dict from one JSON line, or (None, why not). Never raises, whatever the line."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError:
            return None, "ignored a command line that is not UTF-8 text"
    line = line.strip()
    if not line:
        return None, ""
    if len(line) > MAX_COMMAND_CHARS:
        return None, f"ignored a command line longer than {MAX_COMMAND_CHARS} characters"
    try:
        cmd = json.loads(line)
    except json.JSONDecodeError as e:
        return None, f"ignored a command line that is not JSON: {e.msg}"
    except RecursionError:
        return None, "ignored a command line nested too deeply"
    except ValueError as e:  # e.g. a number beyond the interpreter's digit limit
        return None, f"ignored a command line that is not valid JSON: {clip(str(e), 200)}"
    if not isinstance(cmd, dict) or not isinstance(cmd.get("command"), str):
        return None, 'ignored a command without a "command" field'
    if cmd["command"] not in COMMANDS:
        return None, f"ignored unknown command {shown(cmd['command'])} (known: {', '.join(COMMANDS)})"
    return cmd, ""


def read_lines(chunks: Iterable[str | bytes], limit: int = MAX_COMMAND_CHARS) -> Iterator[str | bytes | None]:
    """Split a stream's chunks (text or bytes) into lines of at most ``limit`` characters.

    A longer line is dropped as it streams past, never held whole; it yields ``None``.
    """
    pending = None  # the current line so far
    dropping = False  # the current line is too long: skip to its newline
    for data in chunks:
        nl = "\n" if isinstance(data, str) else b"\n"
        if pending is None:
            pending = data[:0]
        start = 0
        while start < len(data):
            end = data.find(nl, start)
            stop = len(data) if end < 0 else end + 1
            piece, start = data[start:stop], stop
            if not dropping and len(pending) + len(piece) - (end >= 0) > limit:
                dropping, pending = True, pending[:0]
            if end < 0:
                if not dropping:
                    pending += piece
                break
            yield None if dropping else pending + piece
            dropping, pending = False, pending[:0]
    if dropping:
        yield None
    elif pending:
        yield pending


def _chunks(stream: IO) -> Iterator[str | bytes]:
    """What arrives on ``stream``. A real file descriptor (``sys.stdin``) is read with ``os.read``:
    as bytes, so invalid UTF-8 is one bad line rather than a decoding error that ends the reader,
    and without holding the buffered reader's lock, which a daemon thread blocked at exit would
    keep from the interpreter's shutdown."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.StringIO and friends have none
        fd = None
    if fd is not None:
        while data := os.read(fd, CHUNK_BYTES):
            yield data
        return
    buffer = getattr(stream, "buffer", None)
    source = buffer if isinstance(buffer, (io.RawIOBase, io.BufferedIOBase)) else stream
    while data := source.readline(MAX_COMMAND_CHARS + 1):
        yield data


def start_command_reader(stream: IO, inbox: CommandInbox, bus: EventBus) -> threading.Thread:
    """Read JSON-line commands from ``stream`` in a daemon thread.

    A line that is not a command (too long, not UTF-8, not JSON, nested too deeply,
    unknown) is logged as a warning and the reader goes on, so a later ``stop`` still
    stops the run. The reader ends only at the end of the stream or when it cannot be read.
    """
    def loop() -> None:
        lines = read_lines(_chunks(stream))
        while True:
            try:
                line = next(lines)
            except StopIteration:
                return
            except Exception as e:  # a closed or broken stream: nothing more will come
                bus.emit("log", level="warning", message=f"stopped reading commands: {clip(str(e), 200)}")
                return
            try:
                _handle(line, inbox, bus)
            except Exception as e:  # a bad line must never end the reader
                bus.emit("log", level="warning", message=f"ignored a command line ({type(e).__name__})")

    thread = threading.Thread(target=loop, name="nodetrainer-commands", daemon=True)
    thread.start()
    return thread


def _handle(line: str | bytes | None, inbox: CommandInbox, bus: EventBus) -> None:
    if line is None:
        bus.emit("log", level="warning", message=f"ignored a command line longer than {MAX_COMMAND_CHARS} characters")
        return
    cmd, why = parse_command(line)
    if cmd is not None:
        inbox.put(cmd)
        bus.emit("log", level="info", message=f"command received: {cmd['command']}")
    elif why:
        bus.emit("log", level="warning", message=why)


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
