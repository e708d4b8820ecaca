"""The editor's document: edits on the runtime graph, typed connections, undo/redo, clipboard."""

from __future__ import annotations

import pytest

from runtime.graph import Link
from runtime.graph_file import loads_graph
from runtime.params import MISSING

from editor.document import Document, Refused


def build(doc: Document) -> None:
    """model -> lora -> train, images -> encode -> batches -> train (ids as named here)."""
    for nid, type_id, pos in [("model", "test.load_model", (0, 0)), ("lora", "test.lora", (300, 0)),
                              ("images", "test.images", (0, 200)), ("encode", "test.encode", (300, 200)),
                              ("batches", "test.batches", (600, 200)), ("train", "test.train", (900, 0))]:
        doc.add_node(type_id, pos, node_id=nid)
    doc.connect("model", "model", "lora", "model")
    doc.connect("images", "image", "encode", "image")
    doc.connect("model", "vae", "encode", "vae")
    doc.connect("encode", "latent", "batches", "fields")
    doc.connect("images", "caption", "batches", "fields")
    doc.connect("lora", "adapted", "train", "model")
    doc.connect("batches", "batches", "train", "batches")


def test_ids_are_stable_and_readable(doc):
    a = doc.add_node("test.lora")
    b = doc.add_node("test.lora")
    assert (a, b) == ("lora", "lora2")
    assert doc.graph.nodes["lora"].qualified_type == "test.lora@1"


def test_built_graph_is_valid_and_saves_as_yaml(doc):
    from runtime.validate import validate

    build(doc)
    doc.set_param("images", "folder", "imgs")
    result = validate(doc.graph, doc.registry)
    assert [p for p in result.errors] == []
    again = loads_graph(doc.text(), doc.registry)
    assert again.nodes["batches"].inputs["fields"] == [Link("encode", "latent"), Link("images", "caption")]
    assert again.layout["train"] == (900, 0)


def test_refused_connection_names_both_types_and_changes_nothing(doc):
    build(doc)
    before = doc.text()
    count = doc.undo.count()
    with pytest.raises(Refused) as err:
        doc.connect("model", "vae", "train", "model")  # VAE into a DiffusionModel input
    assert "VAE" in str(err.value) and "DiffusionModel" in str(err.value)
    with pytest.raises(Refused) as err:
        doc.connect("images", "image", "train", "batches")  # a per-sample field into a value
    assert "Image" in str(err.value) and "BatchSource" in str(err.value) and "sample" in str(err.value)
    assert doc.text() == before and doc.undo.count() == count


def test_cycles_and_unknown_ports_are_refused(doc):
    doc.add_node("test.lora", node_id="a")
    doc.add_node("test.lora", node_id="b")
    doc.connect("a", "adapted", "b", "model")
    with pytest.raises(Refused, match="cycle"):
        doc.connect("b", "adapted", "a", "model")
    with pytest.raises(Refused, match="itself"):
        doc.connect("a", "adapted", "a", "model")
    with pytest.raises(Refused, match="no output 'nope'"):
        doc.connect("a", "nope", "b", "model")


def test_single_input_is_replaced_multi_input_appends(doc):
    build(doc)
    doc.add_node("test.load_model", node_id="other")
    doc.connect("other", "model", "lora", "model")
    assert doc.graph.nodes["lora"].inputs["model"] == Link("other", "model")
    doc.undo.undo()
    assert doc.graph.nodes["lora"].inputs["model"] == Link("model", "model")
    assert len(doc.graph.nodes["batches"].inputs["fields"]) == 2


def test_failed_gesture_is_atomic(doc):
    build(doc)
    before = doc.text()
    with pytest.raises(Refused):
        doc.apply_links([("lora", "model", None)], [("model", "vae", "lora", "model")])
    assert doc.text() == before


def test_undo_redo_every_kind_of_edit(doc):
    texts = [doc.text()]
    doc.add_node("test.load_model", (0, 0), node_id="m")
    texts.append(doc.text())
    doc.add_node("test.lora", (300, 0), node_id="l")
    texts.append(doc.text())
    doc.connect("m", "model", "l", "model")
    texts.append(doc.text())
    doc.set_param("l", "rank", 32)
    texts.append(doc.text())
    doc.move({"l": (412.4, -20.6)})
    texts.append(doc.text())
    doc.disconnect("l", "model")
    texts.append(doc.text())
    doc.remove(["m"])
    texts.append(doc.text())
    assert len(set(texts)) == len(texts)  # every step changed the file
    for expected in reversed(texts[:-1]):
        doc.undo.undo()
        assert doc.text() == expected
    for expected in texts[1:]:
        doc.undo.redo()
        assert doc.text() == expected


