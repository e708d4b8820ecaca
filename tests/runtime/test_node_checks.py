"""Node checks (runtime.checks): a node verifies its params and neighbours at validation time."""

import pytest

from runtime import Input, Output, Param, node
from runtime.graph_file import loads_graph
from runtime.port_types import value_type
from runtime.registry import Registry
from runtime.validate import validate

Thing = value_type("CheckThing", doc="a test value")


@node("chk.source", title="Source", category="Test")
class Source:
    out = Output(Thing)
    size = Param(int, 1, min=0)
    needs = Param(str, "")

    def needed_batch_fields(self):
        return {self.needs: "add it"} if self.needs else {}

    def check(self, c):
        if not isinstance(self.size, int):
            c.error("the check saw an unresolved param")
        elif self.size == 0:
            c.error("size 0 makes nothing", param="size")

    def run(self, ctx):
        return {"out": self.size}


@node("chk.middle", title="Middle", category="Test")
class Middle:
    a = Input(Thing)
    out = Output(Thing)

    def run(self, ctx, a):
        return {"out": a}


@node("chk.sink", title="Sink", category="Test")
class Sink:
    a = Input(Thing)
    mode = Param(str, "fine")

    def check(self, c):
        if self.mode == "explode":
            raise RuntimeError("bug in the check")
        sizes = [v.params["size"] for v in c.ancestors("a") if "size" in v.params]
        ids = [v.id for v in c.ancestors("a")]
        if self.mode == "report":
            c.warn(f"upstream {ids} sizes {sizes} linked {[v.id + '.' + v.port for v in c.linked('a')]}")

    def run(self, ctx, a):
        return None


@pytest.fixture
def reg():
    r = Registry()
    for cls in (Source, Middle, Sink):
        r.register(cls)
    return r


GRAPH = """
nodes:
  s: {type: chk.source, params: {size: SIZE}}
  m: {type: chk.middle, in: {a: s.out}}
  k: {type: chk.sink, in: {a: m.out}, params: {mode: MODE}}
"""


def check(reg, size=1, mode="fine"):
    return validate(loads_graph(GRAPH.replace("SIZE", str(size)).replace("MODE", mode), reg), reg)


def test_a_check_reports_on_its_node_and_param(reg):
    result = check(reg, size=0)
    assert [(p.node, p.field, p.code) for p in result.errors] == [("s", "param 'size'", "check")]
    assert check(reg).ok


def test_a_check_sees_the_nodes_upstream_nearest_first(reg):
    result = check(reg, size=3, mode="report")
    assert result.ok
    assert [p.message for p in result.warnings] == ["upstream ['m', 's'] sizes [3] linked ['m.out']"]


def test_a_failing_check_is_a_warning_not_a_crash(reg):
    result = check(reg, mode="explode")
    assert result.ok
    assert any("bug in the check" in p.message and p.node == "k" for p in result.warnings)


def test_checks_skip_nodes_whose_params_are_wrong(reg):
    result = check(reg, size="lots")
    assert [(p.code, p.node) for p in result.problems] == [("bad_param", "s")]


def test_quickstart_training_the_text_encoder_without_tokens_is_caught_with_the_fix(registry):
    from runtime.graph_file import load_graph
    from runtime.paths import GRAPHS_DIR

    graph = load_graph(GRAPHS_DIR / "quickstart.yaml", registry)
    result = validate(graph, registry, ["lora.train_text_encoder=true"])
    [problem] = result.errors
    assert (problem.node, problem.field) == ("train", "input 'batches'")
    assert "'tokens'" in problem.message and "sd.tokenize" in problem.message
    assert validate(graph, registry).ok


@pytest.mark.parametrize("preset, dropped, needing", [
    ("sd15-embedding.yaml", "tokens", "sd.embedding_setup"),
    ("quickstart.yaml", "latent", "sd.tiny_model"),
])
def test_presets_missing_a_batch_field_their_model_needs_are_caught(registry, preset, dropped, needing):
    from runtime.graph_file import load_graph
    from runtime.paths import GRAPHS_DIR

    graph = load_graph(GRAPHS_DIR / preset, registry)
    batches = next(n for n in graph.nodes.values() if n.type == "data.batches")
    batches.inputs["fields"] = [lk for lk in batches.inputs["fields"] if lk.port != dropped]
    problems = [p for p in validate(graph, registry).errors if p.code == "check"]
    assert len(problems) == 1 and f"({needing}) needs the batch field {dropped!r}" in problems[0].message
