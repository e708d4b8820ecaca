"""Fuzzing the loader: any text, or any mutation of a valid graph, loads or raises GraphError — never
another exception — and the error's text is bounded. Validation of whatever loads never raises either.
Hostile input (aliases, huge numbers, names with a final newline) and hostile command lines are fuzzed too."""

import copy
import io
import json

import yaml
from hypothesis import HealthCheck, example, given, settings, strategies as st

from runtime.control import CancelToken, CommandInbox, parse_command, start_command_reader
from runtime.errors import MAX_PROBLEMS_SHOWN, GraphError
from runtime.events import EventBus, ListSink
from runtime.graph_file import dumps_graph, loads_graph
from runtime.validate import validate
from runtime.yaml_dialect import parse

from .test_graph_file import CHAIN
from .test_hostile_graph_files import DIGITS, PROBLEM_CHARS, billion_laughs

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["${left}", "${nope}", "a.value", "test.const@1",
                                                           "x.y@0", "nodetrainer.graph/0", "${", "add.total"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)


def assert_bounded(problems, text=None):
    assert all(len(str(p)) < PROBLEM_CHARS for p in problems)
    if text is not None:
        assert len(text) < (MAX_PROBLEMS_SHOWN + 2) * PROBLEM_CHARS


def load_or_graph_error(text, registry):
    try:
        graph = loads_graph(text, registry)
    except GraphError as e:
        assert_bounded(e.problems, str(e))
        return None
    assert_bounded(validate(graph, registry).problems)  # must not raise
    assert_bounded(validate(graph, registry, ["left=1", "a.number=x", "zz", f"left={DIGITS}"], for_run=True).problems)
    dumps_graph(graph, registry)
    return graph


@SETTINGS
@given(st.text(max_size=400))
def test_any_text_loads_or_raises_graph_error(registry, text):
    load_or_graph_error(text, registry)


yaml_chars = st.sampled_from(list("{}[]:,-#&*!|>'\"%@` \n\t") + ["nodes:", "type:", "in:", "params:", "${x}",
                                                                  "test.const", "\n  ", "format:", "!!binary"])


@SETTINGS
@given(st.lists(yaml_chars, max_size=60))
def test_yaml_looking_noise_loads_or_raises_graph_error(registry, parts):
    load_or_graph_error("".join(parts), registry)


def _paths(data, prefix=()):
    yield prefix
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _paths(v, prefix + (i,))


BASE = parse(CHAIN)
PATHS = [p for p in _paths(BASE) if p]


@st.composite
def mutated(draw):
    data = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(PATHS))
        parent = data
        try:
            for key in path[:-1]:
                parent = parent[key]
            action = draw(st.sampled_from(["replace", "delete", "rename"]))
            if action == "replace":
                parent[path[-1]] = draw(values)
            elif action == "delete":
                del parent[path[-1]]
            elif isinstance(parent, dict):
                parent[draw(st.text(max_size=6))] = parent.pop(path[-1])
        except (KeyError, IndexError, TypeError):
            continue
    return data


@SETTINGS
@given(mutated())
def test_mutated_valid_graphs_load_or_raise_graph_error(registry, data):
    try:
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    except yaml.YAMLError:
        return
    load_or_graph_error(text, registry)


def test_the_unmutated_base_is_valid(registry):
    assert load_or_graph_error(CHAIN, registry) is not None


hostile_parts = st.sampled_from(["nodes:\n  ", "a: ", "&a ", "*a", "&b [", "*b, *b", "]", "{", "}", "<<: ", ", ",
                                 "\n", "\n  ", '"scan\\n": ', "type: ", "test.const@", DIGITS, "-" + DIGITS,
                                 "format: nodetrainer.graph/", "!!int ", '"\\u00b2"', "x" * 3000, "${x}"])


@SETTINGS
@given(st.lists(hostile_parts, max_size=30))
@example([billion_laughs(6)])  # 4 MB of error text before
@example([f"format: nodetrainer.graph/{DIGITS}"])  # a ValueError traceback before
@example(["nodes:\n  ", "n: ", "{", f"type: test.const@{DIGITS}", "}"])
@example(["nodes:\n  ", '"scan\\n": ', "{", "type: test.const@1", "}"])
def test_hostile_yaml_loads_or_raises_a_bounded_graph_error(registry, parts):
    graph = load_or_graph_error("".join(parts), registry)
    assert graph is None or not any("\n" in node_id for node_id in graph.nodes)


command_lines = st.one_of(
    st.binary(max_size=80),
    st.text(max_size=80).map(str.encode),
    st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8)),
                 lambda inner: st.one_of(st.lists(inner, max_size=3),
                                         st.dictionaries(st.sampled_from(["command", "x"]), inner, max_size=2)),
                 max_leaves=8).map(lambda v: json.dumps(v).encode()),
    st.integers(1, 100_000).map(lambda n: b"[" * n + b"]" * n),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(command_lines, max_size=5))
@example([b"[" * 200_000 + b"]" * 200_000])  # killed the reader before: a later stop was ignored
@example([b"\xff\xfe"])
def test_any_command_lines_leave_the_reader_obeying_a_later_stop(lines):
    for line in lines:
        cmd, why = parse_command(line)  # never raises
        assert cmd is None or cmd["command"] in ("stop", "sample", "save", "backup")
        assert len(why) < 300
    lines = [line.replace(b"\n", b" ") for line in lines]
    sink, cancel = ListSink(), CancelToken()
    stream = io.BytesIO(b"\n".join(lines) + b'\n{"command": "stop"}\n')
    thread = start_command_reader(stream, CommandInbox(cancel), EventBus([sink]))
    assert cancel.wait(30)
    thread.join(30)
    assert not thread.is_alive()
    # one log event (a warning, or 'command received') per line that is not blank, and one for the stop
    assert len(sink.of("log")) == sum(parse_command(line) != (None, "") for line in lines) + 1
