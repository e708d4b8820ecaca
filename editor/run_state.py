"""What the editor knows about a run, built from its event stream (no Qt)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from runtime.errors import clip

#: keys a progress event may use for an already smoothed loss
SMOOTHED_KEYS = ("smooth_loss", "loss_smooth", "smoothed_loss", "loss_ema", "avg_loss")


#: warnings kept for the panel's summary (a run that warns on every step must not grow without limit)
MAX_WARNINGS = 200
#: what the editor can send a running graph besides ``stop`` (which every run obeys)
BUTTON_COMMANDS = ("sample", "save", "backup")


@dataclass
class Sample:
    """One ``sample`` event: a prompt's images at a training step (``step``: the training step)."""

    paths: list[str]
    prompt: str
    node: str
    step: int | None = None
    seeds: list[int] = field(default_factory=list)
    tag: str = ""

    @classmethod
    def from_event(cls, event: dict) -> Sample:
        seeds = event.get("seeds")
        if not isinstance(seeds, list):
            seeds = [event["seed"]] if isinstance(event.get("seed"), int) else []
        step = event.get("step")
        return cls(list(event.get("paths") or []), str(event.get("prompt", "")), str(event.get("node", "")),
                   step if isinstance(step, int) and not isinstance(step, bool) else None,
                   [s for s in seeds if isinstance(s, int)], str(event.get("tag") or ""))


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
    warnings: list[str] = field(default_factory=list)
    warning_count: int = 0
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
            self.samples.append(Sample.from_event(event))
            changed.add("samples")
        elif kind == "log" and event.get("level") in ("warning", "error"):
            self.add_warning(log_line(event, stamp=False) or "")
            changed.add("warnings")
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

    def add_warning(self, text: str) -> None:
        """Count a warning; the first ``MAX_WARNINGS`` are kept for the summary."""
        self.warning_count += 1
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(clip(text, 500))

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


def log_line(event: dict, stamp: bool = True) -> str | None:
    """A human line for the log view (``stamp``: starting with the time), or None for events shown
    elsewhere only."""
    kind = event.get("event")
    stamp = time.strftime("%H:%M:%S ", time.localtime(event.get("t", time.time()))) if stamp else ""
    node = f"[{event['node']}] " if event.get("node") else ""
    if kind == "log":
        level = event.get("level", "info")
        tag = "" if level == "info" else f"{level.upper()}: "
        return f"{stamp}{node}{tag}{event.get('message', '')}"
    if kind == "run_started":
        return f"{stamp}run started in {event.get('workspace', '')} ({len(event.get('nodes', []))} nodes)"
    if kind == "node_started":
        return f"{stamp}{node}started ({event.get('type', '')})"
    if kind == "node_finished":
        return f"{stamp}{node}{event.get('status', 'ok')} in {event.get('seconds', 0)} s"
    if kind == "saved":
        return f"{stamp}{node}saved {event.get('format', '')}: {event.get('path', '')}"
    if kind == "sample":
        return f"{stamp}{node}sample: {len(event.get('paths') or [])} image(s) {event.get('prompt', '')!r}"
    if kind == "error":
        return f"{stamp}{node}ERROR: {event.get('message', '')}"
    if kind == "run_finished":
        return f"{stamp}run finished: {event.get('status', '')} after {event.get('seconds', 0)} s"
    return None


def command_nodes(order: Iterable[str], spec_of: Callable[[str], object | None]) -> dict[str, list[str]]:
    """Run command -> ids of the nodes of the run (``order``: the validated plan, so a hook whose output
    goes nowhere is not counted) whose spec acts on it (``spec.commands``)."""
    found: dict[str, list[str]] = {c: [] for c in BUTTON_COMMANDS}
    for node_id in order:
        spec = spec_of(node_id)
        for command in getattr(spec, "commands", ()) or ():
            if command in found:
                found[command].append(node_id)
    return found


def command_tooltip(command: str, nodes: list[str], providers: list[str], running: bool) -> str:
    """Why a command button is enabled or not. ``nodes``: the run's nodes that act on ``command``;
    ``providers``: the node types that could (for the hint)."""
    does = {"sample": "make preview images now", "save": "save the model now",
            "backup": "write a backup now (resume it with Resume last)"}.get(command, command)
    if not running:
        return f"{command.capitalize()} now: {does}, while a run is going (no run is going)"
    if nodes:
        return f"{command.capitalize()} now: {does}, at the end of the current step ({', '.join(nodes)})"
    hint = f" (add {' or '.join(providers)}, connected into the run)" if providers else ""
    return f"Disabled: no node in this run acts on '{command}'{hint}"