def test_undo_of_delete_restores_order_links_and_layout(doc):
    build(doc)
    before = doc.text()
    doc.remove(["model", "batches"])
    assert "model" not in doc.graph.nodes and "model" not in doc.graph.layout
    assert "model" not in doc.graph.nodes["lora"].inputs
    doc.undo.undo()
    assert doc.text() == before  # same node order, layout order and links: byte-identical


def test_param_edits_reset_and_positions_round(doc):
    nid = doc.add_node("test.train")
    doc.set_param(nid, "lr", 5e-7)
    doc.set_param(nid, "prompts", ["a cat", "a dog"])
    assert doc.graph.nodes[nid].params == {"lr": 5e-7, "prompts": ["a cat", "a dog"]}
    doc.set_param(nid, "lr", MISSING)
    assert "lr" not in doc.graph.nodes[nid].params
    doc.move({nid: (10.6, -3.4)})
    assert doc.graph.layout[nid] == (11, -3)


def test_signals_follow_undo(doc, qtbot):
    seen = []
    doc.node_added.connect(lambda n: seen.append(("added", n)))
    doc.node_removed.connect(lambda n: seen.append(("removed", n)))
    doc.links_changed.connect(lambda n: seen.append(("links", n)))
    doc.params_changed.connect(lambda n: seen.append(("params", n)))
    doc.add_node("test.load_model", node_id="m")
    doc.add_node("test.lora", node_id="l")
    doc.connect("m", "model", "l", "model")
    doc.set_param("l", "rank", 8)
    seen.clear()
    doc.undo.undo()
    doc.undo.undo()
    assert seen == [("params", "l"), ("links", "l")]
    doc.undo.redo()
    seen.clear()
    doc.remove(["m"])
    assert ("removed", "m") in seen and ("links", "l") in seen
    seen.clear()
    doc.undo.undo()
    assert seen[0] == ("added", "m") and ("links", "l") in seen


def test_copy_paste_renames_and_keeps_internal_links(doc):
    build(doc)
    text = doc.copy_text(["model", "lora"])
    new = doc.paste_text(text)
    assert new == ["model2", "lora2"]
    assert doc.graph.nodes["lora2"].inputs == {"model": Link("model2", "model")}
    assert doc.graph.layout["lora2"] == (340, 40)
    copied_train = doc.paste_text(doc.copy_text(["train"]))
    assert doc.graph.nodes[copied_train[0]].inputs == {}  # links to nodes not copied are dropped
    assert doc.paste_text("not a graph: [") == []
    doc.undo.undo()
    doc.undo.undo()
    assert "model2" not in doc.graph.nodes


def test_expose_param_makes_a_graph_input(doc):
    from runtime.validate import validate

    nid = doc.add_node("test.train")
    name = doc.expose_param(nid, "steps")
    assert name == "steps"
    assert doc.graph.nodes[nid].params["steps"] == "${steps}"
    gi = doc.graph.inputs["steps"]
    assert (gi.type, gi.default, gi.min) == ("int", 1000, 1)
    problems = validate(doc.graph, doc.registry).problems
    assert not [p for p in problems if p.field == "param 'steps'" or p.code == "unused_input"]
    doc.undo.undo()
    assert doc.graph.inputs == {} and "steps" not in doc.graph.nodes[nid].params


def test_notes_are_edited_and_saved(doc):
    i = doc.add_note((10.2, 20.7, 300, 200), "Data", "images and captions")
    doc.update_note(i, text="changed")
    data = loads_graph(doc.text(), doc.registry)
    assert data.notes[0].title == "Data" and data.notes[0].text == "changed"
    assert data.notes[0].rect == (10, 21, 300, 200)
    doc.remove(note_indexes=[0])
    assert doc.graph.notes == []
    doc.undo.undo()
    assert doc.graph.notes[0].text == "changed"


def test_save_is_atomic_and_marks_clean(doc, tmp_path):
    build(doc)
    assert doc.modified
    path = doc.save(tmp_path / "g.yaml")
    assert path.read_text() == doc.text()
    assert not doc.modified and doc.graph.path == path
    assert [p.name for p in tmp_path.iterdir()] == ["g.yaml"]  # no temporary file left


def test_save_elsewhere_keeps_relative_paths_pointing_at_the_same_files(registry, tmp_path):
    from runtime.paths import ASSETS_DIR, GRAPHS_DIR
    from runtime.validate import validate

    doc = Document.from_preset(GRAPHS_DIR / "example-manifest.yaml", registry)
    doc.save(tmp_path / "sub" / "mine.yaml")
    default = doc.graph.inputs["dataset"].default
    assert not default.startswith("/")  # still relative, from the new folder
    assert (tmp_path / "sub" / default).resolve() == (ASSETS_DIR / "demo_dataset").resolve()
    assert validate(doc.graph, registry, for_run=True).ok
    same = Document.open(tmp_path / "sub" / "mine.yaml", registry)
    before = same.text()
    same.save()
    assert same.text() == before  # saving in place changes nothing
