"""What the editor knows about a run, built from its event stream (no Qt)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

#: keys a progress event may use for an already smoothed loss
SMOOTHED_KEYS = ("smooth_loss", "loss_smooth", "smoothed_loss", "loss_ema", "avg_loss")


@dataclass
class Sample:
    paths: list[str]
    prompt: str
    node: str
    step: int | None = None


@dataclass
class RunState:
    """Fed one event at a time by ``feed``; the panels read it."""

    smoothing: float = 0.9
    status: str = "idle"  # idle, running, ok, failed, cancelled, aborted, invalid
    workspace: str = ""
    node_states: dict[str, str] = field(default_factory=dict)
    current_node: str | None = None
    progress_node: str | None = None
    step: int | None = None
    total: int | None = None
    eta: float | None = None
    rate: float | None = None
    metrics: dict = field(default_factory=dict)
    losses: list[tuple[int, float]] = field(default_factory=list)
    smoothed: list[tuple[int, float]] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    saved: list[tuple[str, str]] = field(default_factory=list)
    error: dict | None = None
    seconds: float | None = None
    events: int = 0
    _ema: float = 0.0
    _ema_n: int = 0

    def feed(self, event: dict) -> set[str]:
        """Take one event; returns what changed: nodes, progress, loss, samples, saved, error, status."""
        self.events += 1
        kind = event.get("event")
        changed: set[str] = set()
        if kind == "run_started":
            self.status = "running"
            self.workspace = str(event.get("workspace", ""))
            self.node_states = {n: "pending" for n in event.get("nodes", [])}
            changed |= {"nodes", "status"}
        elif kind == "node_started":
            node = event.get("node")
            self.node_states[node] = "running"
            self.current_node = node
            changed.add("nodes")
        elif kind == "node_finished":
            status = event.get("status", "ok")
            self.node_states[event.get("node")] = "done" if status == "ok" else status
            changed.add("nodes")
        elif kind == "progress":
            self._progress(event)
            changed.add("progress")
            if isinstance(event.get("loss"), (int, float)):
                changed.add("loss")
        elif kind == "sample":
            self.samples.append(Sample(list(event.get("paths") or []), str(event.get("prompt", "")),
                                       str(event.get("node", "")), event.get("step")))
            changed.add("samples")
        elif kind == "saved":
            self.saved.append((str(event.get("path", "")), str(event.get("format", ""))))
            changed.add("saved")
        elif kind == "error":
            self.error = {"node": event.get("node"), "type": event.get("type"),
                          "message": str(event.get("message", "")), "traceback": str(event.get("traceback", ""))}
            if event.get("node"):
                self.node_states[event["node"]] = "failed"
            changed |= {"error", "nodes"}
        elif kind == "run_finished":
            self.status = str(event.get("status", "ok"))
            self.seconds = event.get("seconds")
            changed.add("status")
        return changed

    def _progress(self, event: dict) -> None:
        self.progress_node = event.get("node")
        self.step = event.get("step")
        self.total = event.get("total")
        self.eta = event.get("eta")
        self.rate = event.get("rate")
        self.metrics = {k: v for k, v in event.items()
                        if k not in ("event", "t", "node", "step", "total", "eta", "rate")}
        loss = event.get("loss")
        if isinstance(loss, (int, float)) and not isinstance(loss, bool):
            step = int(self.step) if isinstance(self.step, (int, float)) else len(self.losses)
            self.losses.append((step, float(loss)))
            given = next((event[k] for k in SMOOTHED_KEYS if isinstance(event.get(k), (int, float))), None)
            self._ema = self.smoothing * self._ema + (1 - self.smoothing) * float(loss)
            self._ema_n += 1
            debiased = self._ema / (1 - self.smoothing ** self._ema_n)
            self.smoothed.append((step, float(given) if given is not None else debiased))

    def finish_process(self, exit_code: int) -> None:
        """The process ended; fill in a status if no run_finished event came (e.g. an invalid graph)."""
        if self.status in ("idle", "running"):
            self.status = {0: "ok", 2: "invalid", 130: "cancelled"}.get(exit_code, "failed")
        if self.status != "ok":
            for node, state in list(self.node_states.items()):
                if state == "running":
                    self.node_states[node] = "cancelled"
                elif state == "pending":  # never ran: no longer waiting for anything
                    del self.node_states[node]

    def progress_text(self) -> str:
        parts = []
        if self.step is not None:
            parts.append(f"step {self.step}" + (f"/{self.total}" if self.total else ""))
        if self.rate:
            parts.append(f"{self.rate:.2f} it/s")
        if self.eta is not None:
            parts.append(f"ETA {format_duration(self.eta)}")
        for k in ("epoch", "loss", "lr"):
            v = self.metrics.get(k)
            if isinstance(v, float):
                parts.append(f"{k} {v:.4g}")
            elif v is not None:
                parts.append(f"{k} {v}")
        if self.progress_node:
            parts.append(f"[{self.progress_node}]")
        return " \u00b7 ".join(parts)


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def log_line(event: dict) -> str | None:
    """A human line for the log view, or None for events shown elsewhere only."""
    kind = event.get("event")
    stamp = time.strftime("%H:%M:%S", time.localtime(event.get("t", time.time())))
    node = f"[{event['node']}] " if event.get("node") else ""
    if kind == "log":
        level = event.get("level", "info")
        tag = "" if level == "info" else f"{level.upper()}: "
        return f"{stamp} {node}{tag}{event.get('message', '')}"
    if kind == "run_started":
        return f"{stamp} run started in {event.get('workspace', '')} ({len(event.get('nodes', []))} nodes)"
    if kind == "node_started":
        return f"{stamp} {node}started ({event.get('type', '')})"
    if kind == "node_finished":
        return f"{stamp} {node}{event.get('status', 'ok')} in {event.get('seconds', 0)} s"
    if kind == "saved":
        return f"{stamp} {node}saved {event.get('format', '')}: {event.get('path', '')}"
    if kind == "sample":
        return f"{stamp} {node}sample: {len(event.get('paths') or [])} image(s) {event.get('prompt', '')!r}"
    if kind == "error":
        return f"{stamp} {node}ERROR: {event.get('message', '')}"
    if kind == "run_finished":
        return f"{stamp} run finished: {event.get('status', '')} after {event.get('seconds', 0)} s"
    return None
