"""Well-known folders of a nodetrainer checkout: shipped presets and assets."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GRAPHS_DIR = ROOT / "graphs"
ASSETS_DIR = ROOT / "assets"


def presets() -> list[Path]:
    """The shipped preset graphs, sorted by file name."""
    return sorted(GRAPHS_DIR.glob("*.yaml"))
