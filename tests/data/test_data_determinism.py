"""Every random data stage draws from a generator seeded by (run seed, node id, epoch, item), never a global one."""

from __future__ import annotations

import random

import numpy as np
import torch

from datagraph_helpers import graph_of, items_at, pipeline, run_nodes, write_image

#: node id -> (type, params, inputs, output port): every random stage of nodes/data, twice where the node id
#: alone must change the draws
RANDOM_STAGES = {
    "crop": ("data.scale_crop", {"crop": "random"}, {"image": "load.image", "bucket": "bucket.bucket"}, "image"),
    "jitter": ("data.scale_crop", {"jitter": 0.8}, {"image": "load.image", "bucket": "bucket.bucket"}, "crop_offset"),
    "flip": ("data.random_flip", {}, {"image": "load.image"}, "image"),
    "flip2": ("data.random_flip", {}, {"image": "load.image"}, "image"),
    "rotate": ("data.random_rotate", {"probability": 1.0}, {"image": "load.image"}, "image"),
    "bright": ("data.random_brightness", {"probability": 1.0}, {"image": "load.image"}, "image"),
    "contrast": ("data.random_contrast", {"probability": 1.0}, {"image": "load.image"}, "image"),
    "saturation": ("data.random_saturation", {"probability": 1.0}, {"image": "load.image"}, "image"),
    "hue": ("data.random_hue", {"probability": 1.0}, {"image": "load.image"}, "image"),
    "shuffle": ("data.shuffle_tags", {}, {"caption": "source.caption"}, "caption"),
    "drop": ("data.drop_tags", {"probability": 0.5}, {"caption": "source.caption"}, "caption"),
    "lines": ("data.load_text", {"lines": "random"}, {"path": "source.text_path"}, "caption"),
    # the concepts source: a fractional balancing takes a random subset of images each epoch
    "source": ("data.concepts", {}, {"concepts": ["concept.concept"]}, "path"),
    "source2": ("data.concepts", {}, {"concepts": ["concept.concept"]}, "path"),
}
PAIRS = [("flip", "flip2"), ("source", "source2")]


def folder_of(tmp_path):
    folder = tmp_path / "det"
    folder.mkdir()
    for k in range(10):
        write_image(folder / f"img{k}.png", (40 + 6 * k, 32), (40 + 20 * k, 200 - 15 * k, 90),
                    f"t{k}, a, b, c, d, e\nsecond {k}, x\nthird {k}, y")
    return folder


def run_graph(data_registry, folder, tmp_path):
    nodes = pipeline(folder, bucket=("data.aspect_bucket", {"resolution": 32, "quantization": 8, "aspects": ["1:1"]},
                                     {"size": "source.size"}))
    nodes["concept"][1]["balancing"] = 1.5
    nodes.update({k: v[:3] for k, v in RANDOM_STAGES.items()})
    return run_nodes(graph_of(nodes), data_registry, list(RANDOM_STAGES), tmp=tmp_path)


def column(ran, node, epoch, seed) -> list:
    port = RANDOM_STAGES[node][3]
    values = [it[port] for it in items_at(ran, node, epoch=epoch, seed=seed, ports=[port])]
    return [v.tobytes() if hasattr(v, "tobytes") else v for v in values]


def global_states():
    return random.getstate(), np.random.get_state()[1].tobytes(), torch.get_rng_state().tolist()


def test_every_random_stage_is_seeded_by_seed_node_epoch_and_item(data_registry, tmp_path):
    folder = folder_of(tmp_path)
    before = global_states()
    first, again = run_graph(data_registry, folder, tmp_path), run_graph(data_registry, folder, tmp_path)
    for node in RANDOM_STAGES:
        base = column(first, node, 0, 5)
        assert column(again, node, 0, 5) == base, f"{node}: the same seed gives the same items in a fresh run"
        assert column(first, node, 0, 6) != base, f"{node}: another seed gives other items"
        assert column(first, node, 1, 5) != base, f"{node}: another epoch gives other items"
        assert len(set(map(repr, base))) > 1, f"{node}: items of one epoch draw differently"
    for a, b in PAIRS:
        assert column(first, a, 0, 5) != column(first, b, 0, 5), f"{a} and {b}: the node id changes the draws"
    assert sorted(column(first, "source", 0, 5)[:10]) == sorted(str(p) for p in folder.glob("*.png"))
    assert global_states() == before, "no stage draws from Python's, numpy's or torch's global generator"


def test_worker_processes_leave_the_global_generators_alone(data_registry, tmp_path):
    folder = folder_of(tmp_path)
    nodes = pipeline(folder, bucket=("data.aspect_bucket", {"resolution": 32, "quantization": 8, "aspects": ["1:1"]},
                                     {"size": "source.size"}),
                     crop=("data.scale_crop", {"crop": "random"}, {"image": "load.image", "bucket": "bucket.bucket"}),
                     tensor=("data.to_tensor", {}, {"image": "crop.image"}),
                     batches=("data.batches", {"batch_size": 4, "workers": 1, "seed": 3},
                              {"fields": ["tensor.image"], "bucket": "bucket.bucket"}))
    source = run_nodes(graph_of(nodes), data_registry, ["batches"], tmp=tmp_path).out("batches", "batches")
    torch.manual_seed(1234)
    before = global_states()
    batches = list(source.epoch(0))
    assert global_states() == before, "DataLoader drew its base seed from torch's global generator"
    assert sum(len(b["_index"]) for b in batches) == source.items
