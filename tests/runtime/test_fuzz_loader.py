"""Fuzzing the loader: any text, or any mutation of a valid graph, loads or raises GraphError — never
another exception. Validation of whatever loads never raises either."""

import copy

import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from runtime.errors import GraphError
from runtime.graph_file import dumps_graph, loads_graph
from runtime.validate import validate
from runtime.yaml_dialect import parse

from .test_graph_file import CHAIN

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["${left}", "${nope}", "a.value", "test.const@1",
                                                           "x.y@0", "nodetrainer.graph/0", "${", "add.total"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)


def load_or_graph_error(text, registry):
    try:
        graph = loads_graph(text, registry)
    except GraphError:
        return None
    validate(graph, registry)  # must not raise
    validate(graph, registry, ["left=1", "a.number=x", "zz"], for_run=True)
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
