"""The node API: declarations, param kinds, the registry refusing bad specs, discovery."""

import sys
import textwrap

import pytest

from runtime import Choice, Dir, File, Input, Output, Param, Seed, StrList, Text, node
from runtime.errors import SpecError
from runtime.params import ParamError
from runtime.port_types import value_type
from runtime.registry import Registry

Thing = value_type("ApiThing")


def make(type_id="t.thing", **members):
    cls = type("Thing", (), {"run": lambda self, ctx, **kw: {}, **members})
    cls.__module__ = "tests.runtime.test_node_api"
    return node(type_id, title="Thing", category="Test")(cls)


def test_decorator_collects_ports_and_params_in_order_with_docs():
    @node("t.ordered", version=3, title="Ordered", category="Cat")
    class Ordered:
        """First line.

        More text."""

        b = Input(Thing, doc="second input", multi=True)
        a = Input(Thing, doc="first input", optional=True)
        out = Output(Thing, doc="result")
        z = Param(int, 2, min=1, doc="zed")
        y = Param(Choice("p", "q"), "q", doc="why")

        def run(self, ctx, b, a):
            return {"out": 1}

    spec = Ordered.__node_spec__
    assert list(spec.inputs) == ["b", "a"] and list(spec.params) == ["z", "y"]
    assert spec.qualified == "t.ordered@3" and spec.summary == "First line."
    d = spec.describe()
    assert d["inputs"][0] == {"name": "b", "type": "ApiThing", "doc": "second input", "optional": False, "multi": True}
    assert d["params"][1]["options"] == ["p", "q"] and d["params"][0]["min"] == 1
    assert not spec.is_sink
    assert Registry().register(Ordered) is spec


def test_ports_and_params_are_inherited():
    class Base:
        shared = Param(int, 1, doc="shared")
        out = Output(Thing, doc="o")

    @node("t.child", title="Child", category="Test")
    class Child(Base):
        own = Param(bool, True, doc="own")

        def run(self, ctx):
            return {"out": 0}

    spec = Child.__node_spec__
    assert list(spec.params) == ["shared", "own"] and "out" in spec.outputs


GOOD_AND_BAD = [
    (Param(int, 1), [(3, 3), (2.0, 2)], [True, "3", 2.5, None]),
    (Param(float, 1.0), [(3, 3.0), (1e-6, 1e-6)], [True, "x", float("nan"), [1]]),
    (Param(bool, False), [(True, True)], [1, "true"]),
    (Param(str, ""), [("x", "x"), (5, "5")], [None, True, ["a"]]),
    (Param(Text, ""), [("a\nb", "a\nb")], [None]),
    (Param(Choice("a", "b"), "a"), [("b", "b")], ["c", 1]),
    (Param(File(), optional=True), [("x.txt", "x.txt"), (None, None)], ["", 3]),
    (Param(Dir()), [("d", "d")], [None, ""]),
    (Param(StrList, []), [("one", ["one"]), (["a", 2], ["a", "2"])], [{"a": 1}, [None], [["x"]]]),
    (Param(Seed, 0), [(-1, -1), (2**32 - 1, 2**32 - 1)], [-2, 2**32, 1.5]),
    (Param(int, 5, min=1, max=10), [(1, 1), (10, 10)], [0, 11]),
]


@pytest.mark.parametrize("param,good,bad", GOOD_AND_BAD, ids=[p.kind.name for p, _, _ in GOOD_AND_BAD])
def test_param_kinds_accept_and_refuse(param, good, bad):
    for value, expected in good:
        assert param.check(value) == expected
    for value in bad:
        with pytest.raises(ParamError):
            param.check(value)


def test_required_and_optional_params():
    assert Param(int).required
    p = Param(File(), optional=True)
    assert not p.required and p.default is None and p.check(None) is None


BAD_SPECS = {
    "input and param share a name": (dict(x=Input(Thing), xp=None), "both an input and a param"),
    "unknown port type": (dict(m=Input("NoSuchType")), "unknown type 'NoSuchType'"),
    "bad default": (dict(r=Param(int, 0, min=1)), "default 0 is invalid"),
    "min above max": (dict(r=Param(int, 5, min=10, max=1)), "min 10 is above max 1"),
    "reserved name": (dict(ctx=Param(int, 1)), "'ctx' is not allowed"),
    "not a port type": (dict(m=Output(int)), "unknown type"),
}


@pytest.mark.parametrize("case", list(BAD_SPECS))
def test_registry_refuses_inconsistent_specs_naming_class_and_problem(case):
    members, message = BAD_SPECS[case]
    members = dict(members)
    if "xp" in members:
        del members["xp"]
        cls = make(**members)
        cls.__node_spec__.params["x"] = Param(int, 1)
    else:
        cls = make(**members)
    with pytest.raises(SpecError) as err:
        Registry().register(cls)
    assert "Thing" in str(err.value) and "t.thing" in str(err.value)
    assert message in str(err.value)


