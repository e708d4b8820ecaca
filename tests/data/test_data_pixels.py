"""Every image mode Pillow opens maps to the right 8-bit RGB values, or its item is skipped with a warning."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from datagraph_helpers import graph_of, items_at, pipeline, run_nodes

GREEN = (0, 255, 0)  # the load node's background: transparent pixels must come out in this colour
RAMP = [0, 64, 128, 255]  # what a 4-pixel ramp over each mode's range must become


def save(folder, name, img, **kw):
    img.save(folder / name, **kw)
    (folder / name).with_suffix(".txt").write_text(name)


def ramp16(mode="I;16"):
    """0, 1/4, 1/2 and all of 0..65535, in a 16-bit mode (big-endian built from bytes)."""
    values = np.array([[0, 16448, 32896, 65535]], dtype=">u2" if mode == "I;16B" else "<u2")
    return Image.frombytes(mode, (4, 1), values.tobytes())


def tensors(data_registry, tmp_path, folder, extensions, background="#00ff00"):
    """{file name: 0..255 pixel rows of the to_tensor output, or the SkipItem}, and the run's warnings."""
    nodes = pipeline(folder, t=("data.to_tensor", {"range": "0..1"}, {"image": "load.image"}))
    nodes["concept"][1]["extensions"] = extensions
    nodes["load"][1]["background"] = background
    ran = run_nodes(graph_of(nodes), data_registry, ["t", "source"], tmp=tmp_path)
    paths = [it["path"] for it in items_at(ran, "source")]
    out = {}
    for path, it in zip(paths, items_at(ran, "t")):
        name = path.rsplit("/", 1)[1]
        out[name] = it if isinstance(it, Exception) else (it["image"] * 255).permute(1, 2, 0).tolist()
    return out, ran.warnings()


def near(row, expected, tol=1.0):
    return len(row) == len(expected) and all(
        all(abs(a - b) <= tol for a, b in zip(px, want)) for px, want in zip(row, expected))


def pixels(img) -> list:
    return np.asarray(img).ravel().tolist()


def grey(values):
    return [(v, v, v) for v in values]


def test_high_bit_depth_images_scale_by_their_range(data_registry, tmp_path):
    folder = tmp_path / "wide"
    folder.mkdir()
    save(folder, "half16.png", Image.frombytes("I;16", (2, 2), np.full(4, 32768, "<u2").tobytes()))
    save(folder, "ramp16.png", ramp16())
    save(folder, "ramp16b.tiff", ramp16("I;16B"))
    key = ramp16()
    save(folder, "keyed16.png", key, transparency=32896)
    save(folder, "int32.tiff", Image.fromarray(np.array([[0, 16448, 32896, 65535]], np.int32)))
    (folder / "ramp.pgm").write_bytes(b"P5 4 1 65535\n" + np.array([0, 16448, 32896, 65535], ">u2").tobytes())
    (folder / "ramp.txt").write_text("pgm")
    save(folder, "float01.tiff", Image.fromarray(np.array([[0, 0.25, 0.5, 1.0]], np.float32)))
    save(folder, "float255.tiff", Image.fromarray(np.array([[0, 64, 128, 255]], np.float32)))
    assert Image.open(folder / "half16.png").mode == "I;16" and Image.open(folder / "int32.tiff").mode == "I"
    assert Image.open(folder / "ramp.pgm").mode == "I" and Image.open(folder / "float01.tiff").mode == "F"

    out, warnings = tensors(data_registry, tmp_path, folder, ["png", "tiff", "pgm"])
    assert not warnings
    # the outside-testing report: a 16-bit PNG at 50% grey became 1.0 (white)
    half = out["half16.png"]
    assert all(abs(v - 128) <= 1 for row in half for px in row for v in px)
    for name in ("ramp16.png", "ramp16b.tiff", "int32.tiff", "ramp.pgm", "float01.tiff", "float255.tiff"):
        assert near(out[name][0], grey(RAMP)), (name, out[name])
    assert near(out["keyed16.png"][0], grey([0, 64]) + [GREEN] + grey([255])), out["keyed16.png"]

    nodes = pipeline(folder, t=("data.to_tensor", {}, {"image": "load.image"}))
    nodes["concept"][1]["extensions"] = ["png"]
    ran = run_nodes(graph_of(nodes), data_registry, ["t", "source"], tmp=tmp_path)
    by_name = {s["path"].rsplit("/", 1)[1]: it for s, it in zip(items_at(ran, "source"), items_at(ran, "t"))}
    assert by_name["half16.png"]["image"].abs().max() < 0.01, "50% grey is about 0 in -1..1"


