"""Importing OneTrainer configs for SDXL: the graph, the report, and a run on the tiny SDXL model."""

from __future__ import annotations

from pathlib import Path

from runtime.interop.onetrainer import defaults as D
from runtime.interop.onetrainer.importer import import_onetrainer
from runtime.interop.onetrainer.report import MAPPED, UNSUPPORTED

from .import_helpers import COLOURS, assert_saves, fields, images, param, problems, run_tiny, saved, write_config

SDXL = "STABLE_DIFFUSION_XL_10_BASE"


def config(tmp_path: Path, method: str, **extra) -> dict:
    """A OneTrainer config as a user writes it: a concept, a sample and a save every 2 steps."""
    return {"__version": 11, "model_type": SDXL, "training_method": method, "base_model_name": "/models/sdxl",
            "resolution": "64", "batch_size": 2, "epochs": 1, "learning_rate": 1e-4,
            "save_every": 2, "save_every_unit": "STEP", "sample_after": 2, "sample_after_unit": "STEP",
            "backup_after_unit": "NEVER", "tensorboard": False, "cache_dir": str(tmp_path / "cache"),
            "samples": [{"prompt": "a red square", "width": 64, "height": 64, "diffusion_steps": 2,
                         "noise_scheduler": "EULER"}],
            "concepts": [{"name": "squares", "path": str(images(tmp_path / "squares"))}], **extra}


def mapped(imported) -> dict[str, str]:
    return {r.key: r.target for r in imported.report.of_kind(MAPPED)}


def test_lora_adapts_the_second_encoder_and_runs(tmp_path):
    cfg = config(tmp_path, "LORA", lora_rank=4, lora_alpha=2.0, output_model_format="KOHYA_LORA",
                 output_model_destination="lora/squares.safetensors", text_encoder={"train": False},
                 text_encoder_2={"train": True, "weight_dtype": "BFLOAT_16"})
    imported = import_onetrainer(write_config(tmp_path, cfg))
    nodes = imported.graph.nodes
    assert nodes["base"].type == "sdxl.load_model" and nodes["base"].params["path"] == "/models/sdxl"
    assert nodes["base"].params["text_encoder_2_dtype"] == "bfloat16"
    assert nodes["lora"].type == "sdxl.lora_setup"
    assert nodes["lora"].params["text_encoders"] == "second"
    assert (nodes["lora"].params["rank"], nodes["lora"].params["alpha"]) == (4, 2.0)
    # an encoder trains: both run in the loop, so the batches get both tokenizers' ids, not embeddings
    assert "encode_text" not in nodes
    assert {"cache.tokens", "cache.tokens_2", "cache.latent", "cache.time_ids"} <= set(fields(imported))
    assert nodes["cache"].params["rename"] == ["tokenize_2.tokens=tokens_2"]
    assert str(nodes["tokenize_2"].inputs["tokenizer"]) == "base.tokenizer_2"
    # size conditioning from the concept's original size, the crop offset and the bucket
    sizes = {p: str(v) for p, v in nodes["sizes"].inputs.items()}
    assert sizes == {"size": "squares_source.size", "crop_offset": "squares_crop.crop_offset",
                     "bucket": "squares_bucket.bucket"}
    assert nodes["save"].type == "sdxl.save_lora" and nodes["save"].params["formats"] == "kohya"
    assert nodes["previews"].type == "sdxl.sample" and nodes["previews"].params["scheduler"] == "euler"
    m = mapped(imported)
    assert m["text_encoder.train"] == "lora.text_encoders"
    assert m["text_encoder_2.weight_dtype"] == "base.text_encoder_2_dtype"
    assert not imported.report.of_kind(UNSUPPORTED), imported.report.table()
    assert problems(imported.graph) == []

    _, events = run_tiny(imported.graph, SDXL, tmp_path / "run", max_steps=2)
    assert_saves(events, "squares.safetensors", "squares-step000002.safetensors")


def test_lora_with_frozen_encoders_caches_their_embeddings(tmp_path):
    cfg = config(tmp_path, "LORA", output_model_format="DIFFUSERS_LORA", text_encoder={"train": False},
                 text_encoder_2={"train": False}, text_encoder_layer_skip=1, text_encoder_2_layer_skip=1)
    cfg["concepts"].append({"name": "more", "path": str(images(tmp_path / "more"))})
    imported = import_onetrainer(write_config(tmp_path, cfg))
    nodes = imported.graph.nodes
    # two concepts: the size conditioning reads the merged fields
    assert {p: str(v) for p, v in nodes["sizes"].inputs.items()} == {
        "size": "merge.size", "crop_offset": "merge.crop_offset", "bucket": "merge.bucket"}
    assert "text_encoders" not in nodes["lora"].params                 # none, the default
    assert {str(v) for v in nodes["encode_text"].inputs.values()} == {
        "tokenize.tokens", "tokenize_2.tokens", "base.text_encoder", "base.text_encoder_2"}
    assert {"cache.embedding", "cache.pooled_embedding", "cache.time_ids"} <= set(fields(imported))
    assert not any("tokens" in f for f in fields(imported))
    assert nodes["save"].params["formats"] == "diffusers"
    # OneTrainer's layer skip of both encoders: one clip_skip wherever the encoders run
    assert {n: nodes[n].params.get("clip_skip") for n in ("encode_text", "lora", "previews")} == {
        "encode_text": 1, "lora": 1, "previews": 1}
    assert problems(imported.graph) == []


