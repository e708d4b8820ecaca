"""The editor's drag check uses the types ports have as connected (runtime.topology.GraphTypes, the
validator's): train.trained from a loop fed by another family's model is refused on an SD saver, with
both types named, and an objective refuses a model it does not serve."""

from __future__ import annotations

import pytest

from runtime.graph import Link
from runtime.registry import Registry

from tests.runtime.test_passthrough_types import family_registry

from .qt_helpers import drag_link


@pytest.fixture(scope="module")
def fam_registry() -> Registry:
    return family_registry()


@pytest.fixture
def fam_doc(qapp, fam_registry):
    from editor.document import Document

    doc = Document(fam_registry)
    for i, (nid, t) in enumerate({"sd": "sd.tiny_model", "xl": "famtest.load_xl", "flow": "famtest.load_flow",
                                  "ddpm": "train.diffusion_objective", "fm": "famtest.flow_objective",
                                  "train": "train.loop", "save": "famtest.save_sd"}.items()):
        doc.add_node(t, (260 * (i % 4), 240 * (i // 4)), node_id=nid)
    return doc


@pytest.fixture
def fam_canvas(qtbot, fam_doc):
    from editor.canvas import Canvas

    c = Canvas()
    c.set_document(fam_doc)
    qtbot.addWidget(c.widget)
    c.widget.resize(1200, 800)
    return c


def test_trained_output_of_a_loop_fed_another_family_is_refused_on_an_sd_saver(fam_doc):
    doc = fam_doc
    doc.connect("sd", "model", "train", "model")
    assert doc.check_connection("train", "trained", "save", "model") is None
    doc.connect("xl", "model", "train", "model")  # replaces the SD model
    why = doc.check_connection("train", "trained", "save", "model")
    assert why == ("FakeXLModel \u2192 SDModel: a FakeXLModel output cannot feed a SDModel input "
                   "(train.trained \u2192 save.model; train.trained passes on what feeds train.model)")
    # the same graph, validated: the same types
    doc.connect("sd", "model", "train", "model")
    doc.connect("train", "trained", "save", "model")
    doc.graph.nodes["train"].inputs["model"] = Link("xl", "model")
    from runtime.validate import validate

    [problem] = [p for p in validate(doc.graph, doc.registry).problems if p.node == "save"]
    assert "train.trained is FakeXLModel" in problem.message and "takes SDModel" in problem.message


def test_an_objective_refuses_a_model_it_does_not_serve_in_either_drag_order(fam_doc):
    doc = fam_doc
    doc.connect("fm", "objective", "train", "objective")
    why = doc.check_connection("sd", "model", "train", "model")
    assert why and why.startswith("fm.objective (input 'objective') serves FakeFlowMatchingModel models, "
                                  "but sd.model is SDModel")
    assert doc.check_connection("flow", "model", "train", "model") is None
    doc.connect("flow", "model", "train", "model")
    why = doc.check_connection("ddpm", "objective", "train", "objective")  # a DDPM objective on a flow model
    assert why and "serves DDPMModel models, but flow.model is FakeFlowModel" in why
    doc.disconnect("train", "objective")
    doc.connect("sd", "model", "train", "model")
    why = doc.check_connection("fm", "objective", "train", "objective")
    assert why and "serves FakeFlowMatchingModel models, but sd.model is SDModel" in why


def test_a_mismatch_already_in_the_graph_does_not_block_other_drags(fam_doc):
    doc = fam_doc
    doc.graph.nodes["train"].inputs.update(model=Link("sd", "model"), objective=Link("fm", "objective"))
    assert doc.check_connection("flow", "model", "train", "model") is None  # fixes it
    assert doc.check_connection("sd", "model", "save", "model") is None  # unrelated to it


def test_dragging_trained_onto_the_sd_saver_is_refused_with_both_types(qtbot, fam_canvas, no_exceptions):
    canvas, doc = fam_canvas, fam_canvas.doc
    doc.connect("xl", "model", "train", "model")
    messages = []
    canvas.drag_message.connect(messages.append)
    canvas.viewer.show()
    canvas.fit()
    drag_link(canvas, "train", "trained", "save", "model")
    assert doc.graph.nodes["save"].inputs == {}
    assert any(m.startswith("FakeXLModel \u2192 SDModel") and "passes on what feeds train.model" in m
               for m in messages), messages
    doc.connect("sd", "model", "train", "model")
    drag_link(canvas, "train", "trained", "save", "model")
    assert doc.graph.nodes["save"].inputs == {"model": Link("train", "trained")}


def test_rewiring_the_loop_to_another_family_is_refused_when_its_saver_would_not_take_it(fam_doc):
    doc = fam_doc
    for src, out, dst, inp in (("sd", "model", "train", "model"), ("train", "trained", "save", "model")):
        doc.connect(src, out, dst, inp)
    why = doc.check_connection("xl", "model", "train", "model")
    assert why == ("then train.trained would be FakeXLModel (it passes on what feeds train.model), "
                   "but save.model, which it feeds, takes SDModel")
    assert doc.check_connection("sd", "model", "train", "model") is None
    # through a chain: xl -> p1 -> p2 -> save is refused at p1's input
    doc.add_node("famtest.pass", node_id="p1")
    doc.add_node("famtest.pass", node_id="p2")
    doc.connect("p1", "out", "p2", "model")
    doc.connect("p2", "out", "save", "model")
    why = doc.check_connection("xl", "model", "p1", "model")
    assert why and why.startswith("then p2.out would be FakeXLModel (it passes on what feeds p2.model, from xl.model)")


def test_a_loop_not_fed_yet_may_be_wired_to_a_family_saver_first(fam_doc):
    doc = fam_doc
    assert doc.check_connection("train", "trained", "save", "model") is None
    doc.connect("train", "trained", "save", "model")
    assert doc.check_connection("sd", "model", "train", "model") is None
    assert "takes SDModel" in doc.check_connection("xl", "model", "train", "model")
