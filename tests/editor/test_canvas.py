"""The canvas: nodes generated from specs, typed mouse connections, the view following the document."""

from __future__ import annotations

from PySide6 import QtCore, QtWidgets

from runtime.graph import Link
from runtime.graph_file import dumps_graph, loads_graph

from editor import node_items, style
from editor.canvas import NODE_MIME

from .qt_helpers import drag_link, mouse_drag, port_center


def view_links(canvas, node_id: str, port: str) -> set[tuple[str, str]]:
    """(source id, output) pairs drawn into a port, checked on both NodeGraphQt layers (model and pipes)."""
    p = canvas.views[node_id].get_input(port)
    model = {(canvas._by_view_id[q.node().id], q.name()) for q in p.connected_ports()}
    drawn = {(canvas._by_view_id[pipe.output_port.node.id], pipe.output_port.name) for pipe in p.view.connected_pipes}
    assert model == drawn
    return model


def two_nodes(canvas):
    canvas.doc.add_node("test.load_model", (0, 0), node_id="m")
    canvas.doc.add_node("test.lora", (360, 0), node_id="l")
    canvas.viewer.show()
    canvas.viewer.centerOn(250, 40)


def test_nodes_are_generated_from_specs(canvas, registry):
    nid = canvas.add_node("test.encode", (0, 0))
    node = canvas.views[nid]
    spec = registry.get("test.encode")
    assert node.view.name == spec.title == "Encode image"
    assert node.view.node_id == nid
    assert [p.name() for p in node.input_ports()] == ["image", "vae"]
    assert [p.name() for p in node.output_ports()] == ["latent"]
    image, vae = node.input_ports()
    assert tuple(image.view.color[:3]) == style.rgb(spec.inputs["image"].type.color)
    assert tuple(vae.view.color[:3]) == style.rgb(spec.inputs["vae"].type.color)
    # sample ports are drawn as diamonds, value ports as circles
    assert image.view._port_painter is node_items.sample_port_painter
    assert vae.view._port_painter is node_items.value_port_painter
    assert node.view.header_color.name() == style.category_color("Data")
    tip = node.view.tooltip_html()
    assert "Encode images to latents." in tip and "test.encode@1" in tip and nid in tip
    assert "image to encode" in image.view.doc_tooltip and "sample" in image.view.doc_tooltip
    # tooltips are set when first hovered (setting hundreds of them slows loading down)
    assert node.view.toolTip() == "" and image.view.toolTip() == ""
    hover = QtWidgets.QGraphicsSceneHoverEvent(QtCore.QEvent.Type.GraphicsSceneHoverEnter)
    node.view.hoverEnterEvent(hover)
    image.view.hoverEnterEvent(hover)
    assert node.view.toolTip() == tip and image.view.toolTip() == image.view.doc_tooltip
    batches = canvas.views[canvas.add_node("test.batches", (300, 0))]
    assert batches.get_input("fields").multi_connection()
    train = canvas.views[canvas.add_node("test.train", (600, 0))]
    assert "learning rate" in train.view.tooltip_html()  # param docs are in the node tooltip


def test_mouse_drop_connects_compatible_ports(canvas):
    two_nodes(canvas)
    drag_link(canvas, "m", "model", "l", "model")
    assert canvas.doc.graph.nodes["l"].inputs == {"model": Link("m", "model")}
    assert view_links(canvas, "l", "model") == {("m", "model")}
    canvas.doc.undo.undo()
    assert canvas.doc.graph.nodes["l"].inputs == {}
    assert view_links(canvas, "l", "model") == set()
    canvas.doc.undo.redo()
    assert view_links(canvas, "l", "model") == {("m", "model")}


def test_mouse_drop_on_incompatible_port_is_refused_with_both_types(canvas):
    two_nodes(canvas)
    messages = []
    canvas.status.connect(messages.append)
    drag_link(canvas, "m", "vae", "l", "model")
    assert canvas.doc.graph.nodes["l"].inputs == {}
    assert view_links(canvas, "l", "model") == set()
    assert len(messages) == 1 and "VAE" in messages[0] and "DiffusionModel" in messages[0]
    assert canvas.doc.undo.count() == 2  # only the two node additions


def test_refused_drop_keeps_the_existing_link(canvas):
    two_nodes(canvas)
    canvas.doc.add_node("test.load_model", (0, 250), node_id="m2")
    canvas.doc.connect("m", "model", "l", "model")
    canvas.viewer.centerOn(250, 120)
    drag_link(canvas, "m2", "vae", "l", "model")  # would replace the link, but is refused
    assert canvas.doc.graph.nodes["l"].inputs == {"model": Link("m", "model")}
    assert view_links(canvas, "l", "model") == {("m", "model")}


def test_dragging_a_link_off_an_input_disconnects_it(canvas):
    two_nodes(canvas)
    canvas.doc.connect("m", "model", "l", "model")
    start = port_center(canvas, "l", "model", False)
    mouse_drag(canvas.viewer.viewport(), start, start + QtCore.QPoint(0, 150))
    assert canvas.doc.graph.nodes["l"].inputs == {}
    assert view_links(canvas, "l", "model") == set()
    canvas.doc.undo.undo()
    assert view_links(canvas, "l", "model") == {("m", "model")}


