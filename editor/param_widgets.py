"""Editors for param values, one per param kind, generated from ``Param`` specs.

Each editor shows a value as written in a graph file and emits ``committed``
with the new value when the user finishes an edit. Numbers use a spin box
that keeps full precision and prints the shortest exact text (a learning
rate of 1e-6 shows as ``1e-6``, not ``0.00``), and accepts Python-sized
integers (seeds up to 2**32-1).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any as _Any

from PySide6 import QtCore, QtGui, QtWidgets

from runtime.params import MISSING, Choice, FloatKind, IntKind, Param, ParamError, StrList, TextKind
from runtime.yaml_dialect import parse_scalar


def format_number(value: _Any) -> str:
    """Shortest text that reads back as the same number: 1e-6, 0.0005, 3.0, 16."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    text = repr(float(value))
    if "e" in text:
        mantissa, exp = text.split("e")
        if mantissa.endswith(".0"):
            mantissa = mantissa[:-2]
        return f"{mantissa}e{int(exp)}"
    return text


class NumberSpinBox(QtWidgets.QAbstractSpinBox):
    """A spin box for int or float params with exact text, bounds and Python ints."""

    committed = QtCore.Signal(object)
    MAX_SHOWN = 80  # characters of a bad value shown

    def __init__(self, integer: bool, minimum: float | None = None, maximum: float | None = None,
                 parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.integer = integer
        self.minimum = minimum
        self.maximum = maximum
        self._value: _Any = None
        self._good_tooltip = ""
        self.setKeyboardTracking(False)
        self.setCorrectionMode(QtWidgets.QAbstractSpinBox.CorrectionMode.CorrectToPreviousValue)
        self.editingFinished.connect(self._commit_text)

    # -- value -------------------------------------------------------------------
    def value(self):
        return self._value

    @property
    def is_bad(self) -> bool:
        """The value shown is not a number of this box (text, a list, nan, 2.5 in a whole-number box)."""
        return self._value is not None and self.as_number(self._value) is None

    def as_number(self, value):
        """``value`` as a number this box can step, or None (validation reports the others)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if self.integer:
            if isinstance(value, float):
                return int(value) if value.is_integer() else None
            return value
        try:
            number = float(value)
        except OverflowError:  # a 400-digit int
            return None
        return value if math.isfinite(number) else None

    def setValue(self, value) -> None:
        """Show a value without emitting ``committed``; one that is not a number is shown as it is, marked."""
        self._value = value
        self.lineEdit().setText(self._shown_text(value))
        self._mark_bad()

    def _shown_text(self, value) -> str:
        if self.as_number(value) is not None or value is None:
            return format_number(value)
        text = value if isinstance(value, str) else repr(value)
        text = text.replace("\n", " ")
        return text if len(text) <= self.MAX_SHOWN else text[:self.MAX_SHOWN - 3] + "..."

    def _mark_bad(self) -> None:
        bad = self.is_bad
        if bad == bool(self.lineEdit().styleSheet()):
            return
        if bad:
            self._good_tooltip = self.toolTip()
            self.lineEdit().setStyleSheet("color: #e53935;")
            what = "a whole number" if self.integer else "a finite number"
            self.setToolTip(f"{self._shown_text(self._value)!r} is not {what}: type a number "
                            "(the Problems panel lists it)")
        else:
            self.lineEdit().setStyleSheet("")
            self.setToolTip(self._good_tooltip)

    def parse(self, text: str):
        """The number in ``text`` or None."""
        text = text.strip()
        if not text:
            return None
        try:
            if self.integer:
                value = int(text) if text.lstrip("+-").isdigit() else float(text)
                if isinstance(value, float):
                    if not value.is_integer():
                        return None
                    value = int(value)
            else:
                value = float(text)
                if not math.isfinite(value):
                    return None
        except (ValueError, OverflowError):
            return None
        return value

    def in_bounds(self, value) -> bool:
        return (self.minimum is None or value >= self.minimum) and (self.maximum is None or value <= self.maximum)

    def validate(self, text: str, pos: int):
        value = self.parse(text)
        if value is not None:
            return QtGui.QValidator.State.Acceptable if self.in_bounds(value) else QtGui.QValidator.State.Intermediate
        partial = text.strip().lower()
        allowed = set("0123456789+-" if self.integer else "0123456789+-.e")
        if all(c in allowed for c in partial):
            return QtGui.QValidator.State.Intermediate
        return QtGui.QValidator.State.Invalid

    def fixup(self, text: str) -> str:
        return self._shown_text(self._value)

    def _commit_text(self) -> None:
        value = self.parse(self.lineEdit().text())
        if value is None or not self.in_bounds(value):
            self.lineEdit().setText(self._shown_text(self._value))
            return
        self._set_and_emit(value)

    def _set_and_emit(self, value) -> None:
        changed = value != self._value or type(value) is not type(self._value)
        self.setValue(value)
        if changed:
            self.committed.emit(value)

    # -- stepping ----------------------------------------------------------------
    def step_size(self) -> float:
        if self.integer:
            return 1
        v = abs(float(self.as_number(self._value) or 0.0))
        if v == 0.0:
            return 0.1
        return 10.0 ** math.floor(math.log10(v)) / 10.0

    def stepBy(self, steps: int) -> None:
        if self.is_bad:  # arrows never replace what the file says; typing a number does
            return
        current = self._value if self._value is not None else (self.minimum or 0)
        value = current + steps * self.step_size()
        if not self.integer:
            value = float(f"{value:.12g}")  # no 1.1000000000000001 from float steps
        if self.minimum is not None:
            value = max(value, self.minimum if not self.integer else int(math.ceil(self.minimum)))
        if self.maximum is not None:
            value = min(value, self.maximum if not self.integer else int(math.floor(self.maximum)))
        self._set_and_emit(int(value) if self.integer else float(value))

    def stepEnabled(self):
        flags = QtWidgets.QAbstractSpinBox.StepEnabledFlag.StepNone
        if self.is_bad:
            return flags
        v = self._value
        if v is None or self.maximum is None or v < self.maximum:
            flags |= QtWidgets.QAbstractSpinBox.StepEnabledFlag.StepUpEnabled
        if v is None or self.minimum is None or v > self.minimum:
            flags |= QtWidgets.QAbstractSpinBox.StepEnabledFlag.StepDownEnabled
        return flags


class _FocusOutText(QtWidgets.QPlainTextEdit):
    """Multi-line text that commits when it loses focus (or on Ctrl+Enter)."""

    finished = QtCore.Signal()

    def focusOutEvent(self, event):
        super().focusOutEvent(event)
        self.finished.emit()

    def keyPressEvent(self, event):
        if event.key() in (QtCore.Qt.Key.Key_Return, QtCore.Qt.Key.Key_Enter) and \
                event.modifiers() & QtCore.Qt.KeyboardModifier.ControlModifier:
            self.finished.emit()
            return
        super().keyPressEvent(event)


class ValueEditor(QtWidgets.QWidget):
    """Base of the editors: ``set_value`` shows a value, ``committed`` reports an edit."""

    committed = QtCore.Signal(object)

    def __init__(self, param: Param, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.param = param
        self._layout = QtWidgets.QHBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setSpacing(2)

    def set_value(self, value) -> None:
        raise NotImplementedError

    def focus_widget(self) -> QtWidgets.QWidget:
        return self


class NumberEditor(ValueEditor):
    def __init__(self, param: Param, parent=None):
        super().__init__(param, parent)
        integer = isinstance(param.kind, IntKind)
        lo, hi = param.min, param.max
        if param.kind.name == "seed":
            lo, hi = -1 if lo is None else lo, (2**32 - 1) if hi is None else hi
        self.spin = NumberSpinBox(integer, lo, hi)
        if param.kind.name == "seed":
            self.spin.setToolTip("-1 picks a fresh random seed when the run starts")
        self.spin.committed.connect(self.committed)
        self._layout.addWidget(self.spin)

    def set_value(self, value) -> None:
        self.spin.setValue(value)

    def focus_widget(self):
        return self.spin


class BoolEditor(ValueEditor):
    """A check box; an optional param's box has a third, partly checked state: unset (the node's own
    default, e.g. "the optimizer's default"), which commits a reset."""

    def __init__(self, param: Param, parent=None):
        super().__init__(param, parent)
        self.box = QtWidgets.QCheckBox()
        self.box.setTristate(param.optional)
        self.box.clicked.connect(self._on_clicked)
        self._layout.addWidget(self.box)
        self._layout.addStretch(1)

    def _on_clicked(self) -> None:
        state = self.box.checkState()
        unset = state == QtCore.Qt.CheckState.PartiallyChecked
        self.box.setText("default" if unset else "")
        self.committed.emit(MISSING if unset else state == QtCore.Qt.CheckState.Checked)

    def set_value(self, value) -> None:
        unset = value is None and self.param.optional
        Qt = QtCore.Qt.CheckState
        self.box.setCheckState(Qt.PartiallyChecked if unset else Qt.Checked if value else Qt.Unchecked)
        self.box.setText("default" if unset else "")

    def focus_widget(self):
        return self.box


class ChoiceEditor(ValueEditor):
    def __init__(self, param: Param, parent=None):
        super().__init__(param, parent)
        self.combo = QtWidgets.QComboBox()
        self.options = list(param.kind.options)
        self.combo.addItems(self.options)
        self.combo.activated.connect(self._on_activated)
        self._layout.addWidget(self.combo)

    def _on_activated(self, index: int) -> None:
        text = self.combo.itemText(index)
        if text in self.options:
            self.committed.emit(text)

    def set_value(self, value) -> None:
        # a value the file has but the spec does not know stays visible (validation reports it)
        while self.combo.count() > len(self.options):
            self.combo.removeItem(self.combo.count() - 1)
        if value in self.options:
            self.combo.setCurrentIndex(self.options.index(value))
        elif value is not None:
            self.combo.addItem(str(value))
            self.combo.setCurrentIndex(self.combo.count() - 1)
        else:
            self.combo.setCurrentIndex(-1)

    def focus_widget(self):
        return self.combo


class LineEditor(ValueEditor):
    """One-line text; also used for ``${input}`` references of any kind."""

    def __init__(self, param: Param, parent=None, placeholder: str = ""):
        super().__init__(param, parent)
        self.edit = QtWidgets.QLineEdit()
        self.edit.setPlaceholderText(placeholder)
        self.edit.editingFinished.connect(self._finish)
        self._layout.addWidget(self.edit)
        self._shown: str | None = None

    def _finish(self) -> None:
        text = self.edit.text()
        if text != self._shown:
            self._shown = text
            self.committed.emit(text)

    def set_value(self, value) -> None:
        self._shown = "" if value is None else str(value)
        self.edit.setText(self._shown)

    def focus_widget(self):
        return self.edit


class PathEditor(LineEditor):
    """A file or folder path with a picker; picked paths under ``base_dir`` are stored relative to it.

    A param that takes either (``FileOrDir``) gets a menu on its button: "Choose file…", "Choose folder…".
    """

    WORDS = {"file": "file", "dir": "folder"}

    def __init__(self, param: Param, base_dir: Path, parent=None):
        picks = tuple(getattr(param.kind, "picks", ())) or ("file",)
        super().__init__(param, parent, placeholder=" or ".join(self.WORDS[p] for p in picks))
        self.base_dir = base_dir
        self.picks = picks
        self.button = QtWidgets.QToolButton()
        self.button.setText("\u2026")
        self.button.setToolTip("Choose " + " or ".join("a " + self.WORDS[p] for p in picks))
        if len(picks) > 1:
            menu = QtWidgets.QMenu(self.button)
            for what in picks:
                action = menu.addAction(f"Choose {self.WORDS[what]}\u2026")
                action.setData(what)
                action.triggered.connect(lambda _=False, what=what: self.pick(what))
            self.button.setMenu(menu)
            self.button.setPopupMode(QtWidgets.QToolButton.ToolButtonPopupMode.InstantPopup)
        else:
            self.button.clicked.connect(lambda: self.pick())
        self._layout.addWidget(self.button)

    def start_dir(self) -> str:
        text = self.edit.text().strip()
        if text and "${" not in text:
            p = Path(os.path.expanduser(text))
            p = p if p.is_absolute() else self.base_dir / p
            return str(p if p.is_dir() else p.parent)
        return str(self.base_dir)

    def pick(self, what: str | None = None) -> None:
        """Open the dialog for ``what`` ("file" or "dir"; default: the kind's first) and store the choice."""
        kind = self.param.kind
        what = what or self.picks[0]
        caption = self.param.label or self.param.name
        if what == "dir":
            chosen = QtWidgets.QFileDialog.getExistingDirectory(self, caption, self.start_dir())
        elif getattr(kind, "mode", "open") == "save":
            chosen, _ = QtWidgets.QFileDialog.getSaveFileName(self, caption, self.start_dir(),
                                                              getattr(kind, "filter", ""))
        else:
            chosen, _ = QtWidgets.QFileDialog.getOpenFileName(self, caption, self.start_dir(),
                                                              getattr(kind, "filter", ""))
        if chosen:
            self.set_picked(chosen)

    def set_picked(self, chosen: str) -> None:
        """Store a picked path: relative to the graph's folder when it lies inside it."""
        path = Path(chosen)
        try:
            text = path.resolve().relative_to(self.base_dir.resolve()).as_posix() or "."
        except ValueError:
            text = str(path)
        self.edit.setText(text)
        self._finish()


class TextEditor(ValueEditor):
    def __init__(self, param: Param, parent=None, lines: int = 4):
        super().__init__(param, parent)
        self.text = _FocusOutText()
        self.text.setTabChangesFocus(True)
        fm = self.text.fontMetrics()
        self.text.setFixedHeight(fm.lineSpacing() * lines + 12)
        self.text.finished.connect(self._finish)
        self._layout.addWidget(self.text)
        self._shown = ""

    def value_from_text(self, text: str):
        return text

    def text_from_value(self, value) -> str:
        return "" if value is None else str(value)

    def _finish(self) -> None:
        text = self.text.toPlainText()
        if text != self._shown:
            self._shown = text
            self.committed.emit(self.value_from_text(text))

    def set_value(self, value) -> None:
        self._shown = self.text_from_value(value)
        self.text.setPlainText(self._shown)

    def focus_widget(self):
        return self.text


class StrListEditor(TextEditor):
    """A list of strings (prompts), one per line."""

    def __init__(self, param: Param, parent=None):
        super().__init__(param, parent, lines=4)
        self.text.setPlaceholderText("one per line")

    def value_from_text(self, text: str):
        return [line for line in (s.strip() for s in text.splitlines()) if line]

    def text_from_value(self, value) -> str:
        if isinstance(value, list):
            return "\n".join(str(v) for v in value)
        return "" if value is None else str(value)


def make_editor(param: Param, base_dir: Path) -> ValueEditor:
    """The editor for a param's kind."""
    kind = param.kind
    if isinstance(kind, (IntKind, FloatKind)):
        return NumberEditor(param)
    if kind.name == "bool":
        return BoolEditor(param)
    if isinstance(kind, Choice):
        return ChoiceEditor(param)
    if kind.is_path:
        return PathEditor(param, base_dir)
    if isinstance(kind, StrList):
        return StrListEditor(param)
    if isinstance(kind, TextKind):
        return TextEditor(param)
    return LineEditor(param)


def is_reference(value) -> bool:
    return isinstance(value, str) and "${" in value


def coerce_text(param: Param, text: str):
    """A value typed into a reference field: a reference stays text, anything else is checked."""
    if is_reference(text):
        return text
    value = parse_scalar(text)
    try:
        return param.check(value)
    except ParamError:
        return text
