"""Colours of the canvas: categories, run states, badges."""

from __future__ import annotations

import hashlib

#: header colours of well-known categories; others get a stable colour from their name
CATEGORY_COLORS = {
    "model": "#b5543a",
    "models": "#b5543a",
    "loaders": "#b5543a",
    "data": "#2f8f6f",
    "dataset": "#2f8f6f",
    "setup": "#8a5bb5",
    "training": "#3a6fb5",
    "train": "#3a6fb5",
    "optimizer": "#3a6fb5",
    "sampling": "#b58a2f",
    "samplers": "#b58a2f",
    "hooks": "#5a7fa0",
    "saving": "#4f9a3a",
    "savers": "#4f9a3a",
    "output": "#4f9a3a",
    "utility": "#5f6b78",
}
_PALETTE = ["#b5543a", "#2f8f6f", "#8a5bb5", "#3a6fb5", "#b58a2f", "#4f9a3a", "#a0476f", "#3f8fa0", "#7a7f2f"]

BODY = (38, 41, 46, 255)
BORDER = (70, 74, 80, 255)
TEXT = (235, 235, 235, 255)
SUBTLE_TEXT = (150, 155, 160)
PLACEHOLDER = "#c0392b"
SELECTED_BORDER = (254, 207, 42)

STATE_COLORS = {
    "pending": "#8a8f96",
    "running": "#3daee9",
    "done": "#4caf50",
    "failed": "#e53935",
    "cancelled": "#ff9800",
}
ERROR_BADGE = "#e53935"
REFUSED = (229, 57, 53)  # a port that refuses the link being dragged, and that link
WARNING_BADGE = "#f0a500"


def category_color(category: str) -> str:
    key = category.strip().lower()
    if key in CATEGORY_COLORS:
        return CATEGORY_COLORS[key]
    digest = hashlib.sha1(key.encode()).digest()
    return _PALETTE[digest[0] % len(_PALETTE)]


def rgb(color: str) -> tuple[int, int, int]:
    """``#rrggbb`` -> (r, g, b)."""
    c = color.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def apply_dark_palette(app) -> None:
    """A dark Fusion palette that matches the canvas."""
    from PySide6 import QtGui

    P = QtGui.QPalette
    pal = P()
    colors = {
        P.ColorRole.Window: (45, 47, 51), P.ColorRole.WindowText: (225, 225, 225),
        P.ColorRole.Base: (32, 34, 37), P.ColorRole.AlternateBase: (40, 42, 46),
        P.ColorRole.ToolTipBase: (250, 250, 235), P.ColorRole.ToolTipText: (20, 20, 20),
        P.ColorRole.Text: (225, 225, 225), P.ColorRole.Button: (52, 55, 60),
        P.ColorRole.ButtonText: (225, 225, 225), P.ColorRole.BrightText: (255, 80, 80),
        P.ColorRole.Highlight: (61, 174, 233), P.ColorRole.HighlightedText: (15, 15, 15),
        P.ColorRole.Link: (100, 170, 240), P.ColorRole.PlaceholderText: (130, 133, 138),
    }
    for role, rgb_ in colors.items():
        pal.setColor(role, QtGui.QColor(*rgb_))
    for role in (P.ColorRole.Text, P.ColorRole.ButtonText, P.ColorRole.WindowText):
        pal.setColor(P.ColorGroup.Disabled, role, QtGui.QColor(120, 122, 126))
    app.setPalette(pal)
