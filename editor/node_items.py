"""Canvas nodes generated from node specs: one generic node class for every type.

``make_view_node`` builds a NodeGraphQt node from a ``NodeSpec``: the title,
the category colour, one port per declared input and output coloured by its
port type (value ports round, per-sample ports diamond-shaped), and rich
tooltips from the spec's docs. A node whose type is not installed becomes a
red placeholder that shows the ports its links use. ``SpecNodeItem`` paints
the node and its overlays: the node id, a problem badge and the run state.

Level of detail (``SpecNodeItem.set_view_scale``, called by the canvas on every
zoom): zoomed out so far that the title would be smaller than
OVERVIEW_TITLE_PX on screen, a node becomes a tile of its header colour with
its title drawn at that size (``OverviewTitle``) and its port labels hidden.
"""

from __future__ import annotations

import functools

from PySide6 import QtCore, QtGui, QtWidgets

from . import compat  # noqa: F401  (selects PySide6 for NodeGraphQt)
from NodeGraphQt import BackdropNode, BaseNode  # noqa: E402
from NodeGraphQt.constants import PortTypeEnum  # noqa: E402
from NodeGraphQt.qgraphics.node_base import NodeItem  # noqa: E402
from NodeGraphQt.qgraphics.port import CustomPortItem  # noqa: E402

from runtime.graph import NodeEntry  # noqa: E402
from runtime.port_types import SAMPLE  # noqa: E402
from runtime.spec import NodeSpec  # noqa: E402

from . import style, tooltips  # noqa: E402

FOOTER_H = 16.0

#: the title's font size on screen when zoomed out (pixels): titles never get smaller than this
OVERVIEW_TITLE_PX = 10
#: how far (screen pixels) a zoomed-out title may reach past each side of its node
OVERVIEW_OVERHANG_PX = 6.0
OVERVIEW_MAX_LINES = 3
OVERVIEW_BADGE_PX = 14.0


def _draw_port(painter: QtGui.QPainter, rect: QtCore.QRectF, info: dict, sample: bool) -> None:
    painter.save()
    color = QtGui.QColor(*info["color"][:3])
    if info["hovered"]:
        color = color.lighter(150)
    pen = QtGui.QPen(color.lighter(130), 1.6)
    painter.setPen(pen)
    painter.setBrush(color if info["connected"] else QtGui.QColor(30, 32, 36))
    r = rect.adjusted(1.5, 1.5, -1.5, -1.5)
    if sample:
        c = r.center()
        half = r.width() / 2 + 0.8
        poly = QtGui.QPolygonF([QtCore.QPointF(c.x(), c.y() - half), QtCore.QPointF(c.x() + half, c.y()),
                                QtCore.QPointF(c.x(), c.y() + half), QtCore.QPointF(c.x() - half, c.y())])
        painter.drawPolygon(poly)
    else:
        painter.drawEllipse(r)
    if info["multi_connection"] and info["port_type"] == "in":
        # a second ring marks an input that takes several links
        painter.setBrush(QtCore.Qt.BrushStyle.NoBrush)
        painter.setPen(QtGui.QPen(color, 1.0))
        painter.drawEllipse(rect.adjusted(-2.0, -2.0, 2.0, 2.0))
    painter.restore()


def value_port_painter(painter, rect, info) -> None:
    _draw_port(painter, rect, info, sample=False)


def sample_port_painter(painter, rect, info) -> None:
    _draw_port(painter, rect, info, sample=True)


class SpecPortItem(CustomPortItem):
    """A port whose tooltip (the port's docs) is set when first hovered: setting
    hundreds of tooltips while a graph loads costs more than drawing it."""

    def __init__(self, parent=None, paint_func=None):
        super().__init__(parent, paint_func)
        self.doc_tooltip = ""
        self.refused = False  # the link being dragged may not connect here

    def set_refused(self, refused: bool) -> None:
        if refused != self.refused:
            self.refused = refused
            self.update()

    def paint(self, painter, option, widget):
        super().paint(painter, option, widget)
        if self.refused:  # a red ring with a slash, like a "no entry" sign
            rect = self.boundingRect()
            side = min(rect.width(), rect.height()) - 1.0
            ring = QtCore.QRectF(0, 0, side, side)
            ring.moveCenter(rect.center())
            painter.save()
            painter.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing, True)
            painter.setPen(QtGui.QPen(QtGui.QColor(*style.REFUSED), 2.0))
            painter.setBrush(QtCore.Qt.BrushStyle.NoBrush)
            painter.drawEllipse(ring)
            inset = side * 0.15
            painter.drawLine(ring.topRight() + QtCore.QPointF(-inset, inset),
                             ring.bottomLeft() + QtCore.QPointF(inset, -inset))
            painter.restore()

    @CustomPortItem.multi_connection.setter
    def multi_connection(self, mode=False):
        self._multi_connection = mode

    @CustomPortItem.locked.setter
    def locked(self, value=False):
        self._locked = value

    def hoverEnterEvent(self, event):
        if self.doc_tooltip and self.toolTip() != self.doc_tooltip:
            self.setToolTip(self.doc_tooltip)
        super().hoverEnterEvent(event)


