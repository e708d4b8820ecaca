"""Extreme param values are refused before a run, one line naming node and param; nothing grows without limit."""

from __future__ import annotations

import pytest

from datagraph_helpers import graph_of, pipeline, run_nodes


def problems(data_registry, folder, **params):
    """Validation errors of concept -> source -> bucket with ``params`` ({node: {param: value}})."""
    from runtime.validate import validate

    nodes = pipeline(folder, bucket=("data.aspect_bucket", {"resolution": 64, "quantization": 8},
                                     {"size": "source.size"}))
    for node_id, values in params.items():
        nodes[node_id][1].update(values)
    return [(p.node, p.field, p.message) for p in validate(graph_of(nodes), data_registry, []).errors]


def test_counts_and_sizes_have_bounds(data_registry, clean_dataset):
    root = clean_dataset.root
    assert problems(data_registry, root) == []
    (found,) = problems(data_registry, root, concept={"balancing": 1e300})
    assert found[:2] == ("concept", "param 'balancing'") and "maximum" in found[2]
    (found,) = problems(data_registry, root, concept={"balancing": 5, "balancing_strategy": "samples",
                                                      "loss_weight": 1e300})
    assert found[:2] == ("concept", "param 'loss_weight'")
    (found,) = problems(data_registry, root, bucket={"resolution": 10000})
    assert found[:2] == ("bucket", "param 'resolution'") and "maximum" in found[2]
    (found,) = problems(data_registry, root, bucket={"resolution": 32, "quantization": 64})
    assert found[:2] == ("bucket", "param 'quantization'") and "resolution 32" in found[2]


@pytest.mark.parametrize("aspects,why", [
    (["1e-320"], "not an aspect ratio"), (["0:1"], "above 0"), (["1:0"], "above 0"), (["1e308:1"], "not an aspect"),
    (["nan"], "not an aspect"), (["inf"], "not an aspect"), (["4_3"], "not an aspect"), (["17:1"], "outside"),
    (["1:17"], "outside"), (["9" * 400 + ":1"], "outside"), (["4:3", "-1:2"], "not an aspect"), ([], "at least one"),
    (["1:1"] * 257, "at most"),
])
def test_aspects_are_parsed_strictly(data_registry, clean_dataset, aspects, why):
    (found,) = problems(data_registry, clean_dataset.root, bucket={"aspects": aspects})
    assert found[:2] == ("bucket", "param 'aspects'") and why in found[2], found
    assert "\n" not in found[2] and len(found[2]) < 200
    from nodes.data.bucketing import parse_aspect

    assert parse_aspect("4:3") == 4 / 3 and parse_aspect(" 16 : 9 ") == 16 / 9  # good ratios still parse
    assert parse_aspect("1.5") == 1.5 and parse_aspect(".5") == 0.5 and parse_aspect("16:1") == 16


def test_items_per_epoch_are_bounded(data_registry, tmp_path):
    from PIL import Image

    from nodes.data.concepts import MAX_ITEMS

    folder = tmp_path / "two"
    folder.mkdir()
    for k in range(2):
        Image.new("RGB", (8, 8)).save(folder / f"{k}.png")
        (folder / f"{k}.txt").write_text("x")
    nodes = pipeline(folder)
    nodes["concept"][1]["balancing"] = MAX_ITEMS * 0.6  # within the param's bounds, too many with 2 images
    with pytest.raises(Exception) as e:
        run_nodes(graph_of(nodes), data_registry, ["concept"], tmp=tmp_path)
    assert "'concept'" in str(e.value) and "param 'balancing'" in str(e.value) and str(MAX_ITEMS) in str(e.value)

    nodes = pipeline(folder, other=("data.concept", {"folder": str(folder), "balancing": MAX_ITEMS * 0.3}, {}))
    nodes["concept"][1]["balancing"] = MAX_ITEMS * 0.3
    nodes["source"][2]["concepts"] = ["concept.concept", "other.concept"]
    with pytest.raises(Exception) as e:
        run_nodes(graph_of(nodes), data_registry, ["source"], tmp=tmp_path)
    assert "'source'" in str(e.value) and "items per epoch" in str(e.value) and "balancing" in str(e.value)
