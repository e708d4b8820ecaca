"""Starting the editor: the QApplication, the main window, an optional graph to open."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

APP_NAME = "nodetrainer"

#: Qt platform plugins that draw to a window system: each needs its display variable
_WINDOWED = {"xcb": ("DISPLAY",), "wayland": ("WAYLAND_DISPLAY",), "wayland-egl": ("WAYLAND_DISPLAY",)}
NO_DISPLAY = ("nodetrainer edit: no display found (DISPLAY and WAYLAND_DISPLAY are not set); "
              "run it under Xvfb with 'xvfb-run nodetrainer edit ...' "
              "or without a window with QT_QPA_PLATFORM=offscreen")


def display_problem(environ=None, platform: str | None = None) -> str | None:
    """Why Qt would find no display here (it aborts the process then), or None.

    Only Linux-like systems need a display variable; a ``QT_QPA_PLATFORM`` naming a plugin
    that draws without one (offscreen, minimal, vnc, eglfs, linuxfb, ...) is trusted.
    """
    environ = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    if platform.startswith(("win", "darwin", "cygwin")):
        return None
    # QT_QPA_PLATFORM is a ';'-separated list of fallbacks, each 'name:options'
    wanted = [p.split(":", 1)[0].strip() for p in environ.get("QT_QPA_PLATFORM", "").split(";")]
    wanted = [p for p in wanted if p] or list(_WINDOWED)
    for name in wanted:
        needs = _WINDOWED.get(name)
        if needs is None or any(environ.get(var) for var in needs):
            return None
    return NO_DISPLAY


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nodetrainer edit", description="Open the desktop graph editor.")
    p.add_argument("graph", nargs="?", type=Path, help="graph file to open")
    p.add_argument("--runs-dir", type=Path, help="where runs started from the editor go (default: ./runs)")
    return p


def create_app(argv: list[str] | None = None):
    from PySide6 import QtWidgets

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(argv or [sys.argv[0]])
    app.setApplicationName(APP_NAME)
    app.setOrganizationName(APP_NAME)
    app.setStyle("Fusion")
    from .style import apply_dark_palette

    apply_dark_palette(app)
    return app


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problem = display_problem()
    if problem:  # Qt would abort (SIGABRT) without saying how to fix it
        print(problem, file=sys.stderr)
        return 2
    app = create_app()
    from .main_window import MainWindow

    window = MainWindow(runs_dir=args.runs_dir.resolve() if args.runs_dir else None)
    window.show()
    if args.graph is not None:
        if not args.graph.exists():
            print(f"no such file: {args.graph}", file=sys.stderr)
        else:
            window.open_file(args.graph)
    return app.exec()
