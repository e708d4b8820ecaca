"""The loss chart (raw and smoothed), the live sample gallery and the run log."""

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


class LogView(QtWidgets.QPlainTextEdit):
    """A read-only, bounded log that keeps its newest line in view unless the user has scrolled up.

    QPlainTextEdit follows appended text only while its last line lies inside the viewport. The
    horizontal scroll bar that a long line brings (the log does not wrap) appears one event-loop turn
    later and shrinks the viewport, so the last line ends up below it and the view stays there for good.
    Here following is a state the user changes (scrolling up leaves it, scrolling to the end resumes it),
    and any later change of the scroll range (new lines, that scroll bar, a resize) moves to the end."""

    def __init__(self, max_lines: int = 5000, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.setReadOnly(True)
        self.setMaximumBlockCount(max_lines)
        self.setLineWrapMode(QtWidgets.QPlainTextEdit.LineWrapMode.NoWrap)
        self.following = True
        self._settle = QtCore.QTimer(self)  # after Qt's own scroll-bar updates of the same turn
        self._settle.setSingleShot(True)
        self._settle.setInterval(0)
        self._settle.timeout.connect(self._to_end_if_following)
        bar = self.verticalScrollBar()
        bar.actionTriggered.connect(self._user_scrolled)
        bar.rangeChanged.connect(lambda *_: self._settle.start() if self.following else None)

    def add_line(self, text: str) -> None:
        self.appendPlainText(text)
        self._to_end_if_following()
        self._settle.start()

    def clear(self) -> None:
        super().clear()
        self.following = True

    def at_end(self) -> bool:
        bar = self.verticalScrollBar()
        return bar.value() >= bar.maximum()

    def _to_end_if_following(self) -> None:
        if self.following:
            bar = self.verticalScrollBar()
            bar.setValue(bar.maximum())

    def _user_scrolled(self, _action: int) -> None:
        # emitted for wheel, keys, drags and clicks on the bar; the new position is not applied yet
        bar = self.verticalScrollBar()
        self.following = bar.sliderPosition() >= bar.maximum()


def sample_label(sample: Sample, path: str, max_prompt: int = 40) -> str:
    """The caption under a sample image: its training step, then its prompt (cut to ``max_prompt``)."""
    prompt = " ".join(sample.prompt.split())
    if len(prompt) > max_prompt:
        prompt = prompt[:max_prompt - 1] + "\u2026"
    step = f"step {sample.step}" if sample.step is not None else Path(path).stem
    tag = f" ({sample.tag})" if sample.tag else ""
    return f"{step}{tag}\n{prompt}" if prompt else f"{step}{tag}"


def sample_tooltip(sample: Sample, path: str) -> str:
    parts = [f"prompt: {sample.prompt}" if sample.prompt else "no prompt"]
    if sample.step is not None:
        parts.append(f"training step {sample.step}" + (f", {sample.tag} weights" if sample.tag else ""))
    if sample.seeds:
        parts.append("seed " + ", ".join(str(s) for s in sample.seeds))
    parts.append(f"{sample.node}: {path}" if sample.node else path)
    return "\n".join(parts)


class SampleGallery(QtWidgets.QListWidget):
    """Sample images as they arrive, in order (newest last, so a step's prompts stay together), each
    labelled with its step and prompt; double-click opens the file."""

    MAX_ITEMS = 300

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.setViewMode(QtWidgets.QListView.ViewMode.IconMode)
        self.setIconSize(QtCore.QSize(128, 128))
        # room for the step and two lines of prompt under each image
        self.setGridSize(QtCore.QSize(156, 128 + 3 * self.fontMetrics().lineSpacing() + 10))
        self.setResizeMode(QtWidgets.QListView.ResizeMode.Adjust)
        self.setMovement(QtWidgets.QListView.Movement.Static)
        self.setSpacing(4)
        self.setWordWrap(True)
        self.setTextElideMode(QtCore.Qt.TextElideMode.ElideRight)
        self.itemDoubleClicked.connect(self._open)

    def add_sample(self, sample: Sample) -> int:
        """Add a sample's images at the end; returns how many could be read."""
        added = 0
        for path in sample.paths:
            pix = QtGui.QPixmap(path)
            if pix.isNull():
                continue
            icon = QtGui.QIcon(pix.scaled(self.iconSize(), QtCore.Qt.AspectRatioMode.KeepAspectRatio,
                                          QtCore.Qt.TransformationMode.SmoothTransformation))
            item = QtWidgets.QListWidgetItem(icon, sample_label(sample, path))
            item.setToolTip(sample_tooltip(sample, path))
            item.setData(QtCore.Qt.ItemDataRole.UserRole, path)
            self.addItem(item)
            added += 1
        while self.count() > self.MAX_ITEMS:
            self.takeItem(0)  # the oldest
        if added:
            self.scrollToItem(self.item(self.count() - 1))
        return added

    def _open(self, item: QtWidgets.QListWidgetItem) -> None:
        path = item.data(QtCore.Qt.ItemDataRole.UserRole)
        if path:
            QtGui.QDesktopServices.openUrl(QtCore.QUrl.fromLocalFile(path))
