"""Validation: every problem at once, each with node id and field; overrides; references; paths."""



from runtime.graph_file import loads_graph
from runtime.validate import validate

BROKEN = """
inputs:
  lr: {type: float, default: 0.1}
  unused: {type: int, default: 1}
nodes:
  a: {type: test.cnst}
  b: {type: test.const, params: {nubmer: 1, }}
  c: {type: test.const, params: {number: lots}}
  d: {type: test.const, params: {number: 5000}}
  add: {type: test.add, in: {b: b.value}}
  ghost: {type: test.record, in: {value: nowhere.value}}
  port: {type: test.record, in: {value: b.nope}}
  animal: {type: test.cat_sink, in: {cat: src.value}}
  src: {type: test.const}
  mixed: {type: test.cat_sink, in: {cat: pix.pixel}}
  pix: {type: test.pixels}
  x: {type: test.add, in: {a: y.total}}
  y: {type: test.add, in: {a: x.total}}
  refs: {type: test.params, params: {f: "${lr}", s: "${nope}", i: "${lr}"}}
  extra: {type: test.record, in: {value: b.value, bogus: b.value}}
"""


def codes(result):
    return {(p.code, p.node, p.field) for p in result.problems}


def test_every_problem_is_reported_at_once_with_node_and_field(registry):
    result = validate(loads_graph(BROKEN, registry), registry)
    found = codes(result)
    expected = {
        ("unknown_type", "a", "type"),
        ("unknown_param", "b", "param 'nubmer'"),
        ("bad_param", "c", "param 'number'"),
        ("bad_param", "d", "param 'number'"),
        ("missing_input", "add", "input 'a'"),
        ("unknown_node", "ghost", "input 'value'"),
        ("unknown_port", "port", "input 'value'"),
        ("type_mismatch", "animal", "input 'cat'"),
        ("type_mismatch", "mixed", "input 'cat'"),
        ("cycle", "x", None),
        ("undeclared_input", "refs", "param 's'"),
        ("type_mismatch", "refs", "param 'i'"),
        ("unused_input", None, "input 'unused'"),
        ("unknown_port", "extra", "input 'bogus'"),
    }
    assert expected <= found, sorted(expected - found)
    assert not result.ok and result.order == []
    text = "\n".join(map(str, result.problems))
    assert "did you mean 'test.const'" in text
    assert "did you mean 'number'" in text
    assert "expected a number, got text 'lots'" in text
    assert "5000.0 is above the maximum 1000" in text
    assert "type mismatch: src.value is Number (value), but this input takes Cat (value)" in text
    assert "pix.pixel is Pixel (sample), but this input takes Cat (value)" in text
    assert "cycle: x -> y -> x" in text
    assert "graph input ${lr} is float, but this param takes int" in text


def test_subtypes_connect_and_multi_inputs_take_several_links(registry):
    ok = loads_graph("""
nodes:
  cat: {type: test.cat}
  sink: {type: test.animal_sink, in: {animal: cat.cat}}
  one: {type: test.const}
  two: {type: test.const}
  sum: {type: test.sum, in: {values: [one.value, two.value, one.value]}}
  out: {type: test.record, in: {value: sum.total}}
""", registry)
    result = validate(ok, registry)
    assert result.ok, result.problems
    assert result.order.index("one") < result.order.index("sum") < result.order.index("out")
    too_many = loads_graph("""
nodes:
  one: {type: test.const}
  out: {type: test.record, in: {value: [one.value, one.value]}}
""", registry)
    assert ("too_many_links", "out", "input 'value'") in codes(validate(too_many, registry))


RESOLVE = """
inputs:
  n: {type: int, default: 4, min: 0, max: 10}
  data: {type: dir, default: data}
  src: {type: file}
  word: {type: str, default: fox}
nodes:
  p:
    type: test.params
    params:
      i: ${n}
      f: ${n}
      folder: ${data}
      src: ${src}
      dest: out/${word}.bin
      prompts: ["a ${word}", "${word}"]
      seed: -1
"""


