"""A data stage's cache key ignores optional inputs left unconnected, so a node that gains one keeps its caches."""

from runtime.data.engine import Stage
from runtime.data.keys import stage_key


class _Node:
    """Stands in for a data node instance: no params."""


def test_an_unconnected_optional_input_does_not_change_the_key():
    before = Stage(_Node(), "load", "data.load_image", 1, inputs={}, values={"background": (1, 2, 3)})
    after = Stage(_Node(), "load", "data.load_image", 1, inputs={"bucket": None}, values={"background": (1, 2, 3)})
    assert after.values["bucket"] is None  # the stage still hands the unconnected input on as None
    assert stage_key(after) == stage_key(before)
    other = Stage(_Node(), "load", "data.load_image", 1, inputs={}, values={"background": (9, 9, 9)})
    assert stage_key(other) != stage_key(before)  # a value that is set still counts
