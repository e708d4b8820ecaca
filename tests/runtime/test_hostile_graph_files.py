"""Hostile graph files and --set values: bounded memory, bounded error text, clear one-line problems."""

import subprocess
import sys
import textwrap

import pytest

from runtime.errors import MAX_MESSAGE_CHARS, MAX_PROBLEMS_SHOWN, GraphFileError, Problem
from runtime.graph import Graph
from runtime.graph_file import loads_graph
from runtime.references import NAME_RE
from runtime.spec import NodeSpec
from runtime.validate import validate
from runtime.yaml_dialect import dump, parse, parse_scalar
from tests.conftest import ROOT, subprocess_env

DIGITS = "9" * 5000  # beyond Python's int-string limit (4300 digits)
#: what one problem may take in the text of an error: message, node and field, punctuation
PROBLEM_CHARS = MAX_MESSAGE_CHARS + 300


def billion_laughs(levels: int = 10) -> str:
    """~600 bytes whose aliases expand to 9**levels strings."""
    lines = ["format: nodetrainer.graph/1", "name: lol", "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    lines.append(f"nodes:\n  n:\n    type: *a{levels - 1}")
    return "\n".join(lines) + "\n"


def load_error(text: str, registry) -> GraphFileError:
    with pytest.raises(GraphFileError) as info:
        loads_graph(text, registry)
    return info.value


def test_billion_laughs_is_refused_in_bounded_memory(tmp_path):
    """In a process that may not grow past 1 GB, loading returns a one-line refusal naming the alias.
    (Before, the expansion took gigabytes and ended in a MemoryError traceback.)"""
    graph = tmp_path / "lol.yaml"
    graph.write_text(billion_laughs())
    code = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        from runtime.errors import GraphFileError
        from runtime.graph_file import load_graph
        from runtime.registry import Registry
        try:
            load_graph({str(graph)!r}, Registry())
        except GraphFileError as e:
            print(e)
            sys.exit(3)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(),
                       cwd=ROOT, timeout=120)
    assert r.returncode == 3, r.stderr[-2000:]
    assert "alias *a0 is not allowed" in r.stdout and "line 4" in r.stdout
    assert len(r.stdout) < 1000


@pytest.mark.parametrize("text, alias, line", [
    ("nodes:\n  a:\n    type: test.const@1\n    params: &p {number: 1.0}\n  b:\n    type: test.const@1\n"
     "    params: *p\n", "*p", 7),
    ("x: &x [1, *x]\nnodes: {}\n", "*x", 1),  # a recursive alias
    ("base: &b {type: test.const@1}\nnodes:\n  a:\n    <<: *b\n", "*b", 4),  # a merge key needs an alias
])
def test_any_alias_is_refused_with_its_line(registry, text, alias, line):
    (problem,) = load_error(text, registry).problems
    assert f"alias {alias} is not allowed" in problem.message and f"line {line}," in problem.message


def test_set_values_with_aliases_stay_text():
    # before, this gave a self-containing list to the param check
    assert parse_scalar("&a [*a, *a]") == "&a [*a, *a]"
    assert parse_scalar("[1, 2]") == [1, 2]


def test_the_dialect_never_writes_an_alias():
    """The loader refuses aliases, so the dumper must not write one for data it sees twice."""
    shared = ["x", "y"]
    text = dump({"p": shared, "q": shared})
    assert "&" not in text and "*" not in text
    assert parse(text) == {"p": shared, "q": shared}


@pytest.mark.parametrize("text, expected", [
    (f"format: nodetrainer.graph/{DIGITS}\n", "unknown file format"),
    ("format: nodetrainer.graph/\u00b2\n", "unknown file format"),  # '²'.isdigit() is true, int('²') fails
    (f"nodes:\n  a:\n    type: test.const@{DIGITS}\n", "node version of 5000 digits"),
    (f"nodes:\n  a:\n    type: test.const@1\n    params: {{number: {DIGITS}}}\n",
     "line 4, column 22: a whole number of 5000 digits is too long"),
    (f"inputs:\n  n: {{type: int, default: -{DIGITS}}}\n", "line 2, column 27: a whole number of 5000 digits"),
    (f"nodes: !!int {DIGITS}\n", "a whole number of 5000 digits is too long"),
])
def test_huge_numbers_are_one_clear_problem(registry, text, expected):
    (problem,) = load_error(text, registry).problems
    assert expected in problem.message and len(str(problem)) < PROBLEM_CHARS


def test_error_text_of_a_small_file_is_bounded(registry):
    """Values echoed in problems are cut; so is the list of problems in the error's text."""
    long = "b" * 20_000
    text = (f"nodes:\n  a:\n    type: [{long}]\n  b:\n    type: test.const@1\n    in: {{x: [{long}]}}\n"
            f"  ? 1{long}\n  : {{type: test.const@1}}\n" + "".join(f"k{i}: 1\n" for i in range(200)))
    assert len(text) < 70_000
    err = load_error(text, registry)
    assert len(err.problems) == 203
    assert all(len(str(p)) < PROBLEM_CHARS for p in err.problems)
    shown = str(err)
    assert f"and {203 - MAX_PROBLEMS_SHOWN} more problem(s)" in shown
    assert len(shown) < (MAX_PROBLEMS_SHOWN + 2) * PROBLEM_CHARS


def test_validation_problems_are_bounded(registry):
    long = "x" * 50_000
    g = loads_graph(f"nodes:\n  a: {{type: test.const@1, params: {{number: {long}}}}}\n"
                    f"  b: {{type: test.{long}@1}}\n", registry)
    result = validate(g, registry, [f"a.{long}=1", f"{long}=2", long])
    assert len(result.problems) >= 5
    assert all(len(str(p)) < PROBLEM_CHARS for p in result.problems), [len(str(p)) for p in result.problems]


def test_problem_caps_every_message_and_location():
    p = Problem("m" * 10_000, node="n" * 10_000, field="f" * 10_000)
    assert len(str(p)) < PROBLEM_CHARS and "…" in p.message and p.message.startswith("mmm")


@pytest.mark.parametrize("text, expected", [
    ('nodes:\n  "scan\\n": {type: test.const@1}\n', "node id 'scan\\n' must start"),
    ('inputs:\n  "n\\n": {type: int, default: 1}\nnodes: {}\n', "graph input name 'n\\n' must be an identifier"),
    ('nodes:\n  a: {type: test.const@1, in: {"x\\n": b.c}}\n', "input port name 'x\\n' is invalid"),
    ('nodes:\n  a: {type: "test.const@1\\n"}\n', "type must look like"),
])
def test_names_must_match_in_full_not_up_to_a_final_newline(registry, text, expected):
    (problem,) = load_error(text, registry).problems
    assert expected in problem.message


def test_api_names_must_match_in_full():
    with pytest.raises(ValueError, match="invalid node id"):
        Graph().add_node("scan\n", "test.const")
    assert NAME_RE.match("name\n") is None  # validate.py checks ${name} references with .match
    spec = NodeSpec("test.thing\n", 1, "T", "Test", "", type("C", (), {"run": lambda self, ctx: {}}))
    assert any("type id" in m for m in spec.problems())
