"""Importing OneTrainer configs for FLUX.1 dev: the graph, the report, and a run on the tiny Flux model."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.interop.onetrainer import defaults as D
from runtime.interop.onetrainer.importer import import_onetrainer
from runtime.interop.onetrainer.report import MAPPED, UNSUPPORTED

from .import_helpers import assert_saves, fields, images, param, problems, run_tiny, saved, write_config

FLUX = "FLUX_DEV_1"


def config(tmp_path: Path, method: str, **extra) -> dict:
    """A OneTrainer Flux config as a user writes it: T5 frozen (as OneTrainer's Flux presets), a concept,
    a sample and a save every 2 steps."""
    return {"__version": 11, "model_type": FLUX, "training_method": method, "base_model_name": "/models/flux-dev",
            "resolution": "64", "batch_size": 2, "epochs": 1, "learning_rate": 1e-4,
            "output_model_format": "DIFFUSERS_LORA" if method == "LORA" else "DIFFUSERS",
            "text_encoder_2": {"train": False}, "text_encoder_2_sequence_length": 32,
            "save_every": 2, "save_every_unit": "STEP", "sample_after": 2, "sample_after_unit": "STEP",
            "backup_after_unit": "NEVER", "tensorboard": False,
            "cache_dir": str(tmp_path / "cache"),
            "samples": [{"prompt": "a red square", "width": 64, "height": 64, "diffusion_steps": 2, "cfg_scale": 4.0}],
            "concepts": [{"name": "squares", "path": str(images(tmp_path / "squares"))}], **extra}


def mapped(imported) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in imported.report.of_kind(MAPPED):
        out.setdefault(r.key, []).append(r.target)
    return out


def test_lora_maps_guidance_and_t5_length_and_runs(tmp_path):
    cfg = config(tmp_path, "LORA", lora_rank=4, lora_alpha=4.0, output_model_format="DIFFUSERS_LORA",
                 output_model_destination="lora/squares.safetensors", transformer={"guidance_scale": 3.0},
                 text_encoder={"train": False}, timestep_distribution="LOGIT_NORMAL", dynamic_timestep_shifting=True)
    imported = import_onetrainer(write_config(tmp_path, cfg))
    nodes = imported.graph.nodes
    assert nodes["base"].type == "flux.load_model" and nodes["base"].params["path"] == "/models/flux-dev"
    assert nodes["base"].params["guidance"] == 3.0
    assert nodes["lora"].type == "flux.lora_setup"
    assert (nodes["lora"].params["rank"], nodes["lora"].params["alpha"]) == (4, 4.0)
    assert "train_clip_l" not in nodes["lora"].params                 # CLIP-L frozen: the default
    # T5 length: OneTrainer's text_encoder_2_sequence_length in the tokenizer, the encoder and the sampler
    assert nodes["tokenize_2"].params["max_length"] == 32 and nodes["encode_text"].params["max_length"] == 32
    assert str(nodes["tokenize_2"].inputs["tokenizer"]) == "base.tokenizer_2"
    assert {"cache.latent", "cache.t5_embedding", "cache.pooled_embedding"} <= set(fields(imported))
    assert not any("tokens" in f for f in fields(imported))
    assert nodes["objective"].type == "train.flow_matching_objective"
    assert (param(imported, "objective", "sampling"), param(imported, "objective", "dynamic_shift")) == (
        "logit_normal", True)
    # the sample's cfg_scale is dev's embedded guidance in OneTrainer's Flux sampler
    assert nodes["previews"].type == "flux.sample"
    assert (nodes["previews"].params["guidance"], nodes["previews"].params["max_length"]) == (4.0, 32)
    assert nodes["save"].type == "flux.save_lora" and nodes["save"].params["formats"] == "diffusers"
    m = mapped(imported)
    assert m["transformer.guidance_scale"] == ["base.guidance"]
    assert m["text_encoder_2_sequence_length"][0].startswith("tokenize_2.max_length, encode_text.max_length")
    assert any(t.startswith("previews.guidance") for t in m["samples[0].cfg_scale"])
    assert not imported.report.of_kind(UNSUPPORTED), imported.report.table()
    assert problems(imported.graph) == []

    _, events = run_tiny(imported.graph, FLUX, tmp_path / "run", max_steps=2)
    assert_saves(events, "squares.diffusers.safetensors", "squares-step000002.diffusers.safetensors")


def test_finetune_trains_the_transformer_and_clip_and_saves_the_transformer(tmp_path):
    cfg = config(tmp_path, "FINE_TUNE", output_model_format="ORIGINAL_TRANSFORMER", output_dtype="FLOAT_32",
                 output_model_destination="models/squares.safetensors", text_encoder={"train": True},
                 transformer={"learning_rate": 2e-5, "weight_dtype": "BFLOAT_16"}, samples=[])
    imported = import_onetrainer(write_config(tmp_path, cfg))
    nodes = imported.graph.nodes
    ft = nodes["finetune"]
    assert ft.type == "flux.finetune_setup"
    assert ft.params["train_text_encoder"] is True and ft.params["transformer_lr"] == 2e-5
    assert ft.params["weight_dtype"] == "keep" and param(imported, "base", "transformer_dtype") == "bfloat16"
    # CLIP-L trains: the loop encodes its tokens; T5's sequence stays cached
    assert {"cache.tokens", "cache.t5_embedding"} <= set(fields(imported))
    assert "cache.pooled_embedding" not in fields(imported)
    assert nodes["save"].type == "flux.save_transformer" and nodes["save"].params["dtype"] == "float32"
    assert "previews" not in nodes
    assert not imported.report.of_kind(UNSUPPORTED), imported.report.table()
    assert problems(imported.graph) == []

    _, events = run_tiny(imported.graph, FLUX, tmp_path / "run", max_steps=1)
    files = saved(events)
    assert files and Path(files[0]).is_file() and Path(files[0]).name == "squares.safetensors"


def test_training_t5_is_reported_unsupported(tmp_path):
    cfg = config(tmp_path, "LORA", text_encoder_2={"train": True}, text_encoder_2_sequence_length=None)
    imported = import_onetrainer(write_config(tmp_path, cfg))
    rows = {r.key: r.target for r in imported.report.of_kind(UNSUPPORTED)}
    assert "T5 stays frozen" in rows["text_encoder_2.train"]
    assert imported.graph.nodes["tokenize_2"].params["max_length"] == 512        # null: the tokenizer's own
    # stopped before it starts: OneTrainer does not train it either
    cfg = config(tmp_path, "LORA", text_encoder_2={"train": True, "stop_training_after": 0,
                                                   "stop_training_after_unit": "EPOCH"})
    imported = import_onetrainer(write_config(tmp_path, cfg))
    assert "text_encoder_2.train" not in {r.key for r in imported.report.of_kind(UNSUPPORTED)}


def test_unmodified_default_config_differs_only_in_training_t5(tmp_path):
    cfg = D.train_config_defaults() | {"__version": D.CURRENT_VERSION, "model_type": FLUX,
                                       "training_method": "LORA", "output_model_format": "KOHYA_LORA"}
    cfg["concepts"] = [D.concept_defaults() | {"path": str(images(tmp_path / "data"))}]
    imported = import_onetrainer(write_config(tmp_path, cfg))
    assert [r.key for r in imported.report.of_kind(UNSUPPORTED)] == ["text_encoder_2.train"]
    nodes = imported.graph.nodes
    # OneTrainer's defaults: 77 T5 tokens, guidance 1.0 in training, CLIP-L adapted until epoch 30
    assert nodes["tokenize_2"].params["max_length"] == 77 and nodes["encode_text"].params["max_length"] == 77
    assert param(imported, "base", "guidance") == 1.0
    assert nodes["lora"].params["train_clip_l"] is True
    assert nodes["train"].params["stop_parts"] == ["text_encoder=30 epochs"]
    assert problems(imported.graph) == []


def test_quantized_weight_dtypes_become_the_loaders_quantize(tmp_path):
    # OneTrainer's "#flux LoRA" preset: transformer and T5 in NFLOAT_4
    imported = import_onetrainer(write_config(tmp_path, config(
        tmp_path, "LORA", transformer={"weight_dtype": "NFLOAT_4"},
        text_encoder_2={"train": False, "weight_dtype": "NFLOAT_4"})))
    assert imported.graph.nodes["base"].params["quantize"] == "nf4"
    assert not imported.report.of_kind(UNSUPPORTED), imported.report.table()
    assert problems(imported.graph) == []
    # the transformer alone: T5 is quantized with it, and the report says so
    imported = import_onetrainer(write_config(tmp_path, config(tmp_path, "LORA",
                                                               transformer={"weight_dtype": "FLOAT_8"})))
    assert imported.graph.nodes["base"].params["quantize"] == "fp8"
    assert any(r.key == "transformer.weight_dtype" and "T5 as fp8 too" in r.target for r in imported.report.rows)
    # T5 alone, or a quantized fine-tune: the loader cannot
    for method, parts in (("LORA", {"text_encoder_2": {"train": False, "weight_dtype": "INT_8"}}),
                          ("FINE_TUNE", {"transformer": {"weight_dtype": "NFLOAT_4"}})):
        imported = import_onetrainer(write_config(tmp_path, config(tmp_path, method, **parts)))
        assert "quantize" not in imported.graph.nodes["base"].params
        key = next(iter(parts)) + ".weight_dtype"
        assert key in {r.key for r in imported.report.of_kind(UNSUPPORTED)}, imported.report.table()


@pytest.mark.parametrize("change, message", [
    ({"training_method": "EMBEDDING"}, r"^training_method EMBEDDING: nodetrainer cannot train FLUX_DEV_1 this way"),
    ({"model_type": "QWEN"}, r"^model_type QWEN: nodetrainer has no family"),
])
def test_methods_and_model_types_we_lack_are_one_line_errors(tmp_path, change, message):
    cfg = {"__version": 11, "model_type": FLUX, "training_method": "LORA", "concepts": [{"path": "/d"}], **change}
    with pytest.raises(ValueError, match=message) as e:
        import_onetrainer(write_config(tmp_path, cfg))
    assert "\n" not in str(e.value)