def test_finetune_trains_the_unet_and_first_encoder_and_saves_a_checkpoint(tmp_path):
    cfg = config(tmp_path, "FINE_TUNE", output_model_format="ORIGINAL_SINGLE_FILE",
                 output_model_destination="models/squares.safetensors", output_dtype="FLOAT_32",
                 unet={"learning_rate": 2e-5}, text_encoder={"train": True, "learning_rate": 1e-6},
                 text_encoder_2={"train": False})
    imported = import_onetrainer(write_config(tmp_path, cfg))
    nodes = imported.graph.nodes
    ft = nodes["finetune"]
    assert ft.type == "sdxl.finetune_setup"
    assert ft.params["train_text_encoder"] is True and ft.params.get("train_text_encoder_2", False) is False
    assert ft.params["unet_lr"] == 2e-5 and ft.params["text_encoder_lr"] == 1e-6
    assert ft.params["weight_dtype"] == "keep"
    assert {"cache.tokens", "cache.tokens_2"} <= set(fields(imported))
    assert nodes["save"].type == "sdxl.save_checkpoint" and nodes["save"].params["dtype"] == "float32"
    assert nodes["save"].params["name"] == "squares"
    assert not imported.report.of_kind(UNSUPPORTED), imported.report.table()
    assert problems(imported.graph) == []

    del nodes["previews"], nodes["sample_hook"]
    nodes["train"].inputs["hooks"] = [h for h in nodes["train"].inputs["hooks"] if h.node != "sample_hook"]
    _, events = run_tiny(imported.graph, SDXL, tmp_path / "run", max_steps=1)
    files = saved(events)
    assert files and Path(files[0]).is_file() and Path(files[0]).name == "squares.safetensors"


def test_embedding_trains_the_placeholder_in_both_encoders(tmp_path):
    cfg = config(tmp_path, "EMBEDDING", embedding_learning_rate=5e-3,
                 embedding={"placeholder": "<sq>", "token_count": 2, "initial_embedding_text": "square"},
                 output_model_destination="embeddings/sq.safetensors")
    cfg["concepts"] = [{"name": "squares",
                        "path": str(images(tmp_path / "sq", [f"a photo of <sq>, {c}" for c in COLOURS]))}]
    cfg["samples"][0]["prompt"] = "a photo of <sq>"
    imported = import_onetrainer(write_config(tmp_path, cfg))
    nodes = imported.graph.nodes
    assert nodes["embedding"].type == "sdxl.embedding_setup"
    assert nodes["embedding"].params == {"placeholder": "<sq>", "initial_text": "square", "vectors": 2}
    assert str(nodes["tokenize"].inputs["tokenizer"]) == "embedding.tokenizer"
    assert str(nodes["tokenize_2"].inputs["tokenizer"]) == "embedding.tokenizer_2"
    assert "encode_text" not in nodes
    assert {"cache.tokens", "cache.tokens_2", "cache.time_ids"} <= set(fields(imported))
    assert nodes["optimizer"].params["lr"] == 5e-3
    assert nodes["save"].type == "sdxl.save_embedding" and nodes["save"].params["name"] == "sq"
    assert problems(imported.graph) == []

    _, events = run_tiny(imported.graph, SDXL, tmp_path / "run", max_steps=2)
    files = saved(events)
    assert files and Path(files[0]).is_file() and Path(files[0]).name == "sq.safetensors"


def test_unmodified_default_config_trains_both_encoders_until_epoch_30(tmp_path):
    cfg = D.train_config_defaults() | {"__version": D.CURRENT_VERSION, "model_type": SDXL,
                                       "training_method": "LORA", "output_model_format": "KOHYA_LORA"}
    cfg["concepts"] = [D.concept_defaults() | {"path": str(images(tmp_path / "data"))}]
    cfg["samples"] = [{"prompt": "a cat"}]          # the rest: OneTrainer's SDXL sample defaults
    imported = import_onetrainer(write_config(tmp_path, cfg))
    assert imported.report.of_kind(UNSUPPORTED) == [], imported.report.table()
    nodes = imported.graph.nodes
    # OneTrainer's defaults: LoRA on the UNet and both encoders, the encoders stop after 30 of 100 epochs
    assert nodes["lora"].params["text_encoders"] == "both"
    assert nodes["train"].params["stop_parts"] == ["text_encoder=30 epochs", "text_encoder_2=30 epochs"]
    assert {k: param(imported, "previews", k) for k in ("prompts", "width", "cfg", "scheduler", "steps")} == {
        "prompts": ["a cat"], "width": 1024, "cfg": 7.5, "scheduler": "euler_a", "steps": 30}
    assert problems(imported.graph) == []
