"""Port types: inheritance, lifetimes, the one compatibility rule."""

import pytest

from runtime import port_types as pt
from runtime.port_types import PortType, is_compatible, sample_type, value_type


def test_same_type_and_subtype_connect_but_not_supertype():
    base = value_type("BaseThing")
    child = value_type("ChildThing", parent=base)
    assert is_compatible(base, base)
    assert is_compatible(child, base)
    assert not is_compatible(base, child)


def test_any_accepts_every_value_type_but_no_sample_type():
    assert is_compatible(pt.DiffusionModel, pt.Any)
    assert is_compatible(pt.BatchSource, pt.Any)
    assert not is_compatible(pt.Image, pt.Any)
    assert is_compatible(pt.Image, pt.Field)


def test_lifetimes_never_mix():
    v = value_type("ValueX")
    s = sample_type("SampleX")
    assert v.lifetime == pt.VALUE and s.lifetime == pt.SAMPLE
    assert not is_compatible(v, s) and not is_compatible(s, v)
    with pytest.raises(ValueError, match="cannot inherit"):
        PortType("Broken", parent=v, lifetime=pt.SAMPLE)


def test_children_inherit_colour_unless_given_and_describe():
    parent = value_type("Coloured", color="#123456")
    assert value_type("Kid", parent=parent).color == "#123456"
    assert value_type("Kid2", parent=parent, color="#ffffff").color == "#ffffff"
    d = value_type("Kid3", parent=parent, doc="kid").describe()
    assert d == {"name": "Kid3", "parent": "Coloured", "color": "#123456", "lifetime": "value", "doc": "kid"}


def test_builtin_types_have_unique_names():
    names = [t.name for t in pt.BUILTIN_TYPES]
    assert len(names) == len(set(names))
    assert {"Any", "Field", "DiffusionModel", "BatchSource", "Hook", "Image", "Caption"} <= set(names)
