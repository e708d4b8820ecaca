"""Render the editor with a graph loaded (optionally after running it) to a PNG.

    python -m editor.screenshot                          # quickstart, run it, assets/screenshot.png
    python -m editor.screenshot graphs/x.yaml --no-run --out shot.png

Works without a display (Qt's offscreen platform) or under Xvfb.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from runtime.paths import ASSETS_DIR, GRAPHS_DIR


def default_graph() -> Path:
    quick = GRAPHS_DIR / "quickstart.yaml"
    return quick if quick.exists() else GRAPHS_DIR / "example-manifest.yaml"


def _wait(app, condition, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            return False
        app.processEvents()
        time.sleep(0.02)
    return True


def render(graph: Path, out: Path, run: bool = True, select: str | None = None,
           size: tuple[int, int] = (1920, 1080), timeout: float = 900.0) -> Path:
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6 import QtCore

    from runtime.fileio import atomic_path

    from .app import create_app
    from .main_window import MainWindow, is_small

    app = create_app()
    with tempfile.TemporaryDirectory(prefix="nodetrainer-shot-") as tmp:
        settings = QtCore.QSettings(str(Path(tmp) / "editor.ini"), QtCore.QSettings.Format.IniFormat)
        window = MainWindow(settings=settings, runs_dir=Path(tmp) / "runs")
        window.resize(*size)
        window.show()
        if not is_small(window.size()):  # a small window has its own layout, made for its canvas
            window.resizeDocks([window.run_dock], [330], QtCore.Qt.Orientation.Vertical)
        if not window.open_file(graph):
            raise SystemExit(f"cannot open {graph}")
        window.validator.validate_now()
        if run:
            finished: list[str] = []
            window.run_panel.finished.connect(finished.append)
            if window.run_graph():
                if not _wait(app, lambda: finished, timeout):
                    window.run_panel.stop()
                    _wait(app, lambda: finished, 30)
        nodes = list(window.doc.graph.nodes)
        target = select if select in window.doc.graph.nodes else _pick(window.doc)
        window.canvas.fit()
        window.canvas.select([target] if target else [], center=False)
        if nodes:
            window.canvas.viewer.zoom_to_nodes([n.view for n in window.canvas.views.values()])
        window.run_dock.raise_()
        _wait(app, lambda: False, 0.5)  # let layouts and paints settle
        image = window.grab()
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp_png:
            if not image.save(str(tmp_png), "PNG"):
                raise SystemExit(f"cannot write {out}")
        window.doc.undo.setClean()
        window.close()
    return out


def _pick(doc) -> str | None:
    """The node whose params make the best picture: the training loop, else the one with most params."""
    best, score = None, -1
    for nid, entry in doc.graph.nodes.items():
        spec = doc.registry.get(entry.type)
        n = (100 if spec and spec.type_id == "train.loop" else 0) + (len(spec.params) if spec else 0)
        if n > score:
            best, score = nid, n
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m editor.screenshot", description=__doc__.splitlines()[0])
    p.add_argument("graph", nargs="?", type=Path, default=None, help="graph to load (default: the quickstart)")
    p.add_argument("--out", type=Path, default=ASSETS_DIR / "screenshot.png")
    p.add_argument("--no-run", action="store_true", help="do not run the graph before the screenshot")
    p.add_argument("--select", help="node to select (its params fill the properties panel)")
    p.add_argument("--size", default="1920x1080", help="window size WxH")
    args = p.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    out = render(args.graph or default_graph(), args.out, run=not args.no_run, select=args.select, size=(w, h))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
