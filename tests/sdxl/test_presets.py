"""The shipped SDXL presets, run end to end through the CLI with a saved tiny SDXL as the base model."""

from __future__ import annotations

import pytest
import torch

from runtime.paths import GRAPHS_DIR
from tests.conftest import run_cli, run_preset as shared_run_preset

PRESETS = ["sdxl-lora.yaml", "sdxl-finetune.yaml", "sdxl-embedding.yaml"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from nodes.sdxl.build import build_tiny, save_diffusers

    return save_diffusers(build_tiny(seed=0), tmp_path_factory.mktemp("sdxl") / "base")


@pytest.mark.parametrize("name", PRESETS)
def test_presets_are_canonical_and_validate(name):
    from runtime.graph_file import dumps_graph, load_graph

    path = GRAPHS_DIR / name
    assert dumps_graph(load_graph(path)) == path.read_text()  # the editor saves it unchanged
    r = run_cli("validate", path)
    assert r.returncode == 0 and "valid" in r.stdout, r.stdout + r.stderr


def run_preset(tmp_path, base, name, *sets):
    return shared_run_preset(tmp_path, name, base, "previews.steps=2", *sets)


def weights(module) -> dict:
    return {k: v.detach().float().clone() for k, v in module.state_dict().items()}


def changed(a: dict, b: dict) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_lora_preset_trains_saves_both_formats_and_samples(tmp_path, base):
    from safetensors import safe_open

    ws, saved, events = run_preset(tmp_path, base, "sdxl-lora.yaml", "rank=2", "sample_every=2", "save_every=1",
                                   "lora.text_encoders=both")
    assert saved == {"kohya_lora": str(ws / "lora" / "lora.safetensors"),
                     "diffusers_lora": str(ws / "lora" / "lora.diffusers.safetensors")}
    previews = [e["step"] for e in events if e["event"] == "sample" and e["node"] == "train"]
    assert previews == [2]
    periodic = sorted(e["path"] for e in events if e["event"] == "saved" and e["node"] == "train")
    assert str(ws / "lora" / "lora-step000001.safetensors") in periodic
    with safe_open(str(ws / "lora" / "lora-step000001.safetensors"), "pt") as f:
        assert f.metadata()["ss_steps"] == "1"  # what a periodic save says it trained
        assert any(k.startswith("lora_te2_") for k in f.keys())
    assert any((tmp_path / "cache").rglob("*")), "the disk cache was not written"


@pytest.mark.slow
def test_finetune_preset_trains_the_unet_and_a_text_encoder(tmp_path, base):
    from nodes.sdxl.build import load_sdxl

    ws, saved, _ = run_preset(tmp_path, base, "sdxl-finetune.yaml", "finetune.train_text_encoder_2=true",
                              "sample_every=0", "save_every=0")
    assert saved == {"diffusers": str(ws / "models" / "model"), "checkpoint": str(ws / "models" / "model.safetensors")}
    tuned, original = load_sdxl(saved["diffusers"]), load_sdxl(base)
    assert changed(weights(tuned.unet), weights(original.unet))
    assert changed(weights(tuned.text_encoder_2), weights(original.text_encoder_2))
    frozen = {k: v.half().float() for k, v in weights(original.text_encoder).items()}  # the preset loads it in fp16
    assert not changed(weights(tuned.text_encoder), frozen)
    assert not changed(weights(tuned.vae), weights(original.vae))
    single = load_sdxl(saved["checkpoint"], config=base)
    a, b = weights(single.unet), weights(tuned.unet)
    assert all(torch.allclose(a[k], b[k].half().float(), atol=1e-3) for k in a)


@pytest.mark.slow
def test_embedding_preset_trains_both_encoders_vectors_and_saves_clip_l_and_clip_g(tmp_path, base):
    from safetensors import safe_open

    ws, saved, events = run_preset(tmp_path, base, "sdxl-embedding.yaml", "placeholder=<red-thing>", "vectors=2",
                                   "save_every=1", "sample_every=0")
    periodic = [e["path"] for e in events if e["event"] == "saved" and e["node"] == "train"]
    assert str(ws / "embeddings" / "red-thing-step000001.safetensors") in periodic
    [path] = saved.values()
    assert path == str(ws / "embeddings" / "red-thing.safetensors")
    with safe_open(path, "pt") as f:
        assert sorted(f.keys()) == ["clip_g", "clip_l"]
        assert f.get_tensor("clip_l").shape == (2, 32) and f.get_tensor("clip_g").shape == (2, 48)
        assert f.metadata()["nodetrainer_placeholder"] == "<red-thing>"
