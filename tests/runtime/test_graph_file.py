"""Graph files: safe YAML dialect, structure errors, deterministic exact round-trip, migrations."""

import os
import stat

import pytest

from runtime.errors import GraphFileError
from runtime.fileio import atomic_path, atomic_write_text
from runtime.graph import Graph, Link
from runtime.graph_file import dumps_graph, load_graph, loads_graph, save_graph
from runtime.paths import presets
from runtime.validate import validate

CHAIN = """\
format: nodetrainer.graph/1
name: chain
description: |
  Two constants, added and recorded.
  Second line.
inputs:
  left: {type: float, default: 2.0, min: -10, max: 10, doc: left number}
nodes:
  a:
    type: test.const@1
    params:
      number: ${left}
  b:
    type: test.const@1
    params:
      number: 1.0e-06
  add:
    type: test.add@1
    in:
      a: a.value
      b: b.value
  total:
    type: test.sum@1
    in:
      values: [add.total, a.value]
  out:
    type: test.record@1
    in:
      value: total.total
    params:
      label: chain
layout:
  a: [0, 0]
  b: [0, 120]
  add: [260, 60]
notes:
- title: Read me
  text: |
    notes are kept
  rect: [-20, -40, 600, 300]
"""


def test_canonical_text_round_trips_byte_for_byte(registry):
    g = loads_graph(CHAIN, registry)
    assert dumps_graph(g, registry) == CHAIN
    assert g.nodes["total"].inputs["values"] == [Link("add", "total"), Link("a", "value")]
    assert g.inputs["left"].min == -10 and g.notes[0].title == "Read me"


@pytest.mark.parametrize("preset", presets(), ids=lambda p: p.name)
def test_every_shipped_preset_round_trips(preset, tmp_path):
    from runtime.registry import default_registry

    reg = default_registry()
    first = dumps_graph(load_graph(preset, reg), reg)
    copy = tmp_path / preset.name
    copy.write_text(first)
    second = dumps_graph(load_graph(copy, reg), reg)
    assert first == second
    assert first == preset.read_text(), "shipped presets are saved in canonical form"


def test_save_is_deterministic_whatever_the_insertion_order(registry):
    def build(order):
        g = Graph(name="det")
        g.add_node("p", "test.params", 1, params={k: v for k, v in order})
        return dumps_graph(g, registry)

    items = [("seed", 3), ("i", 4), ("c", "green"), ("f", 0.25)]
    assert build(items) == build(list(reversed(items)))
    assert build(items).index("i: 4") < build(items).index("seed: 3"), "params follow the spec's order"


def test_yaml_dialect_is_yaml_1_2_like(registry):
    g = loads_graph("""
nodes:
  p:
    type: test.params
    params: {f: 1e-4, s: no, i: 010, t: 2001-01-01, prompts: [yes, off]}
""", registry)
    p = g.nodes["p"].params
    assert p == {"f": 1e-4, "s": "no", "i": 10, "t": "2001-01-01", "prompts": ["yes", "off"]}
    text = dumps_graph(g, registry)
    assert loads_graph(text, registry).nodes["p"].params == p
    g.nodes["p"].params["s"] = "1e-4"  # text that looks like a number is quoted
    assert loads_graph(dumps_graph(g, registry), registry).nodes["p"].params["s"] == "1e-4"


def test_unversioned_types_are_pinned_on_load(registry):
    g = loads_graph("nodes: {a: {type: test.const}}", registry)
    assert g.nodes["a"].version == 1 and "test.const@1" in dumps_graph(g, registry)


@pytest.mark.parametrize("text,needle", [
    ("nodes:\n  a: {type: test.const}\n  a: {type: test.const}\n", "duplicate key 'a'"),
    ("nodes:\n  a: !!python/object/apply:os.system [echo hi]\n", "YAML syntax"),
    ("nodes: [", "YAML syntax"),
    ("- just\n- a list\n", "must be a mapping"),
    ("format: nodetrainer.graph/99\n", "newer nodetrainer"),
    ("format: something-else\n", "unknown file format"),
    ("nodes: {a: {type: test.const@0}}", "versions start at 1"),
])
def test_unreadable_files_raise_graph_file_error(registry, text, needle):
    with pytest.raises(GraphFileError) as err:
        loads_graph(text, registry)
    assert needle in str(err.value)


def test_every_structural_problem_is_reported_at_once(registry):
    text = """
nmae: typo
inputs:
  x: {type: nonsense}
nodes:
  "bad id!": {type: test.const}
  a: {type: test.const, params: {number: {nested: 1}}}
  b: {type: test.add, in: {a: "not a link"}}
  c: {tpye: test.const}
layout: {a: [1]}
"""
    with pytest.raises(GraphFileError) as err:
        loads_graph(text, registry)
    problems = err.value.problems
    messages = "\n".join(map(str, problems))
    assert len(problems) >= 7, messages
    for needle in ("unknown top-level key 'nmae'", "type must be one of", "node id 'bad id!'",
                   "plain value", "not a link of the form node.port", "unknown key 'tpye'", "[x, y]"):
        assert needle in messages


def test_format_0_draft_migrates_to_format_1(registry):
    old = """
format: nodetrainer.graph/0
name: chain
parameters:
  left: {type: float, default: 2.0}
nodes:
- {id: a, type: test.const, version: 1, params: {number: "${left}"}, pos: [0, 0]}
- {id: out, type: test.record, version: 1, inputs: {value: a.value}, pos: [200, 0]}
"""
    new = """
format: nodetrainer.graph/1
name: chain
inputs:
  left: {type: float, default: 2.0}
nodes:
  a: {type: test.const@1, params: {number: "${left}"}}
  out: {type: test.record@1, in: {value: a.value}}
layout: {a: [0, 0], out: [200, 0]}
"""
    assert dumps_graph(loads_graph(old, registry), registry) == dumps_graph(loads_graph(new, registry), registry)
    with pytest.raises(GraphFileError, match="needs an 'id'"):
        loads_graph("format: nodetrainer.graph/0\nnodes: [{type: test.const}]", registry)


def test_node_versions_migrate_on_load(registry):
    g = loads_graph("""
nodes:
  c: {type: test.const@1}
  v: {type: test.versioned@1, in: {src: c.value}, params: {old_name: 7}}
""", registry)
    v = g.nodes["v"]
    assert (v.version, v.params, v.inputs) == (2, {"new_name": 7}, {"value": Link("c", "value")})
    assert g.upgrades == ["node 'v': upgraded test.versioned from @1 to @2"]
    assert validate(g, registry).ok


def test_newer_node_versions_are_reported_not_guessed(registry):
    g = loads_graph("nodes: {c: {type: test.const@5}}", registry)
    problems = validate(g, registry).problems
    assert any(p.code == "version" and p.node == "c" and "@5" in p.message for p in problems)


def test_save_graph_is_atomic_and_leaves_no_temp_files(registry, tmp_path):
    path = tmp_path / "g.yaml"
    g = loads_graph(CHAIN, registry)
    save_graph(g, path, registry)
    assert path.read_text() == CHAIN and g.path == path
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half a fi")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == CHAIN
    assert os.listdir(tmp_path) == ["g.yaml"]
    umask = os.umask(0)
    os.umask(umask)
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, "normal file mode, not a temp file's 0600"


def test_unreadable_path_is_a_graph_file_error(tmp_path, registry):
    with pytest.raises(GraphFileError, match="cannot read"):
        load_graph(tmp_path / "missing.yaml", registry)
    bad = tmp_path / "bin.yaml"
    bad.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(GraphFileError):
        load_graph(bad, registry)
