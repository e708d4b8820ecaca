"""The shipped Flux presets, run end to end through the CLI with a saved tiny FLUX.1 dev as the base model."""

from __future__ import annotations

import pytest

from runtime.paths import GRAPHS_DIR
from tests.conftest import run_cli, run_preset as shared_run_preset

PRESETS = ["flux-dev-lora.yaml", "flux-dev-lora-lowvram.yaml", "flux-finetune.yaml"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from nodes.flux.build import build_tiny, save_diffusers

    return save_diffusers(build_tiny(seed=0, variant="dev"), tmp_path_factory.mktemp("flux") / "base")


@pytest.mark.parametrize("name", PRESETS)
def test_presets_are_canonical_and_validate(name):
    from runtime.graph_file import dumps_graph, load_graph

    path = GRAPHS_DIR / name
    assert dumps_graph(load_graph(path)) == path.read_text()  # the editor saves it unchanged
    r = run_cli("validate", path)
    assert r.returncode == 0 and "valid" in r.stdout, r.stdout + r.stderr


def run_preset(tmp_path, base, name, *sets):
    short = ("encode_text.max_length=32", "tokenize_2.max_length=32", "previews.steps=2", "sample.max_length=32",
             "previews.max_length=32")  # the tiny T5's sequences
    return shared_run_preset(tmp_path, name, base, *short, *sets)


@pytest.mark.slow
def test_lora_preset_trains_saves_both_formats_and_samples(tmp_path, base):
    from safetensors import safe_open

    ws, saved, events = run_preset(tmp_path, base, "flux-dev-lora.yaml", "rank=2", "sample_every=2", "save_every=1")
    assert saved == {"kohya_lora": str(ws / "lora" / "lora.safetensors"),
                     "diffusers_lora": str(ws / "lora" / "lora.diffusers.safetensors")}
    assert [e["step"] for e in events if e["event"] == "sample" and e["node"] == "train"] == [2]
    with safe_open(saved["kohya_lora"], "pt") as f:
        keys = list(f.keys())
    assert any(k.startswith("lora_unet_double_blocks_0_") for k in keys)
    assert any(k.startswith("lora_unet_single_blocks_0_") for k in keys)
    assert any((tmp_path / "cache").rglob("*")), "the disk cache was not written"


@pytest.mark.slow
def test_finetune_preset_trains_the_transformer_and_saves_it_in_the_bfl_layout(tmp_path, base):
    import torch
    from safetensors import safe_open

    from nodes.flux.build import load_flux

    ws, saved, _ = run_preset(tmp_path, base, "flux-finetune.yaml", "sample_every=0", "save_every=0")
    assert saved == {"bfl_transformer": str(ws / "models" / "transformer.safetensors"),
                     "diffusers": str(ws / "models" / "model")}
    with safe_open(str(ws / "models" / "transformer.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert any(k.startswith("double_blocks.0.img_attn.qkv.") for k in keys)
    tuned, original = load_flux(str(ws / "models" / "model")), load_flux(str(base))
    a, b = tuned.transformer.state_dict(), original.transformer.state_dict()
    assert any(not torch.equal(a[k].float(), b[k].float()) for k in a)  # the transformer trained
    from_file = load_flux(str(ws / "models" / "transformer.safetensors"), config=str(base))
    c = from_file.transformer.state_dict()
    assert all(torch.equal(c[k].float(), a[k].float()) for k in a)  # the BFL file holds the same weights


@pytest.mark.slow
def test_lowvram_preset_trains_a_lora_on_the_int8_transformer_and_t5(tmp_path, base):
    ws, saved, events = run_preset(tmp_path, base, "flux-dev-lora-lowvram.yaml", "rank=2", "sample_every=0",
                                   "save_every=0")
    assert set(saved) == {"kohya_lora", "diffusers_lora"}
    logs = " | ".join(e.get("message", "") for e in events if e["event"] == "log" and e["node"] == "base")
    assert "transformer:" in logs and "T5:" in logs and "int8" in logs  # both frozen parts were quantized
    losses = [e["loss"] for e in events if e["event"] == "progress" and e["node"] == "train"]
    assert all(loss == loss and loss < 1e3 for loss in losses)  # finite