def test_references_overrides_and_paths_resolve(registry, tmp_path, monkeypatch):
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "data").mkdir()
    (tmp_path / "cwd").mkdir()
    (tmp_path / "cwd" / "model.bin").write_text("x")
    graph_path = tmp_path / "g" / "graph.yaml"
    graph_path.write_text(RESOLVE)
    from runtime.graph_file import load_graph

    g = load_graph(graph_path, registry)
    result = validate(g, registry, ["src=model.bin", "p.s=hello", "n=7"], for_run=True, cwd=tmp_path / "cwd")
    assert result.ok, result.problems
    params = result.nodes["p"].params
    assert params["i"] == 7 and params["f"] == 7.0 and params["s"] == "hello"
    assert params["folder"] == str(tmp_path / "g" / "data"), "file values resolve against the graph's folder"
    assert params["src"] == str(tmp_path / "cwd" / "model.bin"), "--set values resolve against the current folder"
    assert params["dest"] == str(tmp_path / "g" / "out" / "fox.bin")
    assert params["prompts"] == ["a fox", "fox"]
    assert 0 <= params["seed"] < 2**32, "seed -1 becomes a concrete seed for the run"


def test_bad_overrides_are_type_checked_and_named(registry, write_graph, tmp_path):
    g = loads_graph(RESOLVE, registry, path=write_graph(RESOLVE))
    result = validate(g, registry, ["n=lots", "n2=1", "q.i=1", "p.nope=1", "p.i=99", "noequals"], cwd=tmp_path)
    text = "\n".join(map(str, result.problems))
    assert "input 'n': --set value: expected a whole number, got text 'lots'" in text
    assert "the graph has no input 'n2' (did you mean 'n'?)" in text
    assert "no node 'q'" in text
    assert "unknown param 'nope'" in text
    assert "node 'p', param 'i': 99 is above the maximum 10" in text
    assert "expected NAME=VALUE" in text


def test_run_validation_turns_missing_values_and_files_into_errors(registry, write_graph):
    path = write_graph(RESOLVE)
    g = loads_graph(RESOLVE, registry, path=path)
    edit = validate(g, registry)
    assert edit.ok, edit.problems
    assert {p.code for p in edit.warnings} == {"missing_value", "not_found"}
    run = validate(g, registry, for_run=True)
    assert {p.code for p in run.errors} == {"missing_value", "not_found"}
    assert any("pass --set src=VALUE" in str(p) for p in run.errors)


def test_a_graph_with_nothing_to_run_cannot_run(registry):
    g = loads_graph("nodes: {a: {type: test.const}}", registry)
    assert validate(g, registry).ok
    assert [p.code for p in validate(g, registry, for_run=True).errors] == ["no_sink"]


def test_validation_plans_only_what_sinks_need(registry):
    g = loads_graph("""
nodes:
  dangling: {type: test.const}
  one: {type: test.const}
  out: {type: test.record, in: {value: one.value}}
""", registry)
    assert validate(g, registry).order == ["one", "out"]


def test_file_or_folder_params_take_references_inside_text_and_say_file_or_folder(tmp_path):
    from runtime.registry import default_registry

    reg = default_registry()
    (tmp_path / "models").mkdir()
    text = ("format: nodetrainer.graph/1\nname: t\ninputs:\n  root: {type: dir, default: models}\n"
            "nodes:\n  base:\n    type: sd.load_model@1\n    params: {path: '${root}/missing.safetensors'}\n")
    (tmp_path / "g.yaml").write_text(text)
    graph = loads_graph(text, reg, path=tmp_path / "g.yaml")
    result = validate(graph, reg, for_run=True)
    problems = [p for p in result.problems if p.node == "base"]
    assert not [p for p in problems if p.code == "type_mismatch"], problems
    assert any(p.code == "not_found" and "file or folder not found" in p.message for p in problems), problems
