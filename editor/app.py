"""Starting the editor: the QApplication, the main window, an optional graph to open."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

APP_NAME = "nodetrainer"


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
