"""The stdin command reader survives any line, reports it as a bad command, and still obeys a later stop."""

import io
import json
import subprocess
import sys
import textwrap

import pytest

from runtime.control import CancelToken, CommandInbox, start_command_reader
from runtime.events import EventBus, ListSink
from tests.conftest import ROOT, parse_events, subprocess_env

from .test_cli import WAIT, _wait_for_progress

STOP = b'{"command": "stop"}\n'
HOSTILE_LINES = [
    b"[" * 200_000 + b"]" * 200_000,  # the line from the report: 200,000 levels deep
    b"[" * 20_000 + b"]" * 20_000,  # short enough to parse: json raises RecursionError
    b'{"command": "stop", "n": ' + b"9" * 5000 + b"}",  # beyond the int-string limit: ValueError
    b"\xff\xfe not utf-8",
    b"42",
    b'"stop"',
    b"x" * 3_000_000,
]


def run_reader(stream, timeout=30):
    """Start the reader on ``stream``; return (cancel requested, warning messages, reader still alive)."""
    sink = ListSink()
    cancel = CancelToken()
    thread = start_command_reader(stream, CommandInbox(cancel), EventBus([sink]))
    stopped = cancel.wait(timeout)
    thread.join(timeout)
    warnings = [e["message"] for e in sink.of("log") if e["level"] == "warning"]
    return stopped, warnings, thread.is_alive()


@pytest.mark.parametrize("wrap", [io.BytesIO, lambda b: io.TextIOWrapper(io.BytesIO(b), encoding="utf-8"),
                                  lambda b: io.StringIO(b.decode("utf-8", "replace"))],
                         ids=["bytes", "text-over-bytes", "text"])
def test_every_hostile_line_is_a_warning_and_a_later_stop_still_stops(wrap):
    stopped, warnings, _ = run_reader(wrap(b"\n".join(HOSTILE_LINES) + b"\n" + STOP))
    assert stopped, warnings
    assert len(warnings) == len(HOSTILE_LINES), warnings
    assert sum("longer than" in w for w in warnings) == 2
    assert any("nested too deeply" in w for w in warnings)
    assert all(len(w) < 300 for w in warnings)


class EndlessLine(io.RawIOBase):
    """A stream without a file descriptor that sends ``size`` bytes without a newline, then a stop."""

    def __init__(self, size: int):
        self.left = size
        self.tail = b"\n" + STOP

    def readable(self):
        return True

    def readinto(self, buffer):
        if self.left:
            n = min(len(buffer), self.left)
            buffer[:n] = b"x" * n
            self.left -= n
            return n
        n = min(len(buffer), len(self.tail))
        buffer[:n], self.tail = self.tail[:n], self.tail[n:]
        return n


def test_a_line_without_end_is_skipped_in_bounded_pieces():
    stream = io.BufferedReader(EndlessLine(50 * 2**20), buffer_size=2**16)
    stopped, warnings, _ = run_reader(stream)
    assert stopped and warnings == ["ignored a command line longer than 65536 characters"]


def test_a_huge_line_on_a_pipe_is_read_in_bounded_memory():
    """A process limited to 256 MB of address space reads a 400 MB line from its stdin, then obeys stop."""
    code = textwrap.dedent("""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (256 << 20, 256 << 20))
        from runtime.control import CancelToken, CommandInbox, start_command_reader
        from runtime.events import EventBus, ListSink
        sink, cancel = ListSink(), CancelToken()
        start_command_reader(sys.stdin, CommandInbox(cancel), EventBus([sink]))
        print(cancel.wait(60), [e["message"] for e in sink.of("log")], flush=True)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=subprocess_env(), cwd=ROOT)

    try:
        chunk = b"x" * 2**20
        for _ in range(400):
            p.stdin.write(chunk)
        p.stdin.write(b"\n" + STOP)
        p.stdin.flush()
    except BrokenPipeError:  # the reader died and the child ended: its output tells
        pass
    out, err = p.communicate(timeout=180)
    assert p.returncode == 0, err[-2000:]
    assert out.decode().startswith("True") and "longer than" in out.decode() and "command received: stop" in out.decode()


def test_the_cli_reader_survives_hostile_lines_and_stops_the_run(write_graph, tmp_path):
    ws = tmp_path / "ws"
    p = subprocess.Popen([sys.executable, "-m", "runtime", "run", str(write_graph(WAIT % "true")), "--workspace",
                          str(ws), "--events", "jsonl"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=subprocess_env(), cwd=ROOT)
    _wait_for_progress(ws)
    p.stdin.write(b"\n".join(HOSTILE_LINES[:4]) + b"\n")
    p.stdin.flush()
    p.stdin.write(STOP)
    p.stdin.flush()
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err.decode()[-2000:]
    record = json.loads((ws / "commands.json").read_text())
    assert record["commands"] == ["stop"] and record["cancelled"]
    events = parse_events(out.decode())
    warnings = [e["message"] for e in events if e["event"] == "log" and e["level"] == "warning"]
    assert len(warnings) == 4 and any("not UTF-8" in w for w in warnings), warnings
