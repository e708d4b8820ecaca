"""Preview of token and latent nodes (the quickstart's tokenize, encode_image and cache): token ids with the
text they decode to, latents decoded through their VAE or drawn as channel images, with their shape."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from runtime.paths import ROOT

QUICKSTART = ROOT / "graphs" / "quickstart.yaml"


@pytest.fixture(scope="module")
def quick():
    from runtime.graph_file import load_graph
    from runtime.registry import default_registry

    reg = default_registry()
    return load_graph(QUICKSTART, reg), reg


def test_token_ids_show_their_decoded_text_and_pieces(quick):
    from runtime.data.preview import preview

    graph, reg = quick
    records = preview(graph, "tokenize", 2, reg)
    for r in records:
        assert r.kind == "tokens" and r.image is None and r.shape == (77,) and r.size_text == "77 ids"
        assert r.text.replace(" ,", ",") == r.caption  # decoded with the node's tokenizer
        used = r.detail.split(" of ")[0]
        assert r.detail.startswith(f"{used} of 77 ids: ") and 5 < int(used) < 77, r.detail
        assert "<|startoftext|>" in r.detail and "circle</w>" in r.detail  # id=piece pairs, padding left out
        assert r.to_dict()["kind"] == "tokens" and r.to_dict()["text"] == r.text


def test_latents_are_decoded_through_the_vae_that_made_them(quick):
    from runtime.data.preview import preview

    graph, reg = quick
    for node in ("encode_image", "cache"):  # the cache hands the latent on: its VAE is still found
        r = preview(graph, node, 1, reg)[0]
        assert r.kind == "latent" and r.shape == (4, 32, 32) and r.size_text == "4x32x32"
        assert r.image.mode == "RGB" and r.image.size == (64, 64)  # the 64 px bucket the VAE encoded
        assert "decoded by the VAE of 'encode_image' (64x64)" in r.note
        assert r.caption.startswith("a black circle"), "the source's caption is shown for a node without one"
    assert "embedding" in r.fields and r.fields["embedding"].startswith("tensor 77x32")  # listed, not drawn


def test_latents_without_a_usable_vae_show_their_channels(quick, monkeypatch):
    from runtime.data import preview as pv

    def broken(z, vae):
        raise RuntimeError("wrong shape")

    monkeypatch.setattr(pv, "decode_latent", broken)
    graph, reg = quick
    r = pv.preview(graph, "encode_image", 1, reg)[0]
    assert r.kind == "latent" and r.image.mode == "L" and r.size_text == "4x32x32"
    assert r.image.size == (2 * 32 + 2, 2 * 32 + 2)  # 4 channels in a 2x2 grid
    assert "channels 0-3" in r.note and "VAE decode failed: RuntimeError: wrong shape" in r.note
    import torch

    z = torch.zeros(4, 8, 8)
    z[1] = 1.0
    z[2, 0, 0] = 5.0  # each channel is stretched to its own range
    grid = pv.channel_image(z)
    assert grid.getpixel((0, 0)) == 128 and grid.getpixel((9, 0)) == 128  # flat channels are mid-grey
    assert grid.getpixel((0, 9)) == 255 and grid.getpixel((1, 9)) == 0


def test_cli_preview_prints_shapes_and_decoded_tokens(quick, capsys, tmp_path):
    from runtime.cli import main

    assert main(["preview", str(QUICKSTART), "tokenize", "--n", "1"]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.split()[:3] == ["#0", "77", "ids"] and "circle" in line
    out = tmp_path / "sheet.png"
    assert main(["preview", str(QUICKSTART), "cache", "--n", "1", "--json", "--out", str(out)]) == 0
    item = json.loads(capsys.readouterr().out)["items"][0]
    assert item["kind"] == "latent" and item["shape"] == [4, 32, 32] and item["size_text"] == "4x32x32"
    assert Image.open(out).size[0] > 0


def test_worker_thumbnails_and_dialog_cells(qtbot, window, tmp_path, capsys):
    """The worker's JSON lines for tokens and latents, shown by the dialog: text, ids, shape, picture."""
    from editor import preview_worker
    from editor.preview import PreviewDialog

    assert preview_worker.thumbnail(Image.new("L", (66, 66))).size == (132, 132)  # small channels enlarged
    window.open_file(QUICKSTART)
    dialog = PreviewDialog(window.doc, "tokenize", window)
    qtbot.addWidget(dialog)
    for node in ("tokenize", "cache"):
        assert preview_worker.main([str(QUICKSTART), node, "--count", "1", "--out", str(tmp_path)]) == 0
        for line in capsys.readouterr().out.splitlines():
            dialog._add(json.loads(line)["item"])
    tok, lat = dialog.table.item(0, 1).text(), dialog.table.item(1, 1).text()
    assert tok.startswith("\u201ca black circle") and "of 77 ids: " in tok
    assert dialog.table.item(0, 2).text() == "77 ids" and dialog.table.item(0, 0).icon().isNull()
    assert "decoded by the VAE" in lat and dialog.table.item(1, 2).text() == "4\u00d732\u00d732"
    assert not dialog.table.item(1, 0).icon().isNull()
    dialog.close()