def test_eight_bit_modes_and_transparency_map_to_rgb(data_registry, tmp_path):
    folder = tmp_path / "eight"
    folder.mkdir()
    la = Image.new("LA", (2, 1))
    la.putpixel((0, 0), (128, 255))
    la.putpixel((1, 0), (200, 0))
    save(folder, "la.png", la)
    pal = Image.new("P", (2, 1))
    pal.putpalette([255, 0, 0, 0, 0, 255])
    pal.putpixel((1, 0), 1)
    save(folder, "palette.png", pal, transparency=1)
    cmyk = Image.new("CMYK", (4, 1))
    for x, px in enumerate([(0, 0, 0, 0), (0, 255, 255, 0), (0, 0, 0, 255), (0, 0, 0, 128)]):
        cmyk.putpixel((x, 0), px)
    save(folder, "cmyk.tiff", cmyk)
    one = Image.new("1", (2, 1))
    one.putpixel((1, 0), 1)
    save(folder, "bilevel.png", one)
    rgba = Image.new("RGBA", (2, 1), (10, 20, 30, 255))
    rgba.putpixel((1, 0), (200, 100, 50, 0))
    save(folder, "rgba.png", rgba)
    lum = Image.new("L", (2, 1), 77)
    lum.putpixel((1, 0), 9)
    save(folder, "keyed_l.png", lum, transparency=9)
    rgb = Image.new("RGB", (2, 1), (1, 2, 3))
    rgb.putpixel((0, 0), (90, 80, 70))
    save(folder, "keyed_rgb.png", rgb, transparency=(1, 2, 3))
    lab = Image.new("LAB", (2, 1), (255, 128, 128))
    lab.putpixel((1, 0), (0, 128, 128))
    save(folder, "lab.tiff", lab)
    save(folder, "ycbcr.tiff", Image.new("YCbCr", (2, 1), (128, 128, 128)))
    assert Image.open(folder / "cmyk.tiff").mode == "CMYK" and Image.open(folder / "lab.tiff").mode == "LAB"

    out, warnings = tensors(data_registry, tmp_path, folder, ["png", "tiff"])
    assert not warnings
    assert near(out["la.png"][0], [(128, 128, 128), GREEN])
    assert near(out["palette.png"][0], [(255, 0, 0), GREEN])
    assert near(out["cmyk.tiff"][0], [(255, 255, 255), (255, 0, 0), (0, 0, 0), (127, 127, 127)])
    assert near(out["bilevel.png"][0], [(0, 0, 0), (255, 255, 255)])
    assert near(out["rgba.png"][0], [(10, 20, 30), GREEN])
    assert near(out["keyed_l.png"][0], [(77, 77, 77), GREEN]), "a transparent grey value is transparent"
    assert near(out["keyed_rgb.png"][0], [(90, 80, 70), GREEN]), "a transparent colour is transparent"
    assert near(out["lab.tiff"][0], [(255, 255, 255), (0, 0, 0)], tol=2)
    assert near(out["ycbcr.tiff"][0], [(128, 128, 128)] * 2, tol=2)