def test_multi_input_takes_several_links(canvas):
    doc = canvas.doc
    doc.add_node("test.images", (0, 0), node_id="img")
    doc.add_node("test.encode", (0, 250), node_id="enc")
    doc.add_node("test.batches", (400, 100), node_id="b")
    canvas.viewer.show()
    canvas.viewer.centerOn(300, 150)
    drag_link(canvas, "img", "caption", "b", "fields")
    drag_link(canvas, "enc", "latent", "b", "fields")
    assert doc.graph.nodes["b"].inputs["fields"] == [Link("img", "caption"), Link("enc", "latent")]
    assert view_links(canvas, "b", "fields") == {("img", "caption"), ("enc", "latent")}


def test_view_follows_undo_of_delete(canvas):
    two_nodes(canvas)
    canvas.doc.connect("m", "model", "l", "model")
    canvas.select(["m"], center=False)
    canvas.doc.remove(canvas.selected_node_ids())
    assert "m" not in canvas.views and view_links(canvas, "l", "model") == set()
    canvas.doc.undo.undo()
    assert "m" in canvas.views and view_links(canvas, "l", "model") == {("m", "model")}
    assert canvas.view_position("m") == (0.0, 0.0)


def test_moving_a_node_is_an_undoable_edit(canvas):
    two_nodes(canvas)
    item = canvas.views["l"].view
    item.xy_pos = [500.4, 80.6]
    canvas.graph.viewer().moved_nodes.emit({item: [360.0, 0.0]})  # what the viewer emits after a drag
    assert canvas.doc.graph.layout["l"] == (500, 81)
    assert canvas.view_position("l") == (500.0, 81.0)  # snapped to what the file stores
    canvas.doc.undo.undo()
    assert canvas.view_position("l") == (360.0, 0.0)


def test_library_drop_adds_a_node_where_dropped(canvas):
    mime = QtCore.QMimeData()
    mime.setData(NODE_MIME, b"test.sample_hook")
    canvas.viewer.type_dropped.emit("test.sample_hook", QtCore.QPointF(120, 40))
    assert canvas.doc.graph.nodes["sample_hook"].type == "test.sample_hook"
    assert canvas.doc.graph.layout["sample_hook"] == (120, 40)
    assert canvas.selected_node_ids() == ["sample_hook"]


def test_unknown_type_is_a_red_placeholder_that_keeps_its_data(qtbot, registry):
    from editor.canvas import Canvas
    from editor.document import Document

    text = (
        "format: nodetrainer.graph/1\nname: missing\nnodes:\n"
        "  m:\n    type: test.load_model@1\n"
        "  x:\n    type: acme.fancy_thing@3\n    in:\n      model: m.model\n      extra: [m.vae]\n"
        "    params:\n      strength: 0.25\n      mode: wild\n"
        "  l:\n    type: test.lora@1\n    in:\n      model: x.out\n"
        "layout:\n  m: [0, 0]\n  x: [300, 0]\n  l: [600, 0]\n"
    )
    doc = Document(registry, loads_graph(text, registry))
    canvas = Canvas()
    qtbot.addWidget(canvas.widget)
    canvas.set_document(doc)
    x = canvas.views["x"]
    assert x.view.placeholder
    assert [p.name() for p in x.input_ports()] == ["model", "extra"]
    assert [p.name() for p in x.output_ports()] == ["out"]  # what its consumers use
    assert view_links(canvas, "x", "model") == {("m", "model")}
    assert view_links(canvas, "l", "model") == {("x", "out")}
    assert "acme.fancy_thing@3" in x.view.tooltip_html()
    assert doc.text() == dumps_graph(loads_graph(text, registry), registry)  # nothing dropped
    assert "strength: 0.25" in doc.text() and "extra: [m.vae]" in doc.text()
    # the placeholder's ports are unknown: new links to it are refused, with the reason
    messages = []
    canvas.status.connect(messages.append)
    canvas.connect_ports("m", "model", "x", "model")
    assert messages and "acme.fancy_thing" in messages[0]


def test_problems_become_badges_and_run_states_are_painted(canvas):
    two_nodes(canvas)
    canvas.set_problems({"l": [("error", "input 'model': required input is not connected")]})
    item = canvas.views["l"].view
    assert item.problems and "required input is not connected" in item.tooltip_html()
    canvas.set_run_states({"m": "done", "l": "failed"})
    assert (canvas.views["m"].view.run_state, item.run_state) == ("done", "failed")
    image = canvas.viewer.grab().toImage()
    assert not image.isNull()  # painting with badges and states does not raise
    canvas.set_problems({})
    assert canvas.views["l"].view.problems == []


def test_auto_layout_orders_columns_by_dependency(canvas):
    doc = canvas.doc
    for nid, t in [("train", "test.train"), ("lora", "test.lora"), ("model", "test.load_model")]:
        doc.add_node(t, (0, 0), node_id=nid)
    doc.connect("model", "model", "lora", "model")
    doc.connect("lora", "adapted", "train", "model")
    canvas.auto_layout()
    xs = {n: doc.graph.layout[n][0] for n in ("model", "lora", "train")}
    assert xs["model"] < xs["lora"] < xs["train"]
    doc.undo.undo()
    assert doc.graph.layout["train"] == (0, 0)