def draw_badge(painter: QtGui.QPainter, rect: QtCore.QRectF, problems: list[tuple[str, str]]) -> None:
    """The problem badge: a red (errors) or amber (warnings only) disc with the count."""
    errors = sum(1 for sev, _ in problems if sev == "error")
    painter.setPen(QtGui.QPen(QtGui.QColor(20, 20, 20), 1.0))
    painter.setBrush(QtGui.QColor(style.ERROR_BADGE if errors else style.WARNING_BADGE))
    painter.drawEllipse(rect)
    font = QtGui.QFont()
    font.setBold(True)
    font.setPixelSize(max(6, int(rect.height() * 0.65)))
    painter.setFont(font)
    painter.setPen(QtGui.QColor("white"))
    painter.drawText(rect, QtCore.Qt.AlignmentFlag.AlignCenter, str(len(problems)))


@functools.lru_cache(maxsize=1)
def overview_font() -> QtGui.QFont:
    """The zoomed-out title font, sized in screen pixels."""
    font = QtGui.QFont()
    font.setPixelSize(OVERVIEW_TITLE_PX)
    return font


@functools.lru_cache(maxsize=1)
def overview_metrics() -> QtGui.QFontMetricsF:
    return QtGui.QFontMetricsF(overview_font())


@functools.lru_cache(maxsize=4096)
def wrap_title(title: str, width: int, max_lines: int) -> tuple[tuple[str, ...], float]:
    """``title`` broken at spaces into lines of at most ``width`` screen pixels (the last one
    elided), and the width of the longest line."""
    fm = overview_metrics()
    lines: list[str] = []
    words = title.split()
    while words and len(lines) < max_lines:
        line = words.pop(0)
        while words and fm.horizontalAdvance(f"{line} {words[0]}") <= width:
            line = f"{line} {words.pop(0)}"
        lines.append(line)
    if words:
        lines[-1] = f"{lines[-1]} {' '.join(words)}"
    elide = QtCore.Qt.TextElideMode.ElideRight
    lines = [fm.elidedText(line, elide, width) for line in lines]
    return tuple(lines), max((fm.horizontalAdvance(line) for line in lines), default=0.0)


