"""Run events: one dict per event, fanned out to sinks (JSON lines, console, log file).

Kinds: ``run_started``, ``node_started``, ``node_finished``, ``progress``,
``log``, ``sample`` (image paths and prompt), ``saved`` (path, format),
``error`` (node, type, message, traceback), ``run_finished``.
Every event carries ``event`` (its kind) and ``t`` (Unix time).
"""

from __future__ import annotations

import json
import math
import threading
import time
from typing import IO, Any as _Any, Callable, Protocol

EVENT_KINDS = (
    "run_started",
    "node_started",
    "node_finished",
    "progress",
    "log",
    "sample",
    "saved",
    "error",
    "run_finished",
)


class EventSink(Protocol):
    def __call__(self, event: dict) -> None: ...


def safe_text(text: str) -> str:
    """``text`` encodable as UTF-8: a file name's undecodable bytes (Python's surrogate escapes)
    become ``\\xff``, any other lone surrogate ``\\udXXX``. Valid text comes back unchanged."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _clean(value: _Any) -> _Any:
    """JSON-safe: non-finite floats become null, text UTF-8-safe, unknown objects their text."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, dict):
        return {safe_text(str(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if value is None or isinstance(value, (int, bool)):
        return value
    return safe_text(str(value))


def to_json(event: dict) -> str:
    return json.dumps(_clean(event), ensure_ascii=False, allow_nan=False)


class EventBus:
    """Thread-safe fan-out of events to sinks."""

    def __init__(self, sinks: list[EventSink] | None = None):
        self.sinks: list[EventSink] = list(sinks or [])
        self._lock = threading.Lock()

    def add(self, sink: EventSink) -> None:
        self.sinks.append(sink)

    def emit(self, kind: str, **data: _Any) -> dict:
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        # text fields made UTF-8-safe here, so no sink (a console, a log file) fails on a file name
        event = {"event": kind, "t": round(time.time(), 3),
                 **{k: safe_text(v) if isinstance(v, str) else v for k, v in data.items()}}
        with self._lock:
            for sink in self.sinks:
                sink(event)
        return event


class JsonLinesSink:
    """Writes each event as one JSON line and flushes, so a reader sees it at once."""

    def __init__(self, stream: IO[str]):
        self.stream = stream

    def __call__(self, event: dict) -> None:
        try:
            self.stream.write(to_json(event) + "\n")
            self.stream.flush()
        except (BrokenPipeError, ValueError):
            pass  # the reader went away; the run goes on and the log file keeps the events


class ListSink:
    """Collects events in memory (tests, the editor's in-process helpers)."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def __call__(self, event: dict) -> None:
        self.events.append(event)

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["event"] == kind]


class CallbackSink:
    def __init__(self, fn: Callable[[dict], None]):
        self.fn = fn

    def __call__(self, event: dict) -> None:
        self.fn(event)
