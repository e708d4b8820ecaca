"""NodeGraphQt 0.6.x on PySide6 6.9+: the fixes it needs, in one place.

Import this module before anything else from NodeGraphQt: it selects the
PySide6 binding for the Qt.py shim and silences NodeGraphQt's ``distutils``
import warning. ``apply()`` patches (idempotently, each covered by a test in
tests/editor/test_compat.py):

* PySide6 no longer resolves old-style enum names through *instances*
  (``self.NoButtons``): the properties-bin spin boxes, ``BackdropNodeItem``
  (``self.ItemIsMovable`` on a press over a port or pipe) and
  ``TabSearchCompleter`` (``self.PopupCompletion``) raise AttributeError.
  The names are set as class attributes.
* The properties-bin spin boxes have no ``set_min``/``set_max`` although the
  bin calls them for any property with a ``range``.
* ``PropDoubleSpinBox`` keeps the default two decimals (a learning rate of
  1e-4 shows as 0.00); it gets 12 decimals and shortest-repr text.
* ``distutils``' ``LooseVersion`` (deprecated, gone in Python 3.12) compares
  the Qt version in the viewer and the menus; a small numeric version replaces it.
* ``NodeSpinBox`` (``BaseNode.add_spinbox``) returns its value as a *string*,
  so sessions store ``"16"`` and reloading them raises TypeError in
  ``setValue``; it now returns the number and accepts numbers or numeric text,
  and ``add_spinbox(value=...)`` is no longer ignored.
"""

from __future__ import annotations

import functools
import os
import re
import warnings

os.environ.setdefault("QT_PREFERRED_BINDING", "PySide6")

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*distutils.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="distutils")
    import NodeGraphQt  # noqa: F401  (imported here so the warning filter applies)
    from NodeGraphQt.custom_widgets.properties_bin import prop_widgets_base
    from NodeGraphQt.base import menu
    from NodeGraphQt.nodes import base_node
    from NodeGraphQt.qgraphics import node_backdrop
    from NodeGraphQt.widgets import node_widgets, tab_search, viewer

from PySide6 import QtWidgets

_applied: list[str] = []


def _class_enums() -> None:
    no_buttons = QtWidgets.QAbstractSpinBox.ButtonSymbols.NoButtons
    prop_widgets_base.PropSpinBox.NoButtons = no_buttons
    prop_widgets_base.PropDoubleSpinBox.NoButtons = no_buttons
    node_backdrop.BackdropNodeItem.ItemIsMovable = QtWidgets.QGraphicsItem.GraphicsItemFlag.ItemIsMovable
    tab_search.TabSearchCompleter.PopupCompletion = QtWidgets.QCompleter.CompletionMode.PopupCompletion


def _spin_ranges() -> None:
    for cls in (prop_widgets_base.PropSpinBox, prop_widgets_base.PropDoubleSpinBox):
        cls.set_min = lambda self, value: self.setMinimum(value)
        cls.set_max = lambda self, value: self.setMaximum(value)


def _double_precision() -> None:
    cls = prop_widgets_base.PropDoubleSpinBox
    original_init = cls.__init__

    def __init__(self, parent=None):
        original_init(self, parent)
        self.setDecimals(12)

    cls.__init__ = __init__
    cls.textFromValue = lambda self, value: f"{value:.12g}"


def _node_spinbox_values() -> None:
    cls = node_widgets.NodeSpinBox

    def get_value(self):
        return self.get_custom_widget().value()

    def set_value(self, value):
        box = self.get_custom_widget()
        if isinstance(value, str):
            value = float(value) if isinstance(box, QtWidgets.QDoubleSpinBox) else int(float(value))
        if value != box.value():
            box.setValue(value)
            self.on_value_changed()

    cls.get_value = get_value
    cls.set_value = set_value

    # add_spinbox builds the widget with 0 whatever ``value`` says; set it afterwards.
    original_add = base_node.BaseNode.add_spinbox

    def add_spinbox(self, name, label="", value=0, *args, **kwargs):
        original_add(self, name, label, value, *args, **kwargs)
        widget = self.get_widget(name)
        widget.get_custom_widget().setValue(value)
        self.model.set_property(name, widget.get_value())

    base_node.BaseNode.add_spinbox = add_spinbox


@functools.total_ordering
class NumericVersion:
    """'6.11.3' compared as (6, 11, 3): all NodeGraphQt needs from LooseVersion."""

    def __init__(self, text: str):
        self.parts = tuple(int(p) for p in re.findall(r"\d+", str(text)))

    def __eq__(self, other) -> bool:
        return self.parts == NumericVersion._of(other).parts

    def __lt__(self, other) -> bool:
        return self.parts < NumericVersion._of(other).parts

    @staticmethod
    def _of(other) -> NumericVersion:
        return other if isinstance(other, NumericVersion) else NumericVersion(other)


def _no_distutils() -> None:
    viewer.LooseVersion = NumericVersion
    menu.LooseVersion = NumericVersion


PATCHES = {
    "class_enums": _class_enums,
    "spin_ranges": _spin_ranges,
    "double_precision": _double_precision,
    "node_spinbox_values": _node_spinbox_values,
    "no_distutils": _no_distutils,
}


def apply() -> list[str]:
    """Apply every patch once; returns the names applied so far."""
    for name, fn in PATCHES.items():
        if name not in _applied:
            fn()
            _applied.append(name)
    return list(_applied)
