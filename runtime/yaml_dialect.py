"""The YAML dialect of graph files: safe, strict and deterministic.

Loading uses libyaml's C parser when present with PyYAML's safe constructor
(never one that can build Python objects), and YAML 1.2-style scalars: only
``true``/``false`` are booleans (a caption ``no`` stays text), ``1e-4`` is a
float, ``010`` is ten, and dates stay strings. Duplicate keys are errors
instead of silently keeping the last one.
"""

from __future__ import annotations

import re

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.representer import SafeRepresenter
from yaml.resolver import BaseResolver

# libyaml's C parser and emitter when present, the pure-Python ones otherwise.
_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BaseDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class GraphResolver(BaseResolver):
    """YAML 1.2 core-schema scalars."""


GraphResolver.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
GraphResolver.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)
GraphResolver.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?[0-9]+$"), list("-+0123456789")
)
GraphResolver.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


class GraphConstructor(SafeConstructor):
    def construct_yaml_int(self, node):
        return int(self.construct_scalar(node), 10)

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                if key is not None and key in seen:
                    raise ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"found duplicate key {key!r}", key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


GraphConstructor.add_constructor("tag:yaml.org,2002:int", GraphConstructor.construct_yaml_int)
GraphConstructor.add_constructor("tag:yaml.org,2002:map", GraphConstructor.construct_yaml_map)


class GraphLoader(GraphConstructor, GraphResolver, _BaseLoader):
    """Safe loader with the graph dialect's scalars and duplicate-key check."""


class FlowList(list):
    """A list written on one line: ``[0, 0]``."""


class FlowMap(dict):
    """A mapping written on one line: ``{type: path, doc: ...}``."""


class GraphRepresenter(SafeRepresenter):
    def represent_str(self, data: str):
        if "\n" in data:
            return self.represent_scalar("tag:yaml.org,2002:str", data, style="|")
        return super().represent_str(data)

    def represent_flow_list(self, data):
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)

    def represent_flow_map(self, data):
        return self.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=True)


GraphRepresenter.add_representer(str, GraphRepresenter.represent_str)
GraphRepresenter.add_representer(FlowList, GraphRepresenter.represent_flow_list)
GraphRepresenter.add_representer(FlowMap, GraphRepresenter.represent_flow_map)


class GraphDumper(GraphRepresenter, GraphResolver, _BaseDumper):
    """Safe dumper that quotes any text the loader would read as another type."""


def parse(text: str):
    """Parse YAML text with the graph dialect (raises PyYAML errors)."""
    return yaml.load(text, Loader=GraphLoader)  # noqa: S506 - GraphLoader is a safe loader


def parse_scalar(text: str):
    """Parse a command-line value (``500``, ``true``, ``1e-4``, ``[a, b]``); text stays text."""
    try:
        value = parse(text)
    except Exception:
        return text
    if value is None and text.strip() not in ("null", "~", "Null", "NULL"):
        return text
    if isinstance(value, dict):
        return text
    return value


def dump(data) -> str:
    return yaml.dump(data, Dumper=GraphDumper, sort_keys=False, allow_unicode=True, width=100,
                     default_flow_style=False)
