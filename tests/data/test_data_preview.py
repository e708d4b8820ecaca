"""Preview: the first items at any data node, the contact sheet, and 'nodetrainer preview'."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from datagraph_helpers import EXAMPLE_GRAPH


@pytest.fixture
def example(data_registry):
    from runtime.graph_file import load_graph

    return load_graph(EXAMPLE_GRAPH, data_registry)


def test_preview_records_at_a_data_node(example, data_registry, dataset):
    from runtime.data.preview import preview

    records = preview(example, "crop", 20, data_registry, [f"dataset={dataset.root}"])
    assert len(records) == len(dataset.good) + 1  # + the truncated one, which the scan cannot tell
    bad = [r for r in records if r.error]
    assert [r.path for r in bad] == [str(dataset.truncated)] and "unreadable image" in bad[0].error
    good = [r for r in records if not r.error]
    assert all(isinstance(r.image, Image.Image) and r.size == r.image.size for r in good)
    assert all(r.caption and r.path for r in good), "captions come from the source when the node has none"
    assert {"image", "mask", "crop_offset"} <= set(good[0].fields)
    # same seed as the batches node: the preview shows what training gets
    again = preview(example, "crop", 3, data_registry, [f"dataset={dataset.root}"])
    assert [r.image.tobytes() for r in again] == [r.image.tobytes() for r in records[:3]]


def test_preview_of_tensors_batches_and_concepts(example, data_registry, clean_dataset):
    from runtime.data.preview import preview

    sets = [f"dataset={clean_dataset.root}"]
    t = preview(example, "tensor", 2, data_registry, sets)
    assert t[0].image.mode == "RGB" and t[0].fields["image"].startswith("tensor 3x")
    b = preview(example, "batches", 2, data_registry, sets)
    assert {"image", "caption", "loss_weight", "bucket"} <= set(b[0].fields) and b[0].caption
    c = preview(example, "concept", 3, data_registry, sets)
    assert [r.caption for r in c] == [p.with_suffix(".txt").read_text() for p in sorted(clean_dataset.good)[:3]]
    assert c[0].image is not None and c[0].size == Image.open(sorted(clean_dataset.good)[0]).size


def test_preview_ignores_an_unfinished_rest_of_the_graph(example, data_registry, clean_dataset):
    from runtime.data.preview import preview
    from runtime.errors import ValidationError

    example.add_node("manifest", "util.write_manifest")  # its required input is not connected
    records = preview(example, "load", 2, data_registry, [f"dataset={clean_dataset.root}"])
    assert len(records) == 2
    with pytest.raises(ValidationError, match="no node 'nope'"):
        preview(example, "nope", 2, data_registry)
    example.add_node("scan", "util.scan_files", params={"folder": str(clean_dataset.root)})
    with pytest.raises(ValueError, match="no sample outputs"):
        preview(example, "scan", 2, data_registry)


def test_contact_sheet(example, data_registry, dataset, tmp_path):
    from runtime.data.preview import preview, write_contact_sheet

    records = preview(example, "flip", 8, data_registry, [f"dataset={dataset.root}"])
    out = write_contact_sheet(records, tmp_path / "sheet.png", thumb=64, columns=4)
    sheet = Image.open(out)
    assert sheet.size[0] == 4 * (64 + 16) and sheet.size[1] > 2 * 64
    assert len(sheet.convert("L").getcolors(256) or []) > 20, "pictures and text were drawn"


def test_cli_preview_writes_a_sheet(dataset, tmp_path, capsys):
    from runtime.cli import main

    out = tmp_path / "sheet.png"
    code = main(["preview", str(EXAMPLE_GRAPH), "crop", "--n", "4", "--out", str(out), "--set",
                 f"dataset={dataset.root}"])
    text = capsys.readouterr().out
    assert code == 0 and out.is_file() and Image.open(out).size[0] > 0
    lines = [ln for ln in text.splitlines() if ln.startswith("#")]
    assert len(lines) == 4
    assert lines[0].split() == ["#0", "72x56", "yellow,", "big,", "sun,", "flat"]  # big_yellow.jpg sorts first
    code = main(["preview", str(EXAMPLE_GRAPH), "crop", "--n", "2", "--json", "--set", f"dataset={dataset.root}"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and len(data["items"]) == 2 and data["items"][0]["size"]
    assert main(["preview", str(EXAMPLE_GRAPH), "nope"]) == 2
    assert "no node 'nope'" in capsys.readouterr().err


def test_cli_preview_reports_a_failing_stage_in_one_line(clean_dataset, tmp_path, capsys):
    from runtime.cli import main

    graph = tmp_path / "bad.yaml"
    graph.write_text(f"""format: nodetrainer.graph/1
name: bad
nodes:
  concept: {{type: data.concept@1, params: {{folder: {json.dumps(str(clean_dataset.root))}}}}}
  source: {{type: data.concepts@1, in: {{concepts: [concept.concept]}}}}
  load: {{type: data.load_image@1, in: {{path: source.path}}}}
  tensor: {{type: data.to_tensor@1, in: {{image: load.image}}}}
  rot: {{type: data.random_rotate@1, in: {{image: tensor.image}}, params: {{probability: 1.0}}}}
""")
    assert main(["preview", str(graph), "rot", "--n", "2"]) == 1
    err = capsys.readouterr().err.strip()
    assert "node 'rot' (data.random_rotate) failed on item 0" in err and "Traceback" not in err
    assert len(err.splitlines()) == 1
