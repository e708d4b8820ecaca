"""A node whose outputs mirror a multi input (the generic caches, ``Output(mirrors=)``): the spec declares
it, the validator resolves ``cache.FIELD`` to the type of what feeds that field, refuses repeated names
and edges to fields the cache does not get, and version-1 caches (fixed slots) migrate on load."""

from __future__ import annotations

import json

import pytest

from runtime import Input, Output, node
from runtime.errors import SpecError
from runtime.graph_file import dumps_graph, loads_graph
from runtime.params import Param
from runtime.port_types import Caption, Field, Image, Latent, TextEmbedding
from runtime.registry import Registry
from runtime.validate import validate


@node("mirrortest.enc", title="Encoder (test)", category="Test")
class Enc:
    """Sample outputs with several names and types."""

    image = Input(Image)
    latent = Output(Latent)
    hidden = Output(TextEmbedding)
    caption = Output(Caption)

    def run(self, ctx, image):
        return {}


@node("mirrortest.img", title="Image (test)", category="Test")
class Img:
    """An image field."""

    image = Output(Image)

    def run(self, ctx):
        return {}


@node("mirrortest.want_latent", title="Wants a latent (test)", category="Test", sink=True)
class WantLatent:
    """Takes one latent."""

    latent = Input(Latent)

    def run(self, ctx, latent):
        return {}


@pytest.fixture(scope="module")
def reg() -> Registry:
    r = Registry.discover(builtin=True, entry_points=False)
    for cls in (Enc, Img, WantLatent):
        r.register(cls, "tests")
    return r


HEAD = """format: nodetrainer.graph/1
name: mirrors
nodes:
  img: {type: mirrortest.img@1}
  enc:
    type: mirrortest.enc@1
    in: {image: img.image}
  enc2:
    type: mirrortest.enc@1
    in: {image: img.image}
"""


def graph(reg, body: str):
    return loads_graph(HEAD + body, reg)


def errors(v, code=None):
    return [p for p in v.errors if code is None or p.code == code]


def test_a_downstream_edge_has_the_type_of_what_feeds_that_field(reg):
    g = graph(reg, """  cache:
    type: data.ram_cache@2
    in: {fields: [enc.latent, enc.caption]}
  want:
    type: mirrortest.want_latent@1
    in: {latent: cache.latent}
  wrong:
    type: mirrortest.want_latent@1
    in: {latent: cache.caption}
""")
    v = validate(g, reg)
    [problem] = errors(v)
    assert problem.node == "wrong" and problem.code == "type_mismatch"
    assert "cache.caption is Caption" in problem.message and "passes on enc.caption" in problem.message
    assert "takes Latent" in problem.message
    assert list(v.nodes["cache"].spec.outputs) == ["latent", "caption"]


def test_an_edge_to_a_field_the_cache_does_not_get_lists_its_fields(reg):
    g = graph(reg, """  cache:
    type: data.disk_cache@2
    in: {fields: [enc.latent, enc.hidden]}
  want:
    type: mirrortest.want_latent@1
    in: {latent: cache.laten}
  other:
    type: mirrortest.want_latent@1
    in: {latent: cache.cached}
""")
    found = {p.node: p for p in errors(validate(g, reg), "unknown_port")}
    assert set(found) == {"want", "other"}
    message = found["want"].message
    assert "no output 'laten'" in message and "its fields: latent, hidden" in message and "'latent'" in message
    assert found["want"].field == "input 'latent'"
    assert "no output 'cached'" in found["other"].message  # the declaration is not a port


def test_two_links_with_one_field_name_are_one_error_naming_both(reg):
    g = graph(reg, """  cache:
    type: data.ram_cache@2
    in: {fields: [enc.latent, enc2.latent, enc.caption]}
""")
    [problem] = errors(validate(g, reg))
    assert (problem.node, problem.field, problem.code) == ("cache", "input 'fields'", "duplicate_field")
    assert "enc.latent and enc2.latent" in problem.message and "'latent'" in problem.message
    assert "\n" not in problem.message
    g.nodes["cache"].params["rename"] = ["enc2.latent=latent_2"]
    v = validate(g, reg)
    assert not errors(v) and list(v.nodes["cache"].spec.outputs) == ["latent", "latent_2", "caption"]


def test_rename_is_checked_and_must_be_written_out(reg):
    body = """  cache:
    type: data.ram_cache@2
    in: {fields: [enc.hidden]}
    params: {rename: [%s]}
  want:
    type: mirrortest.want_latent@1
    in: {latent: cache.embedding}
"""
    v = validate(graph(reg, body % "'hidden=embedding'"), reg)
    [problem] = errors(v)  # renamed, the field is a TextEmbedding: the latent input refuses it
    assert problem.node == "want" and "cache.embedding is TextEmbedding" in problem.message
    bad = validate(graph(reg, body % "'hidden'"), reg)
    assert any(p.field == "param 'rename'" and "is not 'from=to'" in p.message for p in errors(bad))
    stale = validate(graph(reg, body % "'hidden=embedding', 'gone=x'"), reg)
    assert any(p.code == "unused_rename" and "'gone'" in p.message for p in stale.warnings)
    g = loads_graph(HEAD.replace("nodes:", "inputs:\n  r: {type: strlist, default: [hidden=embedding]}\nnodes:")
                    + body % "'${r}'", reg)
    assert any(p.field == "param 'rename'" and "written out" in p.message for p in errors(validate(g, reg)))
    v = validate(graph(reg, body % "'hidden=embedding'"), reg, ["cache.rename=hidden=other"])
    assert any(p.code == "bad_override" and "--set" in p.message for p in errors(v))


