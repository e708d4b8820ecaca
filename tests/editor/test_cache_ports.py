"""A cache in the editor has one output port per connected field, named and coloured like it; ports
come and go with the fields, edges follow, and the drag check resolves fields as the validator does."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.graph import Link
from runtime.port_types import Caption, Latent
from runtime.registry import Registry

from tests.runtime.test_cache_fields_graph import Enc, Img, WantLatent

from .qt_helpers import drag_link

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cache_registry() -> Registry:
    r = Registry.discover(builtin=True, entry_points=False)
    for cls in (Enc, Img, WantLatent):
        r.register(cls, "tests")
    return r


@pytest.fixture
def cache_doc(qapp, cache_registry):
    from editor.document import Document

    doc = Document(cache_registry)
    for nid, t, pos in (("img", "mirrortest.img", (0, 0)), ("enc", "mirrortest.enc", (260, 0)),
                        ("enc2", "mirrortest.enc", (260, 260)), ("cache", "data.ram_cache", (520, 0)),
                        ("want", "mirrortest.want_latent", (780, 0))):
        doc.add_node(t, pos, node_id=nid)
    doc.connect("img", "image", "enc", "image")
    doc.connect("img", "image", "enc2", "image")
    return doc


@pytest.fixture
def cache_canvas(qtbot, cache_doc):
    from editor.canvas import Canvas

    c = Canvas()
    c.set_document(cache_doc)
    qtbot.addWidget(c.widget)
    c.widget.resize(1200, 800)
    return c


def ports(canvas, node_id="cache"):
    return [p.name() for p in canvas.views[node_id].output_ports()]


def drawn_into(canvas, node_id: str, port: str) -> list[tuple[str, str]]:
    """(node id, port) of the outputs drawn linked to an input."""
    item = canvas.views[node_id].get_input(port)
    return [(canvas._by_view_id[p.node().id], p.name()) for p in item.connected_ports()]


def test_a_port_per_connected_field_removed_when_disconnected(cache_canvas, no_exceptions):
    from editor.style import rgb

    canvas, doc = cache_canvas, cache_canvas.doc
    assert ports(canvas) == []
    doc.connect("enc", "latent", "cache", "fields")
    doc.connect("enc", "caption", "cache", "fields")
    assert ports(canvas) == ["latent", "caption"]
    colours = [tuple(p.color[:3]) for p in canvas.views["cache"].output_ports()]
    assert colours == [rgb(Latent.color), rgb(Caption.color)]  # typed like what feeds them
    doc.connect("cache", "latent", "want", "latent")
    assert drawn_into(canvas, "want", "latent") == [("cache", "latent")]
    doc.disconnect("cache", "fields", Link("enc", "latent"))
    assert ports(canvas) == ["caption"]
    assert doc.graph.nodes["want"].inputs == {}, "the edge from the field's port goes with it"
    assert drawn_into(canvas, "want", "latent") == []
    doc.undo.undo()
    assert ports(canvas) == ["latent", "caption"]
    assert doc.graph.nodes["want"].inputs == {"latent": Link("cache", "latent")}
    assert drawn_into(canvas, "want", "latent") == [("cache", "latent")]


def test_renaming_a_field_renames_its_port_and_keeps_its_edges(cache_canvas, no_exceptions):
    canvas, doc = cache_canvas, cache_canvas.doc
    doc.connect("enc", "latent", "cache", "fields")
    doc.connect("cache", "latent", "want", "latent")
    doc.set_param("cache", "rename", ["latent=lat"])
    assert ports(canvas) == ["lat"]
    assert doc.graph.nodes["want"].inputs == {"latent": Link("cache", "lat")}
    assert drawn_into(canvas, "want", "latent") == [("cache", "lat")]


def test_the_drag_check_resolves_fields_like_the_validator(cache_doc):
    from runtime.validate import validate

    doc = cache_doc
    doc.connect("enc", "latent", "cache", "fields")
    doc.connect("enc", "caption", "cache", "fields")
    assert doc.check_connection("cache", "latent", "want", "latent") is None
    why = doc.check_connection("cache", "caption", "want", "latent")
    assert why and why.startswith("Caption \u2192 Latent") and "passes on enc.caption" in why
    assert doc.check_connection("cache", "hidden", "want", "latent") == "data.ram_cache has no output 'hidden'"
    why = doc.check_connection("enc2", "latent", "cache", "fields")
    assert why and "'latent'" in why and "enc.latent and enc2.latent" in why
    assert doc.check_connection("enc2", "hidden", "cache", "fields") is None
    # the graph with that link, validated: the same refusal
    doc.graph.nodes["cache"].inputs["fields"].append(Link("enc2", "latent"))
    [problem] = [p for p in validate(doc.graph, doc.registry).errors if p.code == "duplicate_field"]
    assert "enc.latent and enc2.latent" in problem.message and why.endswith(problem.message)


def test_dragging_fields_through_the_cache(qtbot, cache_canvas, no_exceptions):
    canvas, doc = cache_canvas, cache_canvas.doc
    messages = []
    canvas.drag_message.connect(messages.append)
    canvas.viewer.show()
    canvas.fit()
    drag_link(canvas, "enc", "latent", "cache", "fields")
    assert doc.graph.nodes["cache"].inputs == {"fields": [Link("enc", "latent")]}
    assert ports(canvas) == ["latent"]
    canvas.fit()
    drag_link(canvas, "cache", "latent", "want", "latent")
    assert doc.graph.nodes["want"].inputs == {"latent": Link("cache", "latent")}
    drag_link(canvas, "enc2", "latent", "cache", "fields")
    assert doc.graph.nodes["cache"].inputs == {"fields": [Link("enc", "latent")]}
    assert any("enc.latent and enc2.latent" in m for m in messages), messages


@pytest.mark.parametrize("preset", ["quickstart", "sd15-lora", "sd15-finetune", "sd15-embedding", "sd2-lora"])
def test_presets_with_caches_round_trip_byte_identically(qapp, registry, preset, tmp_path):
    from editor.canvas import Canvas
    from editor.document import Document

    path = ROOT / "graphs" / f"{preset}.yaml"
    doc = Document.open(path, registry)
    canvas = Canvas()
    canvas.set_document(doc)
    fields = [lk.port for lk in doc.graph.nodes["cache"].inputs["fields"]]
    assert ports(canvas) == fields and "latent" in fields
    assert doc.text() == path.read_text(encoding="utf-8")
    saved = doc.save(tmp_path / "copy.yaml")
    assert Document.open(saved, registry).text() == saved.read_text(encoding="utf-8") == doc.text()
