"""The YAML dialect of graph files: safe, strict and deterministic.

Loading uses libyaml's C parser when present with PyYAML's safe constructor
(never one that can build Python objects), and YAML 1.2-style scalars: only
``true``/``false`` are booleans (a caption ``no`` stays text), ``1e-4`` is a
float, ``010`` is ten, and dates stay strings. Duplicate keys are errors
instead of silently keeping the last one.

Hostile input is bounded: aliases (``*name``) are refused, since expanding
them lets a few hundred bytes stand for gigabytes ("billion laughs") and a
saved graph never contains them; whole numbers have at most
``MAX_INT_DIGITS`` digits; libyaml refuses nesting deeper than 1000 levels.
"""

from __future__ import annotations

import re

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.representer import SafeRepresenter
from yaml.resolver import BaseResolver

from .errors import shown

# libyaml's C parser and emitter when present, the pure-Python ones otherwise.
_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BaseDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class GraphResolver(BaseResolver):
    """YAML 1.2 core-schema scalars."""


GraphResolver.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"(?:true|True|TRUE|false|False|FALSE)\Z"), list("tTfF")
)
GraphResolver.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"(?:~|null|Null|NULL|)\Z"), ["~", "n", "N", ""]
)
GraphResolver.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"[-+]?[0-9]+\Z"), list("-+0123456789")
)
GraphResolver.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))\Z"),
    list("-+0123456789."),
)


#: more digits than any count, size or seed needs, and few enough to convert to a float
MAX_INT_DIGITS = 100


class GraphConstructor(SafeConstructor):
    def construct_yaml_int(self, node):
        text = self.construct_scalar(node)
        digits = sum(c.isdigit() for c in text)
        if digits > MAX_INT_DIGITS:
            raise ConstructorError(None, None, f"a whole number of {digits} digits is too long "
                                               f"(at most {MAX_INT_DIGITS})", node.start_mark)
        return int(text, 10)

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                if key is not None and key in seen:
                    raise ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"found duplicate key {shown(key)}", key_node.start_mark,
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
    def ignore_aliases(self, data) -> bool:
        return True  # the loader refuses aliases, so a saved file never writes one

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
    """Parse YAML text with the graph dialect (raises PyYAML errors; ``ComposerError`` for an alias)."""
    loader = GraphLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        # an alias needs an anchor (&) and a star (*): most files skip the walk
        if "&" in text and "*" in text and _reaches_a_node_twice(node):
            raise _alias_error(text)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _reaches_a_node_twice(root: yaml.Node) -> bool:
    """Whether the composed document holds an alias: the composer gives an alias the very node
    object its anchor names. Each node is visited once, however often aliases would repeat it."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            return True
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack += (key, value)
    return False


def _alias_error(text: str) -> ComposerError:
    """The error naming the first alias and its line (found by a second, event-level pass)."""
    for event in yaml.parse(text, Loader=GraphLoader):
        if isinstance(event, yaml.AliasEvent):
            return ComposerError(None, None, f"alias *{event.anchor} is not allowed in a graph file "
                                             "(aliases can expand without bound); write the value out in full",
                                 event.start_mark)
    return ComposerError(None, None, "aliases are not allowed in a graph file", None)


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
