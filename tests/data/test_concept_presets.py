"""The two-concept preset: per-concept branches (flips, tag shuffling and own resolutions for the subject; prior
role, loss weight and caption dropout for the regularisation images), run through the CLI with the tiny SD model."""

from __future__ import annotations

import math

import pytest

from runtime.paths import ASSETS_DIR, GRAPHS_DIR
from tests.conftest import run_preset

#: the shipped graphs this file runs (tests/sd/test_presets.py checks every graph is run by some test;
#: importable as tests.data.test_concept_presets: nothing of this folder's helpers at module level)
PRESETS = ["sd15-two-concepts.yaml"]
PRESET = PRESETS[0]


def sets(tmp_path, prior) -> list[str]:
    return [f"prior_dataset={prior}", "subject_resolutions=[48, 64]", "prior_bucket.quantization=16",
            "prior_caption_dropout=0.5", "prior_weight=0.5", "previews.steps=2", "rank=2"]


def test_preset_is_canonical_and_validates():
    from runtime.graph_file import dumps_graph, load_graph
    from tests.conftest import run_cli

    path = GRAPHS_DIR / PRESET
    assert dumps_graph(load_graph(path)) == path.read_text()  # the editor saves it unchanged
    r = run_cli("validate", path)
    assert r.returncode == 0 and "valid" in r.stdout, r.stdout + r.stderr


def target(bucket) -> int:
    """The resolution (48 or 64) a bucket (width, height) was made for."""
    return min((48, 64), key=lambda r: abs(math.sqrt(bucket[0] * bucket[1]) - r))


@pytest.mark.slow
def test_two_concepts_train_each_with_its_own_settings(tmp_path, data_registry):
    import torch
    from datagraph_helpers import items_at, make_dataset, run_nodes

    from nodes.data.tensors import image_to_tensor
    from nodes.sd.build import build_tiny, save_diffusers
    from runtime.graph_file import load_graph

    base = save_diffusers(build_tiny(seed=0), tmp_path / "base")
    prior = make_dataset(tmp_path / "prior", bad=False).root
    ws, saved, events = run_preset(tmp_path, PRESET, base, *sets(tmp_path, prior))
    assert set(saved) == {"kohya_lora", "diffusers_lora"}
    merged = [e for e in events if e["event"] == "log" and e["node"] == "merge"]
    assert merged and merged[0]["branches"] == 2

    # The same graph, overrides and cache in-process: the batches the run trained on, found in its cache
    overrides = [f"base_model={base}", f"dataset={ASSETS_DIR / 'demo_dataset'}", "resolution=64",
                 "bucket.quantization=16", f"cache.folder={tmp_path / 'cache'}", *sets(tmp_path, prior)]
    ran = run_nodes(load_graph(GRAPHS_DIR / PRESET), data_registry,
                    ["batches", "merge", "crop", "prior_crop", "source", "prior_source"], overrides, tmp=tmp_path)
    n_subject = ran.out("source", "path").space.length
    n_prior = ran.out("prior_source", "path").space.length
    batches = list(ran.out("batches", "batches").epoch(0))
    total = n_subject + n_prior
    assert f"cache ready for epoch 0 (variation 0): {total} of {total} item(s) found, 0 computed, 0 skipped" \
           in ran.logs()
    items = items_at(ran, "merge", epoch=0, seed=42)  # variation 0, what the cache holds
    sizes: dict[str, set] = {"standard": set(), "prior": set()}
    for batch in batches:
        assert isinstance(batch["latent"], torch.Tensor), "a batch mixed sizes"
        assert len({items[i]["bucket"] for i in batch["_index"]}) == 1
        for i, role, w in zip(batch["_index"], batch["role"], batch["loss_weight"].tolist()):
            assert (role, w) == (("standard", 1.0) if i < n_subject else ("prior", 0.5))  # B's weight and role
            sizes[role].add(target(items[i]["bucket"]))
    assert sizes == {"standard": {48, 64}, "prior": {64}}  # the subject's resolutions, the prior's one

    # the subject flipped (some) and shuffled, the prior neither, its captions dropped (some)
    subject, prior_items = items[:n_subject], items[n_subject:]
    crops = [image_to_tensor(it["image"], -1.0, "float32") for it in items_at(ran, "crop", epoch=0, seed=42)]
    flipped = [torch.equal(it["image"], c.flip(-1)) for it, c in zip(subject, crops)]
    assert all(f or torch.equal(it["image"], c) for f, it, c in zip(flipped, subject, crops))
    assert any(flipped) and not all(flipped)
    prior_crops = [image_to_tensor(it["image"], -1.0, "float32") for it in items_at(ran, "prior_crop", seed=42)]
    assert all(torch.equal(it["image"], c) for it, c in zip(prior_items, prior_crops))
    files = [it["caption"] for it in items_at(ran, "source", seed=42)]
    got = [it["caption"] for it in subject]
    assert got != files and all(sorted(g.split(", ")) == sorted(f.split(", ")) and g.split(", ")[0] ==
                                f.split(", ")[0] for g, f in zip(got, files))
    prior_files = [it["caption"] for it in items_at(ran, "prior_source", seed=42)]
    prior_got = [it["caption"] for it in prior_items]
    assert all(g in ("", f) for g, f in zip(prior_got, prior_files))  # dropped, never shuffled
    assert "" in prior_got and any(g == f and f for g, f in zip(prior_got, prior_files))
