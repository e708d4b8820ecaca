"""The generic stage nodes: concepts, loading, captions, bucketing, scale & crop, augmentation, tensors."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from datagraph_helpers import gradient, graph_of, items_at, make_dataset, pipeline, run_nodes, write_image


def run(data_registry, nodes, target, tmp_path, *sets):
    targets = [target] if isinstance(target, str) else list(target)
    return run_nodes(graph_of(nodes), data_registry, targets, list(sets), tmp=tmp_path)


# -- concepts -------------------------------------------------------------------

def test_concept_scan_recursive_extensions_and_merge(data_registry, clean_dataset, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    write_image(other / "a.bmp", (20, 10), (1, 2, 3), "bmp caption")
    write_image(other / "b.gif", (20, 10), (1, 2, 3), "not an allowed extension")
    nodes = {
        "flat": ("data.concept", {"folder": str(clean_dataset.root)}, {}),
        "deep": ("data.concept", {"folder": str(clean_dataset.root), "recursive": True}, {}),
        "bmp": ("data.concept", {"folder": str(other), "loss_weight": 2.0}, {}),
        "source": ("data.concepts", {}, {"concepts": ["flat.concept", "bmp.concept", "deep.concept"]}),
    }
    items = items_at(run(data_registry, nodes, "source", tmp_path), "source")
    n = len(clean_dataset.good)
    assert len(items) == (n - 1) + 1 + n  # the flat scan misses sub/deep_white.png
    paths = [it["path"] for it in items]
    assert not any("deep_white" in p for p in paths[: n - 1])
    assert paths[n - 1].endswith("a.bmp") and items[n - 1]["caption"] == "bmp caption"
    assert items[n - 1]["loss_weight"] == 2.0 and items[0]["loss_weight"] == 1.0
    assert [it["concept"] for it in items] == [0] * (n - 1) + [1] + [2] * n
    assert any(p.endswith("sub/deep_white.png") for p in paths[n:])


def test_caption_sources(data_registry, clean_dataset, tmp_path):
    def captions(**params):
        nodes = pipeline(clean_dataset.root)
        nodes["concept"][1].update(params)
        return {it["path"].rsplit("/", 1)[1]: it["caption"]
                for it in items_at(run(data_registry, nodes, "source", tmp_path), "source")}

    assert captions()["wide_red.png"] == "red, wide, stripe, flat"
    assert captions(caption="filename")["wide_red.png"] == "wide_red"
    assert set(captions(caption="fixed", text="a photo of sks").values()) == {"a photo of sks"}


def test_missing_caption_policies(data_registry, dataset, tmp_path):
    def items(policy):
        nodes = pipeline(dataset.root)
        nodes["concept"][1].update(missing_caption=policy, text="fallback")
        return {it["path"]: it["caption"] for it in items_at(run(data_registry, nodes, "source", tmp_path), "source")}

    assert str(dataset.uncaptioned) not in items("skip")
    assert items("filename")[str(dataset.uncaptioned)] == "uncaptioned"
    assert items("fixed")[str(dataset.uncaptioned)] == "fallback"
    assert items("empty")[str(dataset.uncaptioned)] == ""


def test_balancing_repeats_and_samples(data_registry, clean_dataset, tmp_path):
    n = len(clean_dataset.good)

    def paths(epoch, **params):
        nodes = pipeline(clean_dataset.root)
        nodes["concept"][1].update(params)
        return [it["path"] for it in items_at(run(data_registry, nodes, "source", tmp_path), "source", epoch=epoch)]

    twice = paths(0, balancing=2.0)
    assert len(twice) == 2 * n and twice[:n] == twice[n:]
    half0, half1 = paths(0, balancing=0.5), paths(1, balancing=0.5)
    assert len(half0) == round(n * 0.5) and len(set(half0)) == len(half0)
    assert half0 != half1, "a fractional remainder is a fresh subset each epoch"
    assert len(paths(0, balancing=3, balancing_strategy="samples")) == 3


def test_masks_are_found_and_loaded(data_registry, tmp_path):
    ds = make_dataset(tmp_path / "m", bad=False, masks=True)
    nodes = pipeline(ds.root, mask=("data.load_mask", {}, {"path": "source.mask_path", "image": "load.image"}))
    nodes["concept"][1]["masks"] = True
    items = items_at(run(data_registry, nodes, "mask", tmp_path), "mask")
    src = items_at(run(data_registry, nodes, "source", tmp_path), "source")
    masked = [k for k, it in enumerate(src) if it["mask_path"]]
    assert [src[k]["path"] for k in masked] == [str(ds.masked)]
    assert items[masked[0]]["mask"].getextrema() == (0, 0)
    others = [it["mask"] for k, it in enumerate(items) if k not in masked]
    assert all(m.getextrema() == (255, 255) for m in others)
    assert not any("masklabel" in it["path"] for it in src), "mask files are not images of the concept"


# -- loading ----------------------------------------------------------------------

def test_load_image_applies_exif_and_composites_alpha(data_registry, clean_dataset, tmp_path):
    nodes = pipeline(clean_dataset.root)
    nodes["load"][1]["background"] = "#00ff00"
    ran = run(data_registry, nodes, "load", tmp_path)
    src = items_at(run(data_registry, nodes, "source", tmp_path), "source")
    by_name = {s["path"].rsplit("/", 1)[1]: it["image"] for s, it in zip(src, items_at(ran, "load"))}
    rotated = by_name["rotated_orange.jpg"]
    assert rotated.size == (40, 80) and rotated.mode == "RGB"
    assert next(s["size"] for s in src if s["path"].endswith("rotated_orange.jpg")) == (40, 80)
    clear = by_name["clear_pink.png"]
    assert clear.mode == "RGB" and clear.getpixel((0, 10)) == (0, 255, 0)
    assert clear.getpixel((47, 10)) != (0, 255, 0)


def test_load_text_lines(data_registry, tmp_path):
    folder = tmp_path / "t"
    folder.mkdir()
    for k in range(4):
        write_image(folder / f"i{k}.png", (8, 8), (9, 9, 9), "first line\nsecond line\nthird line")

    def caps(lines, epoch=0):
        nodes = pipeline(folder, text=("data.load_text", {"lines": lines}, {"path": "source.text_path"}))
        return [it["caption"] for it in items_at(run(data_registry, nodes, "text", tmp_path), "text", epoch=epoch)]

    assert caps("all")[0] == "first line\nsecond line\nthird line"
    assert set(caps("first")) == {"first line"}
    rand = caps("random") + caps("random", epoch=1)
    assert set(rand) <= {"first line", "second line", "third line"} and len(set(rand)) > 1


# -- captions ---------------------------------------------------------------------

def caption_items(data_registry, tmp_path, stage, params, caption, epochs=(0,)):
    folder = tmp_path / "c"
    folder.mkdir(exist_ok=True)
    for k in range(6):
        write_image(folder / f"i{k}.png", (8, 8), (9, 9, 9), caption)
    nodes = pipeline(folder, op=(stage, params, {"caption": "source.caption"}))
    ran = run(data_registry, nodes, "op", tmp_path)
    return [it["caption"] for e in epochs for it in items_at(ran, "op", epoch=e)]


def test_shuffle_tags_keeps_the_first_n(data_registry, tmp_path):
    out = caption_items(data_registry, tmp_path, "data.shuffle_tags", {"keep_first": 2},
                        "sks, person, a, b, c, d, e", epochs=(0, 1))
    assert all(c.startswith("sks, person, ") for c in out)
    assert all(sorted(c.split(", ")) == sorted("sks, person, a, b, c, d, e".split(", ")) for c in out)
    assert len(set(out)) > 1


def test_drop_tags_with_probability(data_registry, tmp_path):
    caption = "sks, " + ", ".join(f"t{k}" for k in range(20))
    none = caption_items(data_registry, tmp_path, "data.drop_tags", {"probability": 0.0, "keep_first": 1}, caption)
    assert set(none) == {caption}
    half = caption_items(data_registry, tmp_path, "data.drop_tags", {"probability": 0.5, "keep_first": 1}, caption)
    counts = [len(c.split(", ")) - 1 for c in half]
    assert all(c.startswith("sks") for c in half) and 2 <= sum(counts) / len(counts) <= 18
    allgone = caption_items(data_registry, tmp_path, "data.drop_tags", {"probability": 1.0, "keep_first": 1}, caption)
    assert set(allgone) == {"sks"}


def test_caption_dropout_empties_whole_captions_with_its_probability_per_epoch(data_registry, tmp_path):
    caption = "sks, a person, smiling"
    epochs = tuple(range(8))
    never = caption_items(data_registry, tmp_path, "data.caption_dropout", {"probability": 0.0}, caption, epochs)
    assert set(never) == {caption}
    always = caption_items(data_registry, tmp_path, "data.caption_dropout", {"probability": 1.0}, caption, epochs)
    assert set(always) == {""}
    half = caption_items(data_registry, tmp_path, "data.caption_dropout", {"probability": 0.5}, caption, epochs)
    assert set(half) == {"", caption} and 10 <= half.count("") <= 38  # 48 draws
    again = caption_items(data_registry, tmp_path, "data.caption_dropout", {"probability": 0.5}, caption, epochs)
    assert again == half  # seeded by the run seed, node, epoch and item


def test_replace_text_plain_and_regex(data_registry, tmp_path):
    assert caption_items(data_registry, tmp_path, "data.replace_text", {"find": "dog", "replace": "sks dog"},
                         "a dog and a dog")[0] == "a sks dog and a sks dog"
    assert caption_items(data_registry, tmp_path, "data.replace_text",
                         {"find": r"(\w+) dog", "replace": r"\1 sks", "regex": True}, "a red dog")[0] == "a red sks"


def test_bad_params_are_errors_naming_node_and_param(data_registry, tmp_path):
    with pytest.raises(Exception) as e:
        caption_items(data_registry, tmp_path, "data.replace_text", {"find": "(", "regex": True}, "x")
    assert "'op'" in str(e.value) and "param 'find'" in str(e.value)


# -- bucketing ----------------------------------------------------------------------

def test_bucket_list_and_quantization():
    from nodes.data.bucketing import bucket_list, nearest_bucket, parse_aspect

    buckets = bucket_list(512, 64, [parse_aspect(a) for a in ("1:1", "4:3", "2:1")])
    assert (512, 512) in buckets and (576, 448) in buckets and (448, 576) in buckets
    assert (704, 384) in buckets and (384, 704) in buckets
    assert all(w % 64 == 0 and h % 64 == 0 for w, h in buckets)
    assert all(0.8 < w * h / 512 ** 2 < 1.2 for w, h in buckets)
    assert nearest_bucket((1000, 490), buckets) == (704, 384)
    assert nearest_bucket((300, 400), buckets) == (448, 576)
    with pytest.raises(ValueError, match="aspect ratio"):
        parse_aspect("wide")


def test_small_buckets_merge_into_the_nearest(data_registry, clean_dataset, tmp_path):
    nodes = pipeline(clean_dataset.root, bucket=("data.aspect_bucket", {"resolution": 64, "quantization": 8},
                                                  {"size": "source.size"}))
    plain = [it["bucket"] for it in items_at(run(data_registry, nodes, "bucket", tmp_path), "bucket")]
    nodes["bucket"][1]["min_items"] = 3
    merged = [it["bucket"] for it in items_at(run(data_registry, nodes, "bucket", tmp_path), "bucket")]
    counts = {b: merged.count(b) for b in set(merged)}
    assert len(set(plain)) > len(counts) and min(counts.values()) >= 3


def test_scale_crop_center_random_and_jitter(data_registry, tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    write_image(folder / "wide.png", (200, 100), (200, 100, 50), "wide")
    nodes = pipeline(folder, bucket=("data.aspect_bucket", {"resolution": 64, "quantization": 8, "aspects": ["1:1"]},
                                     {"size": "source.size"}),
                     crop=("data.scale_crop", {}, {"image": "load.image", "bucket": "bucket.bucket"}))

    def crop(epoch=0, **params):
        nodes["crop"] = ("data.scale_crop", params, {"image": "load.image", "bucket": "bucket.bucket"})
        it = items_at(run(data_registry, nodes, "crop", tmp_path), "crop", epoch=epoch)[0]
        return it["image"], it["crop_offset"]

    img, off = crop()
    assert img.size == (64, 64) and off == (32, 0)  # scaled to 128x64, centred
    expected = gradient((200, 100), (200, 100, 50), seed=len("wide.png")).resize(
        (64, 64), Image.Resampling.BICUBIC, box=(50, 0, 150, 100))
    assert img.tobytes() == expected.tobytes()
    offsets = {crop(e, crop="random")[1] for e in range(6)}
    assert len(offsets) > 1 and all(0 <= x <= 64 and y == 0 for x, y in offsets)
    jit = {crop(e, jitter=0.5)[1][0] for e in range(6)}
    assert len(jit) > 1 and all(16 <= x <= 48 for x in jit)


# -- augmentation and tensors ---------------------------------------------------------

def aug(data_registry, tmp_path, stage, params, epoch=0):
    folder = tmp_path / "a"
    folder.mkdir(exist_ok=True)
    write_image(folder / "x.png", (48, 32), (200, 80, 40), "x")
    nodes = pipeline(folder, op=(stage, params, {"image": "load.image"}))
    ran = run(data_registry, nodes, ["op", "load"], tmp_path)
    return items_at(ran, "load")[0]["image"], items_at(ran, "op", epoch=epoch)[0]["image"]


@pytest.mark.parametrize("stage,params", [
    ("data.random_flip", {}), ("data.random_rotate", {"max_angle": 30}), ("data.random_brightness", {"strength": 0.5}),
    ("data.random_contrast", {"strength": 0.5}), ("data.random_saturation", {"strength": 0.5}),
    ("data.random_hue", {"strength": 0.3}),
])
def test_augmentations_apply_with_their_probability(data_registry, tmp_path, stage, params):
    src, never = aug(data_registry, tmp_path, stage, {**params, "probability": 0.0})
    assert never.tobytes() == src.tobytes()
    _, always = aug(data_registry, tmp_path, stage, {**params, "probability": 1.0})
    assert always.size == src.size and always.mode == "RGB" and always.tobytes() != src.tobytes()


def test_flip_mirrors_image_and_mask(data_registry, tmp_path):
    src, out = aug(data_registry, tmp_path, "data.random_flip", {"probability": 1.0})
    assert out.tobytes() == src.transpose(Image.Transpose.FLIP_LEFT_RIGHT).tobytes()
    from nodes.data.augment import RandomFlip
    from runtime.data import Item

    t = torch.arange(6.0).reshape(1, 2, 3)
    mask = Image.new("L", (3, 2))
    mask.putpixel((0, 0), 255)
    flip = RandomFlip()
    flip.probability = 1.0
    out = flip.process(Item(0, 0, 1), t, mask)
    assert out["image"].tolist() == [[[2, 1, 0], [5, 4, 3]]] and out["mask"].getpixel((2, 0)) == 255


def test_to_tensor_ranges_and_dtypes(data_registry, tmp_path):
    folder = tmp_path / "t"
    folder.mkdir()
    Image.new("RGB", (4, 2), (255, 0, 128)).save(folder / "c.png")
    (folder / "c.txt").write_text("c")

    def tensor(**params):
        nodes = pipeline(folder, t=("data.to_tensor", params, {"image": "load.image"}))
        return items_at(run(data_registry, nodes, "t", tmp_path), "t")[0]["image"]

    t = tensor()
    assert t.shape == (3, 2, 4) and t.dtype == torch.float32 and t.is_contiguous()
    assert t[0].eq(1).all() and t[1].eq(-1).all() and abs(float(t[2, 0, 0]) - (128 / 127.5 - 1)) < 1e-6
    u = tensor(range="0..1", dtype="float16")
    assert u.dtype == torch.float16 and u[0].eq(1).all() and u[1].eq(0).all()
