"""Pass-through port types: an output declared ``follows=INPUT`` has, in a graph, the type of what
feeds that input, so a family's model type survives train.loop and a cross-family wire is refused at
validation, naming both types. The fake family here (``famtest.*``) is also used by the editor's and
the objective's tests."""

from __future__ import annotations

import time

import pytest

from runtime import Input, Output, node
from runtime.errors import SpecError
from runtime.graph_file import loads_graph
from runtime.port_types import VAE, DDPMModel, DiffusionModel, FlowMatchingModel, value_type
from runtime.registry import Registry
from runtime.validate import validate

from nodes.sd.types import SDModel

# A family that is not SD: a DiffusionModel that is not an SDModel.
FakeXLModel = value_type("FakeXLModel", DDPMModel, doc="a fake family's model (tests)")


@node("famtest.load_xl", title="Fake XL model", category="Model")
class LoadFakeXL:
    """A model of the fake family."""

    model = Output(FakeXLModel, doc="the model")

    def run(self, ctx):
        return {"model": object()}


@node("famtest.vae", title="Fake VAE", category="Model")
class FakeVAE:
    """Something that is not a model."""

    vae = Output(VAE, doc="a VAE")

    def run(self, ctx):
        return {"vae": object()}


@node("famtest.pass", title="Pass through", category="Setup")
class PassThrough:
    """Hands on the model it gets (as a setup or EMA does)."""

    model = Input(DiffusionModel, doc="a model")
    out = Output(DiffusionModel, follows="model", doc="the same model")

    def run(self, ctx, model):
        return {"out": model}


@node("famtest.save_sd", title="Save SD (test)", category="Save", sink=True)
class SaveSD:
    """An SD-typed saver, as a family's savers are typed."""

    model = Input(SDModel, doc="an SD model")

    def run(self, ctx, model):
        return {}


@node("famtest.save_xl", title="Save fake XL", category="Save", sink=True)
class SaveXL:
    """The fake family's own saver."""

    model = Input(FakeXLModel, doc="a fake XL model")

    def run(self, ctx, model):
        return {}


# A flow-matching family (not DDPM): its model type derives from FlowMatchingModel, which
# train.flow_matching_objective serves.
FakeFlowModel = value_type("FakeFlowModel", FlowMatchingModel, doc="a fake flow-matching family's model (tests)")


@node("famtest.load_flow", title="Fake flow model", category="Model")
class LoadFakeFlow:
    """A model of the fake flow-matching family."""

    model = Output(FakeFlowModel, doc="the model")

    def run(self, ctx):
        return {"model": object()}


CLASSES = (LoadFakeXL, FakeVAE, PassThrough, SaveSD, SaveXL, LoadFakeFlow)


def family_registry(*extra: type) -> Registry:
    """Built-in nodes plus the fake family (and ``extra`` node classes)."""
    reg = Registry.discover(entry_points=False)
    for cls in CLASSES + extra:
        reg.register(cls, "tests")
    assert not reg.load_errors, reg.load_errors
    return reg


# The training inputs train.loop needs besides the model, so that the only problems are the types.
LOOP_GRAPH = """
nodes:
  sd: {type: sd.tiny_model}
  xl: {type: famtest.load_xl}
  opt: {type: train.optimizer}
  obj: {type: train.diffusion_objective}
  batches: {type: test.toy_batches}
  train:
    type: train.loop
    in: {model: MODEL, batches: batches.batches, optimizer: opt.optimizer, objective: obj.objective}
  save: {type: SAVER, in: {model: train.trained}}
"""


def loop_graph(reg, model: str, saver: str, extra: str = ""):
    text = LOOP_GRAPH.replace("MODEL", model).replace("SAVER", saver) + extra
    return loads_graph(text, reg)


def problems_at(result, node: str) -> list:
    return [p for p in result.problems if p.node == node]


def pack_reg() -> Registry:
    reg = family_registry()
    reg.register_package("nt_testpack", "test pack")  # test.toy_batches
    return reg


@pytest.fixture(scope="module")
def preg() -> Registry:
    return pack_reg()


# -- the spec API ------------------------------------------------------------------

def make(type_id: str, **members) -> type:
    members.setdefault("__doc__", "A test node.")
    members.setdefault("run", lambda self, ctx, **kw: {})
    return node(type_id)(type("N", (), members))


