"""Reduced-scale JPEG decoding for a known bucket (data.load_image's 'bucket' input, runtime.data.decode)."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from PIL import Image

from datagraph_helpers import graph_of, items_at, pipeline, run_nodes
from runtime.data.decode import DRAFT_GAP, cover_size, open_image

ORIENTATION = 0x0112


@functools.lru_cache(maxsize=16)
def textured(size, seed=0):
    """Photo-like test content: noise octaves with amplitude ~ cell size (a 1/f spectrum), RGB."""
    rng = np.random.default_rng(seed)
    w, h = size
    chans = []
    for _ in range(3):
        acc = 128.0 + 2.5 * rng.standard_normal((h, w), np.float32)
        for cell, amp in ((256, 40), (64, 20), (16, 10), (4, 5)):
            small = rng.standard_normal((max(2, h // cell), max(2, w // cell)), np.float32)
            acc += amp * np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR))
        chans.append(acc)
    return Image.fromarray(np.clip(np.stack(chans, -1), 0, 255).astype(np.uint8))


def save_jpeg(path, size, orientation=None, seed=0, mode="RGB"):
    img = textured(size, seed)
    img = img if mode == "RGB" else img.convert(mode)
    save = {"quality": 92}
    if orientation:
        exif = Image.Exif()
        exif[ORIENTATION] = orientation
        save["exif"] = exif
    img.save(path, **save)
    return path


def psnr(a, b) -> float:
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return 10 * math.log10(255.0 ** 2 / max(float((d * d).mean()), 1e-12))


def full_then_resize(path, size, resample=Image.Resampling.LANCZOS):
    return open_image(path).convert("RGB").resize(size, resample)


# -- the decoder -------------------------------------------------------------------

@pytest.mark.parametrize("bucket", [(64, 48), (128, 96), (200, 150)])
def test_draft_picks_the_largest_reduction_that_keeps_the_margin(tmp_path, bucket):
    p = save_jpeg(tmp_path / "big.jpg", (1024, 768))
    img = open_image(p, bucket)
    cw, ch = cover_size((1024, 768), bucket)
    w, h = img.size
    assert w >= DRAFT_GAP * cw and h >= DRAFT_GAP * ch, "never below the margin over the covering size"
    scale = 1024 // w
    assert scale in (2, 4, 8), f"not reduced: {img.size}"
    if scale < 8:  # the next DCT scale would have gone below the margin
        assert 1024 / (2 * scale) < DRAFT_GAP * cw or 768 / (2 * scale) < DRAFT_GAP * ch
    assert img.mode == "RGB"


def test_small_jpegs_and_other_formats_decode_in_full(tmp_path):
    small = save_jpeg(tmp_path / "small.jpg", (240, 180))
    img = textured((1024, 768))
    png, webp = tmp_path / "big.png", tmp_path / "big.webp"
    img.save(png)
    img.save(webp, quality=90)
    for p in (small, png, webp):
        full, reduced = open_image(p), open_image(p, (128, 96))  # the JPEG is below 2 x 1.6 x that
        assert reduced.size == full.size and reduced.mode == full.mode, p.name
        assert reduced.tobytes() == full.tobytes(), p.name


def test_draft_decode_is_close_to_a_full_decode(tmp_path):
    p = save_jpeg(tmp_path / "big.jpg", (1024, 768), seed=3)
    bucket = (160, 120)  # reduced to exactly the margin: the closest a draft decode comes to its bucket
    img = open_image(p, bucket)
    assert img.size == (256, 192)
    ours = img.resize(bucket, Image.Resampling.BICUBIC)
    assert psnr(ours, full_then_resize(p, bucket)) >= 38.0


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_rotated_jpegs_come_out_upright(tmp_path, orientation):
    stored = (1280, 640)
    p = save_jpeg(tmp_path / f"o{orientation}.jpg", stored, orientation=orientation, seed=orientation)
    full = open_image(p)
    upright = full.size
    assert upright == (stored[::-1] if orientation in (6, 8) else stored)
    bucket = (96, 192) if orientation in (6, 8) else (192, 96)
    img = open_image(p, bucket)
    cw, ch = cover_size(upright, bucket)
    # 1/4 is the largest scale with the margin, in upright terms; a request left in stored terms gets 1/2
    assert img.size == (upright[0] // 4, upright[1] // 4), "reduced and turned like the full decode"
    assert img.size[0] >= DRAFT_GAP * cw and img.size[1] >= DRAFT_GAP * ch
    assert psnr(img.resize(bucket, Image.Resampling.BICUBIC), full.resize(bucket, Image.Resampling.LANCZOS)) >= 38.0


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_grey_and_cmyk_jpegs_keep_their_mode(tmp_path, mode):
    p = save_jpeg(tmp_path / f"{mode}.jpg", (1024, 768), mode=mode)
    full, img = open_image(p), open_image(p, (64, 48))
    assert img.mode == full.mode == mode and img.size[0] < full.size[0]
    from runtime.data.pixels import to_rgb

    ours = to_rgb(img, (255, 255, 255)).resize((64, 48), Image.Resampling.BICUBIC)
    assert psnr(ours, to_rgb(full, (255, 255, 255)).resize((64, 48), Image.Resampling.LANCZOS)) >= 38.0


def test_decoding_is_deterministic(tmp_path):
    p = save_jpeg(tmp_path / "big.jpg", (1024, 768))
    a, b = open_image(p, (100, 75)), open_image(p, (100, 75))
    assert a.size == b.size == (256, 192) and a.tobytes() == b.tobytes()


# -- the node --------------------------------------------------------------------------

def bucketed(folder, reduced=True, **extra):
    nodes = pipeline(folder,
                     bucket=("data.aspect_bucket", {"resolution": 192, "quantization": 16}, {"size": "source.size"}),
                     crop=("data.scale_crop", {}, {"image": "load.image", "bucket": "bucket.bucket"}), **extra)
    if reduced:
        nodes["load"] = ("data.load_image", {}, {"path": "source.path", "bucket": "bucket.bucket"})
    return nodes


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    save_jpeg(folder / "a_wide.jpg", (1024, 768), seed=1)
    save_jpeg(folder / "b_turned.jpg", (1024, 768), orientation=6, seed=2)
    save_jpeg(folder / "c_small.jpg", (240, 180), seed=3)
    textured((768, 768), 4).save(folder / "d_square.png")
    for p in folder.iterdir():
        p.with_suffix(".txt").write_text("a photo")
    return folder


def crops(ran):
    return [(it["image"], it["crop_offset"]) for it in items_at(ran, "crop")]


def test_load_image_with_bucket_gives_bucket_sized_crops_close_to_a_full_decode(data_registry, photos, tmp_path):
    fast = run_nodes(graph_of(bucketed(photos)), data_registry, ["crop", "load", "bucket"], tmp=tmp_path)
    full = run_nodes(graph_of(bucketed(photos, reduced=False)), data_registry, ["crop", "load"], tmp=tmp_path)
    buckets = [it["bucket"] for it in items_at(fast, "bucket")]
    loaded = [it["image"] for it in items_at(fast, "load")]
    loaded_full = [it["image"] for it in items_at(full, "load")]
    assert [im.size[0] < f.size[0] for im, f in zip(loaded, loaded_full)] == [True, True, False, False]
    for (img, off), (ref, ref_off), bucket in zip(crops(fast), crops(full), buckets):
        assert img.size == tuple(bucket) and img.mode == "RGB"
        assert off == ref_off
        assert psnr(img, ref) >= 38.0
    assert crops(fast)[1][0].size[1] > crops(fast)[1][0].size[0], "the EXIF-turned photo is upright"
    for k in (2, 3):  # too small for a reduced scale / not a JPEG: the same pixels as without the bucket
        assert crops(fast)[k][0].tobytes() == crops(full)[k][0].tobytes()


def test_reduced_decoding_is_deterministic_across_runs(data_registry, photos, tmp_path):
    a = [img.tobytes() for img, _ in crops(run_nodes(graph_of(bucketed(photos)), data_registry, ["crop"], tmp=tmp_path))]
    b = [img.tobytes() for img, _ in crops(run_nodes(graph_of(bucketed(photos)), data_registry, ["crop"], tmp=tmp_path))]
    assert a == b


def test_truncated_large_jpeg_is_skipped_with_the_bucket(data_registry, tmp_path):
    folder = tmp_path / "t"
    folder.mkdir()
    p = save_jpeg(folder / "cut.jpg", (1024, 768))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    save_jpeg(folder / "fine.jpg", (1024, 768), seed=5)
    for q in folder.iterdir():
        q.with_suffix(".txt").write_text("a photo")
    ran = run_nodes(graph_of(bucketed(folder)), data_registry, ["load"], tmp=tmp_path)
    out = items_at(ran, "load")
    from runtime.data import SkipItem

    assert isinstance(out[0], SkipItem) and "unreadable image" in str(out[0])
    assert out[1]["image"].size[0] < 1024


def cache_nodes(folder, cache_dir, reduced):
    return bucketed(folder, reduced=reduced,
                    tensor=("data.to_tensor", {}, {"image": "crop.image"}),
                    cache=("data.disk_cache", {"folder": str(cache_dir)}, {"fields": ["tensor.image"]}),
                    batches=("data.batches", {"batch_size": 2}, {"fields": ["cache.image"], "bucket": "bucket.bucket"}))


def test_cache_key_changes_with_the_decode_mode(data_registry, photos, tmp_path):
    from runtime.data.keys import field_key

    keys = {}
    for reduced in (False, True):
        ran = run_nodes(graph_of(cache_nodes(photos, tmp_path / "cache", reduced)), data_registry,
                        ["batches", "tensor"], tmp=tmp_path)
        keys[reduced] = field_key(ran.out("tensor", "image"))
        list(ran.out("batches", "batches").epoch(0))
        found = [m for m in ran.logs() if "cache ready for epoch 0" in m]
        assert found and "0 of 4 item(s) found, 4 computed" in found[0], found
    assert keys[False] != keys[True]
    ran = run_nodes(graph_of(cache_nodes(photos, tmp_path / "cache", True)), data_registry, ["batches"], tmp=tmp_path)
    list(ran.out("batches", "batches").epoch(0))
    assert any("4 of 4 item(s) found" in m for m in ran.logs()), "the same decode mode reuses its entries"


def test_a_bad_bucket_value_names_the_input(tmp_path):
    from nodes.data.loading import LoadImage
    from runtime.data import Item

    node = LoadImage()
    node.background = "white"
    node.setup(None)
    p = save_jpeg(tmp_path / "big.jpg", (1024, 768))
    with pytest.raises(ValueError, match="input 'bucket': bucket sides must be at least 1, got 0x48"):
        node.process(Item(0, 0, 0), str(p), (0, 48))
    assert node.process(Item(0, 0, 0), str(p), [100, 75])["image"].size == (256, 192), "a list is a bucket too"