def test_registry_refuses_bad_ids_versions_and_run_signatures():
    with pytest.raises(SpecError, match="must look like 'family.name'"):
        Registry().register(make("NoDots"))
    cls = make("t.v")
    cls.__node_spec__.version = 0
    with pytest.raises(SpecError, match="version must be"):
        Registry().register(cls)

    @node("t.sig", title="Sig", category="Test")
    class Sig:
        a = Input(Thing)

        def run(self, ctx):
            return {}

    with pytest.raises(SpecError, match="does not accept input"):
        Registry().register(Sig)

    @node("t.mig", version=2, title="Mig", category="Test")
    class Mig:
        migrations = {2: lambda s: s}

        def run(self, ctx):
            return {}

    with pytest.raises(SpecError, match="migration key 2"):
        Registry().register(Mig)


def test_duplicate_type_ids_and_type_names_are_refused():
    reg = Registry()
    reg.register(make("t.dup", o=Output(Thing)))
    with pytest.raises(SpecError, match="already registered"):
        reg.register(make("t.dup"))
    clash = value_type("ApiThing")  # same name, different object
    with pytest.raises(SpecError, match="declared twice"):
        reg.register(make("t.clash", o=Output(clash)))


def test_port_types_may_be_named_by_string():
    reg = Registry()
    spec = reg.register(make("t.bystring", m=Input("DiffusionModel")))
    assert spec.inputs["m"].type is reg.type("DiffusionModel")


def _install_pack(tmp_path, name, entry_value, module_source):
    dist = tmp_path / f"{name}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[nodetrainer.nodes]\n{name} = {entry_value}\n")
    if module_source is not None:
        (tmp_path / f"{name}_mod.py").write_text(textwrap.dedent(module_source))


def test_entry_point_packs_are_discovered_and_broken_ones_reported(tmp_path, monkeypatch):
    _install_pack(tmp_path, "goodpack", "goodpack_mod", """
        from runtime import node, Output, Param
        from runtime.port_types import value_type
        Blob = value_type("PackBlob")

        @node("pack.blob", title="Blob", category="Pack")
        class Blob_:
            out = Output(Blob, doc="blob")
            def run(self, ctx):
                return {"out": 1}

        @node("pack.bad", title="Bad", category="Pack")
        class Bad:
            n = Param(int, -1, min=0)
            def run(self, ctx):
                return {}
    """)
    _install_pack(tmp_path, "brokenpack", "brokenpack_missing_module", None)
    _install_pack(tmp_path, "factorypack", "factorypack_mod:nodes", """
        from runtime import node, Param
        @node("pack.factory", title="F", category="Pack")
        class F:
            def run(self, ctx):
                return {}
        def nodes():
            return [F]
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    for m in ("goodpack_mod", "factorypack_mod"):
        sys.modules.pop(m, None)
    reg = Registry.discover(builtin=False, entry_points=True)
    assert reg.get("pack.blob") and reg.get("pack.factory")
    assert reg.get("pack.bad") is None
    errors = "\n".join(map(str, reg.load_errors))
    assert "brokenpack" in errors and "import failed" in errors
    assert "pack.bad" in errors and "default -1 is invalid" in errors


def test_builtin_catalogue_registers_cleanly_with_docs_everywhere():
    reg = Registry.discover(builtin=True, entry_points=False)
    assert not reg.load_errors, reg.load_errors
    assert reg.specs(), "no built-in nodes found"
    for spec in reg.specs():
        assert spec.summary, f"{spec.type_id} has no doc"
        for group in (spec.inputs, spec.outputs, spec.params):
            for name, item in group.items():
                assert item.doc, f"{spec.type_id}.{name} has no doc"


def test_nodes_declare_the_run_commands_they_act_on():
    @node("t.cmd", title="Cmd", category="Test", commands=("sample",))
    class Cmd:
        def run(self, ctx):
            return {}

    spec = Registry().register(Cmd) or Cmd.__node_spec__
    assert spec.commands == ("sample",) and spec.describe()["commands"] == ["sample"]

    @node("t.badcmd", title="Bad", category="Test", commands=("explode",))
    class Bad:
        def run(self, ctx):
            return {}

    with pytest.raises(SpecError, match="unknown command 'explode'"):
        Registry().register(Bad)


def test_summary_is_the_whole_first_sentence_without_backticks():
    @node("t.sum", title="Sum", category="Test")
    class Sum:
        """Write a backup of the ``model`` on a schedule (e.g. every
        500 steps) and keep the newest few. ``nodetrainer run --resume`` continues.

        More detail."""

        def run(self, ctx):
            return {}

    assert Sum.__node_spec__.summary == ("Write a backup of the model on a schedule (e.g. every 500 steps) "
                                         "and keep the newest few.")


def test_nodes_listing_shows_no_rest_markup_or_cut_sentences():
    from runtime.registry import default_registry

    for spec in default_registry().specs():
        assert "`" not in spec.summary, spec.type_id
        assert spec.summary.rstrip().endswith((".", ")", ":")) or "." not in spec.doc, (spec.type_id, spec.summary)