def test_registry_refuses_follows_that_names_no_input():
    cls = make("famtest.bad_follow", model=Input(DiffusionModel), out=Output(DiffusionModel, follows="modle"))
    with pytest.raises(SpecError, match=r"output 'out' follows 'modle', which is not an input \(inputs: 'model'\)"):
        Registry().register(cls)


def test_registry_refuses_follows_on_an_output_narrower_than_the_input():
    cls = make("famtest.narrow", model=Input(DiffusionModel), out=Output(SDModel, follows="model"))
    with pytest.raises(SpecError, match="output 'out' \\(SDModel\\) follows input 'model' \\(DiffusionModel\\): "
                                        "a pass-through output's type must be DiffusionModel or a supertype"):
        Registry().register(cls)
    other = make("famtest.unrelated", model=Input(DiffusionModel), out=Output(VAE, follows="model"))
    with pytest.raises(SpecError, match="follows input 'model'"):
        Registry().register(other)


def test_registry_refuses_follows_on_a_multi_input_and_a_serves_that_is_not_a_type():
    multi = make("famtest.multi", models=Input(DiffusionModel, multi=True),
                 out=Output(DiffusionModel, follows="models"))
    with pytest.raises(SpecError, match="follows 'models', which takes several links"):
        Registry().register(multi)
    serves = make("famtest.serves", out=Output(DiffusionModel, serves="SDModel"))
    with pytest.raises(SpecError, match="serves .SDModel. is not a port type object or an input"):
        Registry().register(serves)


def test_a_pass_through_may_bound_its_type_above_the_input_and_describe_says_what_it_follows(preg):
    cls = make("famtest.wide", model=Input(SDModel), out=Output(DiffusionModel, follows="model"))
    spec = Registry().register(cls)
    assert spec.describe()["outputs"] == [{"name": "out", "type": "DiffusionModel", "doc": "", "follows": "model"}]
    trained = {o["name"]: o for o in preg.get("train.loop").describe()["outputs"]}["trained"]
    assert trained["type"] == "DiffusionModel" and trained["follows"] == "model"


# -- validation ----------------------------------------------------------------------

def test_an_sd_model_through_the_loop_feeds_an_sd_saver(preg):
    result = validate(loop_graph(preg, "sd.model", "famtest.save_sd"), preg)
    assert result.ok, [str(p) for p in result.problems]


def test_another_family_through_the_loop_is_refused_by_the_sd_saver_naming_both_types(preg):
    result = validate(loop_graph(preg, "xl.model", "famtest.save_sd"), preg)
    [problem] = problems_at(result, "save")
    assert problem.code == "type_mismatch" and problem.field == "input 'model'"
    assert problem.message == ("type mismatch: train.trained is FakeXLModel (value; it passes on what feeds "
                               "train.model), but this input takes SDModel (value)")
    # and its own family's saver takes it
    assert validate(loop_graph(preg, "xl.model", "famtest.save_xl"), preg).ok


def test_a_saver_fed_directly_by_the_wrong_family_is_refused(preg):
    graph = loads_graph("nodes:\n  xl: {type: famtest.load_xl}\n  save: {type: famtest.save_sd, in: {model: xl.model}}\n",
                        preg)
    [problem] = problems_at(validate(graph, preg), "save")
    assert problem.message == "type mismatch: xl.model is FakeXLModel (value), but this input takes SDModel (value)"


def test_a_chain_of_two_pass_throughs_keeps_the_family_type(preg):
    chain = "\n  p1: {type: famtest.pass, in: {model: MODEL0}}\n  p2: {type: famtest.pass, in: {model: p1.out}}\n"
    ok = loop_graph(preg, "p2.out", "famtest.save_sd", chain.replace("MODEL0", "sd.model"))
    assert validate(ok, preg).ok
    bad = loop_graph(preg, "p2.out", "famtest.save_sd", chain.replace("MODEL0", "xl.model"))
    [problem] = problems_at(validate(bad, preg), "save")
    assert "train.trained is FakeXLModel (value; it passes on what feeds train.model, from xl.model)" in \
        problem.message and "takes SDModel" in problem.message


