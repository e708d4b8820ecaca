"""Human-readable run output: one line per node, a progress bar while a node reports progress."""

from __future__ import annotations

import sys
from typing import IO

SHOWN_METRICS = ("epoch", "loss", "smoothed_loss", "lr")


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-2 or abs(v) >= 1e4 else f"{v:.4f}".rstrip("0").rstrip(".")
    return str(v)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class ConsoleSink:
    """Renders events for a terminal (to stderr by default)."""

    def __init__(self, stream: IO[str] | None = None, debug: bool = False):
        self.stream = stream or sys.stderr
        #: print tracebacks; without it an error is one line (the traceback is in the event log)
        self.debug = debug
        self.bar = None
        self.bar_node: str | None = None
        self.total_nodes = 0
        self.failed = False

    def _write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
            self.bar_node = None

    def __call__(self, e: dict) -> None:
        kind = e["event"]
        handler = getattr(self, f"on_{kind}", None)
        if handler:
            handler(e)

    def on_run_started(self, e: dict) -> None:
        self.total_nodes = len(e.get("nodes", []))
        self._write(f"Running {e.get('graph') or 'graph'}: {self.total_nodes} node(s); workspace {e['workspace']}")

    def on_node_started(self, e: dict) -> None:
        self._close_bar()
        self._write(f"[{e['index'] + 1}/{e['total']}] {e['node']} ({e['type']})")

    def on_progress(self, e: dict) -> None:
        from tqdm import tqdm

        if self.bar is None or self.bar_node != e["node"]:
            self._close_bar()
            self.bar = tqdm(total=e.get("total"), file=self.stream, desc=f"  {e['node']}", leave=False,
                            dynamic_ncols=True, mininterval=0.2)
            self.bar_node = e["node"]
        if e.get("total") and self.bar.total != e["total"]:
            self.bar.total = e["total"]
        post = {k: _fmt(e[k]) for k in SHOWN_METRICS if e.get(k) is not None}
        if post:
            self.bar.set_postfix(post, refresh=False)
        self.bar.update(e["step"] - self.bar.n)  # tqdm redraws at most every mininterval

    def on_node_finished(self, e: dict) -> None:
        self._close_bar()
        mark = "done" if e.get("status") == "ok" else e.get("status", "")
        self._write(f"      {mark} in {_duration(e['seconds'])}")

    def on_log(self, e: dict) -> None:
        level = e.get("level", "info")
        prefix = "" if level == "info" else f"{level}: "
        where = f"{e['node']}: " if e.get("node") else ""
        self._write(f"  {prefix}{where}{e['message']}")

    def on_sample(self, e: dict) -> None:
        for p in e.get("paths", []):
            self._write(f"  sample: {p}")

    def on_saved(self, e: dict) -> None:
        self._write(f"  saved {e.get('format', '')}: {e['path']}")

    def on_error(self, e: dict) -> None:
        self._close_bar()
        self._write(f"ERROR {one_line(e['message'])}")
        if e.get("traceback") and self.debug:
            self._write(e["traceback"].rstrip())
        self.failed = True

    def on_run_finished(self, e: dict) -> None:
        self._close_bar()
        reason = f" ({e['reason']})" if e.get("reason") else ""
        self._write(f"Run {e['status']}{reason} in {_duration(e['seconds'])}; outputs in {e['workspace']}")
        if self.failed and not self.debug:
            self._write("  (the traceback is in events.jsonl in that folder; --debug prints it here)")


def one_line(text: str, limit: int = 1000) -> str:
    """A message on one line, bounded: a library's multi-line or huge error text stays readable."""
    from .errors import clip

    return clip(" ".join(str(text).split()), limit)