V1 = """format: nodetrainer.graph/1
name: v1 cache
nodes:
  img: {type: mirrortest.img@1}
  enc:
    type: mirrortest.enc@1
    in: {image: img.image}
  cache:
    type: data.disk_cache@1
    in:
      caption: enc.caption
      latent: enc.latent
    params: {folder: cache, variations: 2}
  want:
    type: mirrortest.want_latent@1
    in: {latent: cache.latent}
"""


def test_a_version_1_cache_migrates_and_keeps_its_downstream_edges(reg):
    g = loads_graph(V1, reg)
    assert g.upgrades == ["node 'cache': upgraded data.disk_cache from @1 to @2"]
    entry = g.nodes["cache"]
    assert entry.version == 2 and [str(lk) for lk in entry.inputs["fields"]] == ["enc.latent", "enc.caption"]
    assert entry.params == {"folder": "cache", "variations": 2}
    assert str(g.nodes["want"].inputs["latent"]) == "cache.latent"
    assert validate(g, reg).ok
    text = dumps_graph(g, reg)
    assert "type: data.disk_cache@2\n    in:\n      fields: [enc.latent, enc.caption]\n" in text
    assert dumps_graph(loads_graph(text, reg), reg) == text


def test_renamed_version_1_slots_keep_their_names(reg):
    g = loads_graph(V1.replace("caption: enc.caption", "embedding: enc.hidden")
                    .replace("latent: enc.latent", "latent: enc.caption\n      image: img.image"), reg)
    entry = g.nodes["cache"]
    assert [str(lk) for lk in entry.inputs["fields"]] == ["img.image", "enc.caption", "enc.hidden"]
    assert entry.params["rename"] == ["caption=latent", "hidden=embedding"]
    v = validate(g, reg)
    assert list(v.nodes["cache"].spec.outputs) == ["image", "latent", "embedding"]
    [problem] = errors(v)  # cache.latent now hands on a Caption, as v1 fed its latent slot one
    assert problem.node == "want" and "cache.latent is Caption" in problem.message
    # two slots fed from ports of one name: renamed by link
    two = loads_graph(V1.replace("caption: enc.caption", "caption: enc.caption\n      embedding: enc2.caption")
                      .replace("  cache:", "  enc2:\n    type: mirrortest.enc@1\n    in: {image: img.image}\n  cache:"),
                      reg)
    assert two.nodes["cache"].params["rename"] == ["enc2.caption=embedding"]
    assert list(validate(two, reg).nodes["cache"].spec.outputs) == ["latent", "caption", "embedding"]


def test_a_version_1_cache_with_an_unknown_slot_is_a_clear_load_error(reg):
    from runtime.errors import GraphFileError

    with pytest.raises(GraphFileError) as e:
        loads_graph(V1.replace("latent: enc.latent", "pooled: enc.latent"), reg)
    assert "version 1 has no input(s) 'pooled'" in str(e.value.problems[0])


def test_the_spec_declares_the_mirror_and_describe_shows_it(reg, capsys):
    from runtime.cli import main

    spec = reg.get("data.ram_cache")
    assert spec.mirror.mirrors == "fields" and spec.inputs["fields"].multi and not spec.is_sink
    assert main(["nodes", "--describe", "data.ram_cache", "--json"]) == 0
    described = json.loads(capsys.readouterr().out)
    [out] = described["outputs"]
    assert out["mirrors"] == "fields" and out["renames"] == "rename" and described["version"] == 2
    assert main(["nodes", "--describe", "data.disk_cache"]) == 0
    assert "one output per connected field" in capsys.readouterr().out


def test_the_registry_refuses_an_inconsistent_mirror():
    def make(**kw):
        @node("mirrortest.bad", title="Bad", category="Test")
        class Bad:
            """A broken mirror."""

            one = Input(Field)
            many = Input(Field, multi=True)
            names = Param(int, 0)
            out = Output(Field, **kw)

            def run(self, ctx, one, many):
                return {}

        return Bad

    r = Registry()
    for kw, text in (({"mirrors": "one"}, "takes one link"), ({"mirrors": "nope"}, "not an input"),
                     ({"mirrors": "many", "follows": "one"}, "both follows and mirrors"),
                     ({"mirrors": "many", "renames": "names"}, "must name a strlist param")):
        with pytest.raises(SpecError, match=text):
            r.register(make(**kw))
