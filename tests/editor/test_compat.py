"""Each NodeGraphQt/PySide6 fix in editor.compat, checked by using what it fixes."""

from __future__ import annotations

from PySide6 import QtWidgets

from editor import compat


def test_apply_is_idempotent(qapp):
    first = compat.apply()
    assert compat.apply() == first == list(compat.PATCHES)


def test_properties_bin_spin_boxes_build_and_take_ranges(qapp):
    from NodeGraphQt.custom_widgets.properties_bin.prop_widgets_base import PropSpinBox

    compat.apply()
    spin = PropSpinBox()  # raised AttributeError: no attribute 'NoButtons'
    assert spin.buttonSymbols() == QtWidgets.QAbstractSpinBox.ButtonSymbols.NoButtons
    spin.set_min(3)  # raised AttributeError: no attribute 'set_min'
    spin.set_max(9)
    spin.setValue(20)
    assert (spin.minimum(), spin.maximum(), spin.value()) == (3, 9, 9)


def test_properties_bin_double_spin_box_keeps_small_values(qapp):
    from NodeGraphQt.custom_widgets.properties_bin.prop_widgets_base import PropDoubleSpinBox

    compat.apply()
    spin = PropDoubleSpinBox()
    spin.set_min(0.0)
    spin.set_max(1.0)
    spin.setValue(1e-6)
    assert spin.value() == 1e-6
    assert spin.text() == "1e-06"  # the default two decimals showed 0.00


def test_backdrop_press_on_a_port_does_not_raise(qtbot):
    from editor.canvas import Canvas
    from NodeGraphQt.qgraphics.node_backdrop import BackdropNodeItem

    compat.apply()
    assert BackdropNodeItem.ItemIsMovable == QtWidgets.QGraphicsItem.GraphicsItemFlag.ItemIsMovable
    item = BackdropNodeItem()
    item.setFlag(item.ItemIsMovable, False)  # what mousePressEvent does over a port or pipe
    assert not item.flags() & QtWidgets.QGraphicsItem.GraphicsItemFlag.ItemIsMovable
    Canvas()  # a canvas (which registers the backdrop) builds with the patch applied


def test_tab_search_completer_builds(qapp):
    from NodeGraphQt.widgets.tab_search import TabSearchCompleter

    compat.apply()
    completer = TabSearchCompleter(["a", "b"])  # raised AttributeError: no attribute 'PopupCompletion'
    assert completer.completionMode() == QtWidgets.QCompleter.CompletionMode.PopupCompletion


def test_node_spinbox_round_trips_numbers(qtbot):
    from NodeGraphQt import BaseNode, NodeGraph

    compat.apply()

    class Spin(BaseNode):
        __identifier__ = "compat"
        NODE_NAME = "spin"

        def __init__(self):
            super().__init__()
            self.add_spinbox("rank", "rank", value=16, min_value=1, max_value=64)

    graph = NodeGraph()
    graph.register_node(Spin)
    node = graph.create_node("compat.Spin", push_undo=False)
    assert node.get_property("rank") == 16  # the value= argument was ignored (0)
    session = graph.serialize_session()
    (data,) = [n for n in session["nodes"].values() if n["type_"] == "compat.Spin"]
    assert data["custom"]["rank"] == 16  # was the string "16"
    data["custom"]["rank"] = "12"  # old sessions hold strings: reading them must not raise
    graph.clear_session()
    graph.deserialize_session(session)
    (again,) = [n for n in graph.all_nodes() if n.type_ == "compat.Spin"]
    assert again.get_widget("rank").get_value() == 12


def test_viewer_builds_without_distutils_warning(qapp):
    import warnings

    from NodeGraphQt.widgets.viewer import NodeViewer

    compat.apply()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        NodeViewer()  # compared Qt versions with distutils' deprecated LooseVersion
    assert compat.NumericVersion("6.11.3") >= compat.NumericVersion("5.10")
    assert compat.NumericVersion("5.9") < "5.10"