def test_pixels_without_a_safe_mapping_skip_the_file_with_a_warning(data_registry, tmp_path):
    folder = tmp_path / "unsafe"
    folder.mkdir()
    save(folder, "fine.png", Image.new("RGB", (2, 1), (5, 6, 7)))
    save(folder, "huge_int.tiff", Image.fromarray(np.array([[0, 70000]], np.int32)))
    save(folder, "negative.tiff", Image.fromarray(np.array([[-5, 100]], np.int32)))
    save(folder, "hdr.tiff", Image.fromarray(np.array([[0, 300.0]], np.float32)))
    save(folder, "nan.tiff", Image.fromarray(np.array([[0, np.nan]], np.float32)))

    out, warnings = tensors(data_registry, tmp_path, folder, ["png", "tiff"])
    assert near(out["fine.png"][0], [(5, 6, 7)] * 2)
    for name in ("huge_int.tiff", "negative.tiff", "hdr.tiff", "nan.tiff"):
        assert isinstance(out[name], Exception) and "unsupported pixels" in out[name].reason, (name, out[name])
        assert out[name].path == str(folder / name)
    assert "70000" in out["huge_int.tiff"].reason and "NaN" in out["nan.tiff"].reason

    nodes = pipeline(folder, t=("data.to_tensor", {}, {"image": "load.image"}),
                     batches=("data.batches", {"batch_size": 8}, {"fields": ["t.image"]}))
    nodes["concept"][1]["extensions"] = ["png", "tiff"]
    ran = run_nodes(graph_of(nodes), data_registry, ["batches"], tmp=tmp_path)
    (batch,) = list(ran.out("batches", "batches").epoch(0))
    assert len(batch["_index"]) == 1
    warned = [w for w in ran.warnings() if w.startswith("skipped") and "unsupported pixels" in w]
    assert len(warned) == 4 and all(any(str(folder / n) in w for w in warned)
                                    for n in ("huge_int.tiff", "negative.tiff", "hdr.tiff", "nan.tiff"))


def test_masks_scale_by_their_range(data_registry, tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    for name in ("a", "b"):
        save(folder, f"{name}.png", Image.new("RGB", (4, 1), (50, 50, 50)))
    ramp16().save(folder / "a-masklabel.png")
    Image.fromarray(np.array([[0, 0.25, 0.5, 1.0]], np.float32)).save(tmp_path / "float.tiff")
    Image.fromarray(np.array([[0, -1.0, 0.5, 1.0]], np.float32)).save(tmp_path / "negative.tiff")
    nodes = pipeline(folder, mask=("data.load_mask", {}, {"path": "source.mask_path", "image": "load.image"}))
    nodes["concept"][1]["masks"] = True
    ran = run_nodes(graph_of(nodes), data_registry, ["mask", "source"], tmp=tmp_path)
    masks = {s["path"].rsplit("/", 1)[1]: m for s, m in zip(items_at(ran, "source"), items_at(ran, "mask"))}
    assert pixels(masks["a.png"]["mask"]) == RAMP, "a 16-bit mask at 50% is 50%, not white"
    assert pixels(masks["b.png"]["mask"]) == [255] * 4, "no mask file: all white"

    from nodes.data.loading import to_grey

    assert pixels(to_grey(Image.open(tmp_path / "float.tiff"))) == RAMP
    with pytest.raises(ValueError, match="float pixels from -1"):
        to_grey(Image.open(tmp_path / "negative.tiff"))


def test_to_tensor_maps_any_pil_mode_or_skips(tmp_path):
    from nodes.data.tensors import ToTensor
    from runtime.data import Item, SkipItem

    node = ToTensor()
    node.range, node.dtype = "0..1", "float32"
    mask16 = Image.frombytes("I;16", (4, 1), np.full(4, 32768, "<u2").tobytes())
    out = node.process(Item(0, 0, 1), ramp16(), mask16)
    assert [round(v * 255) for v in out["image"][0, 0].tolist()] == RAMP
    assert out["image"].shape == (3, 1, 4) and abs(float(out["mask"].max()) - 128 / 255) < 1e-6
    rgba = Image.new("RGBA", (1, 1), (255, 0, 0, 0))
    assert out and node.process(Item(0, 0, 1), rgba, None)["image"].flatten().tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(SkipItem, match="unsupported pixels: image mode 'La'"):
        node.process(Item(0, 0, 1), Image.new("La", (1, 1)), None)


def test_preview_thumbnails_of_files_follow_the_same_rule(data_registry, tmp_path):
    from runtime.data.preview import preview

    folder = tmp_path / "p"
    folder.mkdir()
    save(folder, "half16.png", Image.frombytes("I;16", (4, 4), np.full(16, 32768, "<u2").tobytes()))
    (record,) = preview(graph_of(pipeline(folder)), "source", 1, data_registry)
    assert record.image is not None and record.image.mode == "RGB"
    assert set(pixels(record.image)) == {128}, "the preview shows the 16-bit file as 50% grey, not white"