class OverviewTitle(QtWidgets.QGraphicsItem):
    """A node's title when zoomed out: drawn at a fixed size on screen, wrapped to the node's width.

    It is laid out in screen pixels for the view's scale (``layout``) and painted under a
    1/scale transform, so the text keeps OVERVIEW_TITLE_PX whatever the zoom. Where the text
    is larger than the node it sits on a plate of the header colour. It takes no mouse buttons
    and has no tooltip, so clicks, drags and tooltips reach the node and its ports.
    """

    def __init__(self, node: SpecNodeItem):
        super().__init__(node)
        self.setAcceptedMouseButtons(QtCore.Qt.MouseButton.NoButton)
        self.setAcceptHoverEvents(False)
        self.setZValue(1)  # over the node's body, under its ports (z 2)
        self.lines: tuple[str, ...] = ()
        self.scale_ = 1.0
        self._plate = QtCore.QRectF()  # in screen pixels, relative to the node's top-left
        self._node_rect = QtCore.QRectF()
        self._overflows = False

    def layout(self, scale: float) -> None:
        node: SpecNodeItem = self.parentItem()
        w, h = node.width * scale, node.height * scale
        line_h = overview_metrics().height()
        max_lines = max(1, min(OVERVIEW_MAX_LINES, int((h + OVERVIEW_OVERHANG_PX) // line_h)))
        lines, text_w = wrap_title(node.name, max(1, int(w + 2 * OVERVIEW_OVERHANG_PX)), max_lines)
        text = QtCore.QRectF(0, 0, text_w + 4.0, line_h * len(lines) + 2.0)
        text.moveCenter(QtCore.QPointF(w / 2, h / 2))
        node_rect = QtCore.QRectF(0, 0, w, h)
        self.prepareGeometryChange()
        self.lines, self.scale_ = lines, scale
        self._overflows = not node_rect.contains(text)
        self._plate = text
        self._node_rect = node_rect

    def screen_line_height(self) -> float:
        """The height of one title line on screen, in pixels."""
        return overview_metrics().height()

    def badge_rect(self) -> QtCore.QRectF:
        """Where the problem badge is drawn zoomed out (screen pixels, at the node's top-right corner)."""
        d = OVERVIEW_BADGE_PX
        return QtCore.QRectF(self._node_rect.right() - d + 2.0, self._node_rect.top() - 2.0, d, d)

    def boundingRect(self) -> QtCore.QRectF:
        r = self._plate.united(self._node_rect).united(self.badge_rect())
        s = self.scale_ or 1.0
        return QtCore.QRectF(r.x() / s, r.y() / s, r.width() / s, r.height() / s)

    def paint(self, painter, option, widget=None):
        node: SpecNodeItem = self.parentItem()
        painter.save()
        painter.scale(1.0 / self.scale_, 1.0 / self.scale_)
        if self._overflows:
            painter.setPen(QtCore.Qt.PenStyle.NoPen)
            painter.setBrush(node.title_color())
            painter.drawRoundedRect(self._plate, 3.0, 3.0)
        painter.setFont(overview_font())
        painter.setPen(QtGui.QColor(*style.TEXT))
        line_h = self.screen_line_height()
        top = self._plate.y() + 1.0
        for i, line in enumerate(self.lines):
            row = QtCore.QRectF(self._plate.x(), top + i * line_h, self._plate.width(), line_h)
            painter.drawText(row, QtCore.Qt.AlignmentFlag.AlignCenter, line)
        if node.problems:
            draw_badge(painter, self.badge_rect(), node.problems)
        painter.restore()


class SpecNodeItem(NodeItem):
    """The node's graphics: body, category header, id footer, problem badge, run state."""

    def __init__(self, name="node", parent=None):
        super().__init__(name, parent)
        self.node_id = ""
        self.header_color = QtGui.QColor(style.category_color("other"))
        self.placeholder = False
        self.run_state: str | None = None
        self.problems: list[tuple[str, str]] = []  # (severity, message)
        self.base_tooltip = ""
        self._tooltip_shown = False
        self._footer_width: float | None = None
        self.setAcceptHoverEvents(True)
        self._icon_item.setVisible(False)
        self._text_item.set_locked(True)  # the title comes from the spec
        self.overview = False  # zoomed out: big title, no port labels (set_view_scale)
        self._overview_title: OverviewTitle | None = None
        self._title_line_h: float | None = None  # of the normal title font, in scene units

    # -- level of detail ---------------------------------------------------------------
    # NodeGraphQt's own level of detail (proxy mode) draws nodes as blank boxes below a
    # width on screen; it is replaced by set_view_scale, which the canvas calls on zoom.
    def auto_switch_mode(self):
        pass

    def set_proxy_mode(self, mode):
        pass

    def set_view_scale(self, scale: float) -> None:
        """Show the node for a view that draws one scene unit as ``scale`` screen pixels.

        Zoomed out so far that the title would be smaller than OVERVIEW_TITLE_PX, the node shows
        only its title, drawn at that size on screen over the whole node, and hides port labels.
        """
        if self._title_line_h is None:
            self._title_line_h = QtGui.QFontMetricsF(self._text_item.font()).height()
        normal = self._title_line_h * scale
        overview = normal < overview_metrics().height()
        if overview != self.overview:
            self.overview = overview
            self._apply_detail()
            self.update()
        if overview:
            if self._overview_title is None:
                self._overview_title = OverviewTitle(self)
            self._overview_title.layout(scale)

    def _apply_detail(self) -> None:
        labels = not self.overview
        for items in (self._input_items, self._output_items):
            for port, text in items.items():
                text.setVisible(labels and port.display_name and port.isVisible())
        self._text_item.setVisible(labels)
        if self._overview_title is not None:
            self._overview_title.setVisible(self.overview)

    def draw_node(self):
        super().draw_node()  # shows every port label again
        self._apply_detail()
        self._relayout_title()

    def _relayout_title(self) -> None:
        if self.overview and self._overview_title is not None:
            self._overview_title.layout(self._overview_title.scale_)

    def title_color(self) -> QtGui.QColor:
        return QtGui.QColor(style.PLACEHOLDER) if self.placeholder else QtGui.QColor(self.header_color)

    # Lighter versions of NodeGraphQt setters that run for every node on load: the title
    # does not reset the tooltip, the (hidden) icon is not loaded from disk, and the node
    # is laid out once when it joins the scene instead of also before.
    @NodeItem.name.setter
    def name(self, name=""):
        self._properties["name"] = name
        if name != self._text_item.toPlainText():
            self._text_item.setPlainText(name)
            if self.scene():
                self.align_label()
            self._relayout_title()
            self.update()

    @NodeItem.icon.setter
    def icon(self, path=None):
        self._properties["icon"] = path

    @NodeItem.layout_direction.setter
    def layout_direction(self, value=0):
        self._properties["layout_direction"] = value
        if self.scene():  # before that, joining the scene lays the node out once
            self.draw_node()

    def _add_spec_port(self, name, port_type, multi_port, display_name, locked, painter_func):
        port = SpecPortItem(self, painter_func)
        port.name = name
        port.port_type = port_type
        port.multi_connection = multi_port
        port.display_name = display_name
        port.locked = locked
        return self._add_port(port)

    def add_input(self, name="input", multi_port=False, display_name=True, locked=False, painter_func=None):
        return self._add_spec_port(name, PortTypeEnum.IN.value, multi_port, display_name, locked, painter_func)

    def add_output(self, name="output", multi_port=False, display_name=True, locked=False, painter_func=None):
        return self._add_spec_port(name, PortTypeEnum.OUT.value, multi_port, display_name, locked, painter_func)

    # -- tooltips: set on first hover, then kept current ------------------------------
    def tooltip_html(self) -> str:
        """The node's docs and its current problems, as its tooltip shows them."""
        return self.base_tooltip + tooltips.problems_html(self.problems)

    def _tooltip_disable(self, state):  # called by NodeGraphQt whenever it redraws
        if self._tooltip_shown:
            self.refresh_tooltip()

    def refresh_tooltip(self) -> None:
        text = self.tooltip_html()
        if self.toolTip() != text:
            self.setToolTip(text)

    def hoverEnterEvent(self, event):
        self._tooltip_shown = True
        self.refresh_tooltip()
        super().hoverEnterEvent(event)

    # -- geometry ------------------------------------------------------------------
    def calc_size(self, add_w=0.0, add_h=0.0):
        width, height = super().calc_size(add_w, add_h)
        if self._footer_width is None:
            self._footer_width = QtGui.QFontMetricsF(self._footer_font()).horizontalAdvance(self.node_id)
        width = max(width, self._footer_width + 70.0, 150.0)
        return width, height + FOOTER_H

    _font: QtGui.QFont | None = None

    @classmethod
    def _footer_font(cls) -> QtGui.QFont:
        if cls._font is None:
            cls._font = QtGui.QFont()
            cls._font.setPointSizeF(7.5)
        return cls._font

    def mouseDoubleClickEvent(self, event):
        viewer = self.viewer()
        if viewer:
            viewer.node_double_clicked.emit(self.id)
        event.accept()

    # -- painting ------------------------------------------------------------------
    def _paint_horizontal(self, painter, option, widget):
        painter.save()
        rect = self.boundingRect().adjusted(1.0, 1.0, -1.0, -1.0)
        radius = 5.0
        painter.setPen(QtCore.Qt.PenStyle.NoPen)
        painter.setBrush(QtGui.QColor(*style.BODY))
        painter.drawRoundedRect(rect, radius, radius)

        header_h = self._text_item.boundingRect().height() + 2.0
        painter.save()
        if not self.overview:  # zoomed out, the whole node is its header (the title is over it)
            painter.setClipRect(QtCore.QRectF(rect.x(), rect.y(), rect.width(), header_h))
        painter.setBrush(self.title_color())
        painter.drawRoundedRect(rect, radius, radius)
        painter.restore()

        if self.selected:
            painter.setBrush(QtGui.QColor(255, 255, 255, 18))
            painter.drawRoundedRect(rect, radius, radius)

        footer = QtCore.QRectF(rect.x() + 7, rect.bottom() - FOOTER_H, rect.width() - 14, FOOTER_H - 2)
        if not self.overview:  # too small to read when zoomed out
            painter.setFont(self._footer_font())
            painter.setPen(QtGui.QColor(*style.SUBTLE_TEXT))
            painter.drawText(footer, QtCore.Qt.AlignmentFlag.AlignLeft | QtCore.Qt.AlignmentFlag.AlignVCenter,
                             self.node_id)
            if self.run_state:
                painter.setPen(QtGui.QColor(style.STATE_COLORS.get(self.run_state, "#888888")))
                painter.drawText(footer, QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignVCenter,
                                 f"\u25cf {self.run_state}")

        if self.run_state:
            pen = QtGui.QPen(QtGui.QColor(style.STATE_COLORS.get(self.run_state, "#888888")), 2.4)
            if self.run_state == "pending":
                pen.setStyle(QtCore.Qt.PenStyle.DashLine)
                pen.setWidthF(1.4)
        elif self.selected:
            pen = QtGui.QPen(QtGui.QColor(*style.SELECTED_BORDER), 1.6)
        elif self.placeholder:
            pen = QtGui.QPen(QtGui.QColor(style.PLACEHOLDER), 2.0)
        else:
            pen = QtGui.QPen(QtGui.QColor(*style.BORDER), 1.0)
        if self.selected and self.run_state:
            pen.setColor(QtGui.QColor(*style.SELECTED_BORDER))
        painter.setPen(pen)
        painter.setBrush(QtCore.Qt.BrushStyle.NoBrush)
        painter.drawRoundedRect(rect, radius, radius)

        if self.problems and not self.overview:  # zoomed out, the overview title draws it
            d = 16.0
            draw_badge(painter, QtCore.QRectF(rect.right() - d - 4, rect.y() + (header_h - d) / 2, d, d),
                       self.problems)
        painter.restore()

    def set_run_state(self, state: str | None) -> None:
        if state != self.run_state:
            self.run_state = state
            self.update()

    def set_problems(self, problems: list[tuple[str, str]]) -> None:
        if problems != self.problems:
            self.problems = list(problems)
            if self._tooltip_shown:
                self.refresh_tooltip()
            self.update()
            if self._overview_title is not None:
                self._overview_title.update()


class SpecNode(BaseNode):
    """The one NodeGraphQt node class; every node type is configured from its spec."""

    __identifier__ = "nodetrainer"
    NODE_NAME = "node"

    def __init__(self):
        super().__init__(SpecNodeItem)


class NoteBackdrop(BackdropNode):
    """A graph note (``notes:`` in the file) drawn as a backdrop."""

    __identifier__ = "nodetrainer"
    NODE_NAME = "Note"


def add_output_port(node: SpecNode, p, port_type):
    """An output port on ``node`` for output ``p`` drawn as ``port_type`` (its type as connected)."""
    port = node.add_output(p.name, color=style.rgb(port_type.color),
                           painter_func=sample_port_painter if port_type.lifetime == SAMPLE else value_port_painter)
    port.view.doc_tooltip = tooltips.port_tooltip(p, False, port_type)
    return port


def make_view_node(entry: NodeEntry, spec: NodeSpec | None, used_outputs: list[str] = (),
                   suggestions: list[str] = (), outputs: dict | None = None) -> SpecNode:
    """A canvas node for a graph node. Ports are added before it joins the scene (one layout pass).

    ``outputs``: name -> (Output, type) as connected (``Document.output_ports``); default the spec's."""
    node = SpecNode()
    item: SpecNodeItem = node.view
    item.node_id = entry.id
    if spec is None:
        item.placeholder = True
        node.NODE_NAME = f"Missing: {entry.type}"
        for port, value in entry.inputs.items():
            node.add_input(port, multi_input=isinstance(value, list), color=(120, 120, 120),
                           painter_func=value_port_painter)
        for port in used_outputs:
            node.add_output(port, color=(120, 120, 120), painter_func=value_port_painter)
        item.base_tooltip = tooltips.placeholder_tooltip(entry.qualified_type, entry.id, list(suggestions))
    else:
        item.header_color = QtGui.QColor(style.category_color(spec.category))
        node.NODE_NAME = spec.title
        for p in spec.inputs.values():
            port = node.add_input(p.name, multi_input=p.multi, color=style.rgb(p.type.color),
                                  painter_func=sample_port_painter if p.type.lifetime == SAMPLE else value_port_painter)
            port.view.doc_tooltip = tooltips.port_tooltip(p, True)
        if outputs is None:
            outputs = {n: (p, p.type) for n, p in spec.outputs.items() if not p.is_template}
        for p, port_type in outputs.values():
            add_output_port(node, p, port_type)
        if spec.mirror is not None:
            node.set_port_deletion_allowed(True)  # a cache's ports come and go with its fields
        item.base_tooltip = tooltips.node_tooltip(spec, entry.id)
    node.model.name = node.NODE_NAME
    item.name = node.NODE_NAME
    return node
