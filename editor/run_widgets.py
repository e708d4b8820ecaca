"""The loss chart (raw and smoothed) and the live sample gallery."""

from __future__ import annotations

import math
from pathlib import Path

from PySide6 import QtCore, QtGui, QtWidgets

from .run_state import Sample


class LossChart(QtWidgets.QWidget):
    """Raw loss as a thin line, smoothed loss as a thick one, against the step."""

    RAW = QtGui.QColor(120, 170, 230, 110)
    SMOOTH = QtGui.QColor(255, 170, 60)

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.raw: list[tuple[int, float]] = []
        self.smooth: list[tuple[int, float]] = []
        self.setMinimumSize(220, 140)

    def set_data(self, raw: list[tuple[int, float]], smooth: list[tuple[int, float]]) -> None:
        self.raw, self.smooth = raw, smooth
        self.update()

    def bounds(self) -> tuple[float, float, float, float]:
        pts = [p for p in self.raw + self.smooth if math.isfinite(p[1])]
        xs = [p[0] for p in pts]
        ys = [p[1] for p in pts]
        x0, x1 = min(xs), max(xs)
        y0, y1 = min(ys), max(ys)
        if x1 == x0:
            x1 = x0 + 1
        if y1 == y0:
            y0, y1 = y0 - 0.5, y1 + 0.5
        pad = (y1 - y0) * 0.08
        return x0, x1, y0 - pad, y1 + pad

    def paintEvent(self, event) -> None:
        p = QtGui.QPainter(self)
        p.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing)
        p.fillRect(self.rect(), QtGui.QColor(28, 30, 34))
        plot = QtCore.QRectF(self.rect()).adjusted(48, 12, -12, -24)
        p.setPen(QtGui.QColor(80, 84, 90))
        p.drawRect(plot)
        p.setPen(QtGui.QColor(170, 170, 170))
        if not self.raw:
            p.drawText(plot, QtCore.Qt.AlignmentFlag.AlignCenter, "loss appears here while training")
            return
        x0, x1, y0, y1 = self.bounds()

        def to_px(x: float, y: float) -> QtCore.QPointF:
            return QtCore.QPointF(plot.left() + (x - x0) / (x1 - x0) * plot.width(),
                                  plot.bottom() - (y - y0) / (y1 - y0) * plot.height())

        font = p.font()
        font.setPointSizeF(7.5)
        p.setFont(font)
        for frac in (0.0, 0.5, 1.0):
            y = y0 + (y1 - y0) * frac
            pt = to_px(x0, y)
            p.setPen(QtGui.QColor(60, 64, 70))
            p.drawLine(QtCore.QPointF(plot.left(), pt.y()), QtCore.QPointF(plot.right(), pt.y()))
            p.setPen(QtGui.QColor(170, 170, 170))
            p.drawText(QtCore.QRectF(0, pt.y() - 8, 44, 16), QtCore.Qt.AlignmentFlag.AlignRight, f"{y:.3g}")
        p.drawText(QtCore.QRectF(plot.left(), plot.bottom() + 4, plot.width(), 16),
                   QtCore.Qt.AlignmentFlag.AlignLeft, f"step {int(x0)}")
        p.drawText(QtCore.QRectF(plot.left(), plot.bottom() + 4, plot.width(), 16),
                   QtCore.Qt.AlignmentFlag.AlignRight, f"{int(x1)}")
        for series, color, width in ((self.raw, self.RAW, 1.0), (self.smooth, self.SMOOTH, 2.2)):
            pts = [to_px(x, y) for x, y in series if math.isfinite(y)]
            if len(pts) == 1:
                p.setPen(QtGui.QPen(color, 4))
                p.drawPoint(pts[0])
            elif pts:
                p.setPen(QtGui.QPen(color, width))
                p.drawPolyline(QtGui.QPolygonF(pts))
        p.setPen(self.SMOOTH)
        p.drawText(QtCore.QRectF(plot.left() + 6, plot.top() + 2, plot.width() - 12, 16),
                   QtCore.Qt.AlignmentFlag.AlignRight, f"smoothed {self.smooth[-1][1]:.4g}")
        p.setPen(QtGui.QColor(140, 180, 230))
        p.drawText(QtCore.QRectF(plot.left() + 6, plot.top() + 16, plot.width() - 12, 16),
                   QtCore.Qt.AlignmentFlag.AlignRight, f"raw {self.raw[-1][1]:.4g}")


class SampleGallery(QtWidgets.QListWidget):
    """Sample images as they arrive, newest first; double-click opens the file."""

    MAX_ITEMS = 300

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.setViewMode(QtWidgets.QListView.ViewMode.IconMode)
        self.setIconSize(QtCore.QSize(128, 128))
        self.setResizeMode(QtWidgets.QListView.ResizeMode.Adjust)
        self.setMovement(QtWidgets.QListView.Movement.Static)
        self.setSpacing(4)
        self.setWordWrap(True)
        self.itemDoubleClicked.connect(self._open)

    def add_sample(self, sample: Sample) -> int:
        """Add a sample's images; returns how many could be read."""
        added = 0
        for path in sample.paths:
            pix = QtGui.QPixmap(path)
            if pix.isNull():
                continue
            icon = QtGui.QIcon(pix.scaled(self.iconSize(), QtCore.Qt.AspectRatioMode.KeepAspectRatio,
                                          QtCore.Qt.TransformationMode.SmoothTransformation))
            label = f"step {sample.step}" if sample.step is not None else Path(path).stem
            item = QtWidgets.QListWidgetItem(icon, label)
            item.setToolTip(f"{sample.prompt}\n{path}")
            item.setData(QtCore.Qt.ItemDataRole.UserRole, path)
            self.insertItem(0, item)
            added += 1
        while self.count() > self.MAX_ITEMS:
            self.takeItem(self.count() - 1)
        return added

    def _open(self, item: QtWidgets.QListWidgetItem) -> None:
        path = item.data(QtCore.Qt.ItemDataRole.UserRole)
        if path:
            QtGui.QDesktopServices.openUrl(QtCore.QUrl.fromLocalFile(path))