def test_a_pass_through_not_fed_a_type_is_reported_once_at_its_cause(preg):
    text = """
nodes:
  v: {type: famtest.vae}
  p: {type: famtest.pass, in: {model: v.vae}}
  save: {type: famtest.save_sd, in: {model: p.out}}
  ghost: {type: famtest.pass, in: {model: nowhere.out}}
  save2: {type: famtest.save_sd, in: {model: ghost.out}}
  odd: {type: no.such_node}
  p3: {type: famtest.pass, in: {model: odd.model}}
  save3: {type: famtest.save_sd, in: {model: p3.out}}
  unfed: {type: famtest.pass}
  save4: {type: famtest.save_sd, in: {model: unfed.out}}
  xl_save: {type: famtest.save_xl, in: {model: unfed.out}}
  vae_sink: {type: famtest.pass, in: {model: unfed.out}}
"""
    result = validate(loads_graph(text, preg), preg)
    found = {(p.node, p.code) for p in result.problems}
    assert found == {("p", "type_mismatch"), ("ghost", "unknown_node"), ("odd", "unknown_type"),
                     ("unfed", "missing_input")}, sorted(found)
    # an open pass-through still refuses what no type within its bound could feed
    graph = loads_graph("nodes:\n  unfed: {type: famtest.pass}\n  s: {type: test.cat_sink, in: {cat: unfed.out}}\n",
                        preg)
    [problem] = [p for p in validate(graph, preg).problems if p.node == "s"]
    assert problem.message.startswith("type mismatch: unfed.out is DiffusionModel (value; it passes on what feeds "
                                      "unfed.model), but this input takes Cat")


def test_a_cycle_of_pass_throughs_is_reported_and_validation_goes_on(preg):
    text = """
nodes:
  a: {type: famtest.pass, in: {model: b.out}}
  b: {type: famtest.pass, in: {model: a.out}}
  save: {type: famtest.save_sd, in: {model: a.out}}
  xl: {type: famtest.load_xl}
  save_xl: {type: famtest.save_sd, in: {model: xl.model}}
"""
    result = validate(loads_graph(text, preg), preg)
    codes = {(p.node, p.code) for p in result.problems}
    # the cycle is reported, not again as a type behind it; the rest of the graph is still checked
    assert codes == {("a", "cycle"), ("save_xl", "type_mismatch")}, sorted(codes)


def test_a_long_chain_of_pass_throughs_validates_quickly_without_recursion(preg):
    n = 3000
    lines = ["nodes:", "  xl: {type: famtest.load_xl}", "  p0: {type: famtest.pass, in: {model: xl.model}}"]
    lines += [f"  p{i}: {{type: famtest.pass, in: {{model: p{i - 1}.out}}}}" for i in range(1, n)]
    lines.append(f"  save: {{type: famtest.save_sd, in: {{model: p{n - 1}.out}}}}")
    graph = loads_graph("\n".join(lines) + "\n", preg)
    t0 = time.perf_counter()
    result = validate(graph, preg)
    elapsed = time.perf_counter() - t0
    [problem] = problems_at(result, "save")
    assert f"p{n - 1}.out is FakeXLModel" in problem.message and "from xl.model" in problem.message
    assert elapsed < 5, elapsed


# -- the SD family's own savers and samplers -----------------------------------------

@pytest.mark.parametrize("node_type", ["sd.save_lora", "sd.save_checkpoint", "sd.save_diffusers", "sd.save_embedding", "sd.sample"])
def test_sd_savers_and_samplers_behind_the_loop_take_sd_and_refuse_another_family(preg, node_type):
    assert preg.get(node_type).inputs["model"].type is SDModel
    assert validate(loop_graph(preg, "sd.model", node_type), preg).ok
    [problem] = problems_at(validate(loop_graph(preg, "xl.model", node_type), preg), "save")
    assert "train.trained is FakeXLModel" in problem.message and "takes SDModel" in problem.message
    direct = loads_graph(f"nodes:\n  xl: {{type: famtest.load_xl}}\n  s: {{type: {node_type}, in: {{model: xl.model}}}}\n",
                         preg)
    [problem] = [p for p in problems_at(validate(direct, preg), "s") if p.code == "type_mismatch"]
    assert "xl.model is FakeXLModel" in problem.message and "takes SDModel" in problem.message
