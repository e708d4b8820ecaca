"""Importing OneTrainer configs for SD 1.x/2.x: the graph, the report, and a run on the tiny model."""

from __future__ import annotations

import pytest
from PIL import Image

from runtime.interop.onetrainer import defaults as D
from runtime.interop.onetrainer.importer import import_onetrainer
from runtime.interop.onetrainer.report import MAPPED, NOT_NEEDED, UNSUPPORTED

from ..conftest import run_cli
from .import_helpers import dataset, problems, run_tiny, write_config

SD15 = "STABLE_DIFFUSION_15"


def _image_options() -> dict:
    return {"enable_crop_jitter": False, "enable_random_flip": False, "enable_fixed_flip": True,
            "enable_random_rotate": True, "enable_fixed_rotate": False, "random_rotate_max_angle": 12.0,
            "enable_random_brightness": True, "enable_fixed_brightness": False, "random_brightness_max_strength": 0.2,
            "enable_random_contrast": True, "enable_fixed_contrast": False, "random_contrast_max_strength": 0.3,
            "enable_random_saturation": True, "enable_fixed_saturation": False,
            "random_saturation_max_strength": 0.25, "enable_random_hue": True, "enable_fixed_hue": False,
            "random_hue_max_strength": 0.05, "enable_resolution_override": True, "resolution_override": "64,96",
            "enable_random_circular_mask_shrink": True, "enable_random_mask_rotate_crop": True}


def _text_options() -> dict:
    return {"prompt_source": "filename", "prompt_path": "prompts.txt", "enable_tag_shuffling": True,
            "tag_delimiter": ";", "keep_tags_count": 2, "tag_dropout_enable": True, "tag_dropout_mode": "RANDOM",
            "tag_dropout_probability": 0.2, "tag_dropout_special_tags_mode": "WHITELIST",
            "tag_dropout_special_tags": "a,b", "tag_dropout_special_tags_regex": True,
            "caps_randomize_enable": True, "caps_randomize_mode": "title", "caps_randomize_probability": 0.5,
            "caps_randomize_lowercase": True}


def _every_option_config(tmp_path) -> dict:
    subject, prior = dataset(tmp_path / "subject"), dataset(tmp_path / "prior", 2)
    concept = {"name": "subject", "path": str(subject), "seed": 7, "enabled": True, "type": "STANDARD",
               "include_subdirectories": True, "image_variations": 2, "text_variations": 3, "balancing": 2.0,
               "balancing_strategy": "REPEATS", "loss_weight": 0.8, "concept_stats": {"file_count": 4},
               "image": _image_options(), "text": _text_options()}
    return {"__version": 11, "training_method": "LORA", "model_type": SD15, "base_model_name": "/m",
            "resolution": "64", "batch_size": 2, "epochs": 1, "validation": True, "validate_after": 1,
            "validate_after_unit": "STEP", "cache_dir": str(tmp_path / "cache"), "samples": [],
            "concepts": [concept,
                         {"name": "prior", "path": str(prior), "type": "PRIOR_PREDICTION", "balancing": 3,
                          "balancing_strategy": "SAMPLES"},
                         {"name": "held out", "path": str(prior), "type": "VALIDATION"},
                         {"name": "off", "path": str(prior), "enabled": False, "loss_weight": 2.0}]}


def _params(imported, node: str) -> dict:
    return imported.graph.nodes[node].params


def _links(imported, node: str, port: str):
    value = imported.graph.nodes[node].inputs[port]
    return [str(v) for v in value] if isinstance(value, list) else str(value)


def test_every_concept_option_is_a_node_param_or_reported_and_the_graph_runs(tmp_path):
    imported = import_onetrainer(write_config(tmp_path, _every_option_config(tmp_path)))
    report = imported.report
    nodes = imported.graph.nodes
    # each concept is its own branch; the two training branches merge, the validation one has its own stream
    assert _params(imported, "subject") == {"folder": str(tmp_path / "subject"), "name": "subject",
                                            "recursive": True, "caption": "filename", "balancing": 2.0,
                                            "loss_weight": 0.8}
    assert _params(imported, "prior") | {"folder": None} == {
        "folder": None, "name": "prior", "balancing": 3.0, "balancing_strategy": "samples", "role": "prior_prediction"}
    assert "off" not in nodes and "off_source" not in nodes
    assert _params(imported, "subject_flip") == {"probability": 1.0}            # fixed flip: always
    assert _params(imported, "subject_rotate") == {"probability": 1.0, "max_angle": 12.0}
    assert _params(imported, "subject_brightness") == {"probability": 1.0}   # strength 0.2 is the default
    assert _params(imported, "subject_contrast") == {"probability": 1.0, "strength": 0.3}
    assert _params(imported, "subject_hue") == {"probability": 1.0}
    assert _params(imported, "subject_crop") == {}                            # no crop jitter: centred
    assert _params(imported, "subject_bucket") == {"resolution": 64, "resolutions": ["64", "96"], "quantization": 8}
    assert _params(imported, "prior_bucket") == {"resolution": 64, "quantization": 8}
    assert _params(imported, "subject_shuffle") == {"delimiter": ";", "keep_first": 2}
    assert _params(imported, "subject_drop_tags") == {"delimiter": ";", "keep_first": 2, "probability": 0.2}
    assert _links(imported, "subject_drop_tags", "caption") == "subject_shuffle.caption"
    assert _links(imported, "merge", "more")[:2] == ["prior_tensor.image", "prior_text.caption"]
    assert _params(imported, "cache") == {"variations": 3, "folder": str(tmp_path / "cache")}
    assert _links(imported, "val_batches", "fields")[0] == "val_cache.latent"
    assert _params(imported, "val_batches") == {"batch_size": 1}
    assert _links(imported, "validation", "batches") == "val_batches.batches"
    assert _params(imported, "validation") == {"every": 1}
    # every concept key that differs from the default has a row
    for i, changed in enumerate(imported.config.concept_changed):
        for key in changed:
            assert report.handled(f"concepts[{i}].{key}"), (i, key)
    unsupported = {r.key for r in report.of_kind(UNSUPPORTED)}
    assert {"concepts[0].text.tag_dropout_mode", "concepts[0].text.caps_randomize_enable",
            "concepts[0].text.tag_dropout_special_tags", "concepts[0].image.enable_random_mask_rotate_crop",
            "concepts[0].image.enable_random_circular_mask_shrink"} <= unsupported
    assert all(r.target != "nodetrainer has no equivalent of this setting" for r in report.rows)
    assert {r.key: r.target for r in report.of_kind(NOT_NEEDED)}["concepts[3].loss_weight"].startswith(
        "the concept is disabled")
    assert problems(imported.graph) == []
    _, events = run_tiny(imported.graph, SD15, tmp_path / "run")
    saved = [e for e in events if e["event"] == "saved" and e["node"] == "save"]
    assert saved and saved[0]["path"].endswith("lora/model.safetensors")
    assert any(e["event"] == "log" and "validation_loss" in e for e in events)


EXPECTED_LORA = """
base: {type: sd.load_model@1, params: {path: /models/sd15.safetensors, unet_dtype: bfloat16}}
lora:
  type: sd.lora_setup@1
  in: {model: base.model}
  params: {adapter: dora, rank: 8, alpha: 8.0, dropout: 0.1, target_regex: '.*(?:attn1|attn2).*',
           train_text_encoder: true, clip_skip: 1}
cats: {type: data.concept@1, params: {folder: /data/cats, name: cats, recursive: true}}
cats_source: {type: data.concepts@1, in: {concepts: [cats.concept]}}
cats_text: {type: data.load_text@1, in: {path: cats_source.text_path}, params: {lines: random}}
cats_shuffle: {type: data.shuffle_tags@1, in: {caption: cats_text.caption}, params: {keep_first: 1}}
cats_bucket: {type: data.aspect_bucket@1, in: {size: cats_source.size}, params: {resolution: 768, quantization: 8}}
cats_load: {type: data.load_image@1, in: {path: cats_source.path, bucket: cats_bucket.bucket}}
cats_crop: {type: data.scale_crop@1, in: {image: cats_load.image, bucket: cats_bucket.bucket}, params: {crop: random}}
cats_flip: {type: data.random_flip@1, in: {image: cats_crop.image}}
cats_tensor: {type: data.to_tensor@1, in: {image: cats_flip.image}}
encode_image: {type: sd.encode_image@1, in: {image: cats_tensor.image, vae: base.vae}}
tokenize: {type: sd.tokenize@1, in: {caption: cats_shuffle.caption, tokenizer: base.tokenizer}}
cache: {type: data.disk_cache@2, in: {fields: [encode_image.latent, tokenize.tokens, cats_bucket.bucket]}}
batches:
  type: data.batches@1
  in: {fields: [cache.latent, cache.tokens, cats_source.loss_weight, cats_source.role], bucket: cache.bucket}
optimizer: {type: train.optimizer@1, params: {name: adamw8bit, lr: 0.0002, weight_decay: 0.05}}
schedule: {type: train.lr_schedule@1, params: {name: cosine, warmup: 50.0}}
objective:
  type: train.diffusion_objective@1
  params: {offset_noise: 0.05, loss_weighting: min_snr_gamma, min_snr_gamma: 5.0}
train:
  type: train.loop@1
  in: {model: lora.adapted, batches: batches.batches, optimizer: optimizer.optimizer,
       schedule: schedule.schedule, objective: objective.objective,
       hooks: [sample_hook.hook, save_hook.hook, save_backups.hook, backups.hook]}
  params: {epochs: 20, gradient_accumulation: 2, precision: bf16, gradient_checkpointing: true,
           stop_parts: [text_encoder=10 epochs]}
previews:
  type: sd.sample@1
  params: {prompts: [a photo of a cat, a cat in the snow], seed: 42, steps: 20, negative_prompt: blurry,
           cfg: 7.5, width: 768, height: 768, scheduler: euler_a, clip_skip: 1}
sample_hook: {type: train.sample_hook@1, in: {samplers: [previews.sampler]}, params: {every: 100}}
save: {type: sd.save_lora@1, in: {model: train.trained}, params: {name: cats-lora, formats: kohya}}
periodic_saver: {type: sd.save_lora@1, params: {name: run1-cats-lora, formats: kohya}}
save_hook: {type: train.save_hook@1, in: {savers: [periodic_saver.saver]}, params: {every: 2, unit: epochs, skip_first: 1}}
save_backups: {type: train.backup_hook@1, params: {every: 2, unit: epochs, skip_first: 1}}
backups: {type: train.backup_hook@1, params: {every: 60, unit: minutes, keep: 2}}
"""


def _lora_config() -> dict:
    return {"__version": 11, "training_method": "LORA", "model_type": SD15,
            "base_model_name": "/models/sd15.safetensors", "output_model_destination": "models/cats-lora.safetensors",
            "output_dtype": "FLOAT_16", "learning_rate": 2e-4, "epochs": 20, "batch_size": 4,
            "gradient_accumulation_steps": 2, "learning_rate_scheduler": "COSINE", "learning_rate_warmup_steps": 100,
            "train_dtype": "BFLOAT_16", "resolution": "768", "offset_noise_weight": 0.05,
            "loss_weight_fn": "MIN_SNR_GAMMA", "loss_weight_strength": 5.0, "text_encoder_layer_skip": 1,
            "peft_type": "LORA", "lora_decompose": True, "lora_rank": 8, "lora_alpha": 8.0, "dropout_probability": 0.1,
            "layer_filter": "attn1,attn2", "layer_filter_preset": "custom",
            "unet": {"weight_dtype": "BFLOAT_16"}, "text_encoder": {"train": True, "stop_training_after": 10},
            "optimizer": {"optimizer": "ADAMW_8BIT", "weight_decay": 0.05},
            "sample_after": 200, "sample_after_unit": "STEP", "tensorboard": False,
            "save_every": 2, "save_every_unit": "EPOCH", "save_skip_first": 2, "save_filename_prefix": "run1-",
            "backup_after": 1, "backup_after_unit": "HOUR", "rolling_backup": True, "rolling_backup_count": 2,
            "concepts": [{"name": "cats", "path": "/data/cats", "include_subdirectories": True,
                          "image": {"enable_random_flip": True}, "text": {"enable_tag_shuffling": True}}],
            "samples": [{"prompt": "a photo of a cat", "diffusion_steps": 20, "width": 768, "height": 768,
                         "negative_prompt": "blurry"},
                        {"prompt": "a cat in the snow", "seed": 43, "diffusion_steps": 20, "width": 768,
                         "height": 768, "negative_prompt": "blurry"}]}


def test_import_equals_a_hand_written_graph_param_by_param(tmp_path):
    import yaml

    imported = import_onetrainer(write_config(tmp_path, _lora_config()))
    expected = yaml.safe_load(EXPECTED_LORA)
    got = imported.graph.nodes
    assert list(got) == list(expected)
    for node_id, body in expected.items():
        entry = got[node_id]
        assert entry.qualified_type == body["type"], node_id
        assert entry.params == body.get("params", {}), node_id
        links = {port: ([str(v) for v in value] if isinstance(value, list) else str(value))
                 for port, value in entry.inputs.items()}
        assert links == body.get("in", {}), node_id
    assert set(imported.graph.layout) == set(expected)
    assert not imported.report.of_kind(UNSUPPORTED), imported.report.table()
    mapped = {r.key: r.target for r in imported.report.of_kind(MAPPED)}
    assert mapped["learning_rate_warmup_steps"] == "schedule.warmup"     # 100 batches / accumulation 2
    assert mapped["text_encoder.stop_training_after"] == "train.stop_parts"
    assert mapped["optimizer.weight_decay"] == "optimizer.weight_decay"


def test_unmodified_default_config_reports_nothing_unsupported(tmp_path):
    config = D.train_config_defaults()
    config["__version"] = D.CURRENT_VERSION
    concepts = write_config(tmp_path, [D.concept_defaults() | {"path": str(dataset(tmp_path / "data"))}],
                            "concepts.json")
    imported = import_onetrainer(write_config(tmp_path, config), concepts=str(concepts))
    assert imported.report.of_kind(UNSUPPORTED) == []
    assert [r.key for r in imported.report.of_kind(MAPPED)] == ["model_type", "training_method", "concepts[0].path"]
    train = imported.graph.nodes["train"].params
    # OneTrainer's defaults, as values: 100 epochs in fp16, the text encoder stops after 30 of them
    assert train["epochs"] == 100 and train["precision"] == "fp16" and train["stop_parts"] == ["text_encoder=30 epochs"]
    assert imported.graph.nodes["finetune"].params == {"train_text_encoder": True}
    assert imported.graph.nodes["schedule"].params == {"warmup": 200.0}
    assert problems(imported.graph) == []


def test_old_version_config_migrates_and_runs(tmp_path):
    data = dataset(tmp_path / "data")
    old = {"model_type": SD15, "training_method": "FINE_TUNE", "base_model_name": "/m", "epochs": 4,
           "optimizer": "ADAMW", "optimizer_beta1": 0.8, "train_text_encoder_epochs": 2,
           "unet_learning_rate": 1e-4, "text_encoder_learning_rate": 5e-5, "gradient_checkpointing": False,
           "save_after": 1, "save_after_unit": "EPOCH", "resolution": "64", "batch_size": 2,
           "learning_rate_warmup_steps": 0, "tensorboard": False, "backup_after_unit": "NEVER",
           "sample_after_unit": "NEVER", "cache_dir": str(tmp_path / "cache"),
           "concepts": [{"name": "data", "path": str(data), "validation_concept": False}]}
    imported = import_onetrainer(write_config(tmp_path, old, "old.json"))
    assert imported.config.version == 0
    nodes = imported.graph.nodes
    assert nodes["optimizer"].params == {"beta1": 0.8, "lr": 3e-06}
    assert nodes["finetune"].params == {"unet_lr": 1e-4, "train_text_encoder": True, "text_encoder_lr": 5e-5}
    assert nodes["train"].params["stop_parts"] == ["text_encoder=2 epochs"]
    assert "gradient_checkpointing" not in nodes["train"].params
    assert nodes["save_hook"].params == {"every": 1, "unit": "epochs"}
    assert not imported.report.of_kind(UNSUPPORTED), imported.report.table()
    _, events = run_tiny(imported.graph, SD15, tmp_path / "run", max_steps=2)
    formats = {e["format"] for e in events if e["event"] == "saved" and e["node"] == "save"}
    assert formats and all("checkpoint" in f or "single" in f or "safetensors" in f for f in formats), formats


def test_embedding_config_trains_the_placeholder(tmp_path):
    data = dataset(tmp_path / "data")
    for txt in data.glob("*.txt"):
        txt.write_text("a photo of <embedding>")
    config = {"__version": 11, "training_method": "EMBEDDING", "model_type": SD15, "base_model_name": "/m",
              "resolution": "64", "batch_size": 2, "epochs": 1, "embedding_learning_rate": 5e-3,
              "embedding": {"placeholder": "<embedding>", "token_count": 2, "initial_embedding_text": "shape"},
              "output_model_destination": "embeddings/shape.safetensors", "tensorboard": False,
              "cache_dir": str(tmp_path / "cache"), "concepts": [{"path": str(data)}]}
    imported = import_onetrainer(write_config(tmp_path, config))
    nodes = imported.graph.nodes
    assert nodes["embedding"].params == {"placeholder": "<embedding>", "initial_text": "shape", "vectors": 2}
    assert str(nodes["tokenize"].inputs["tokenizer"]) == "embedding.tokenizer"
    assert nodes["optimizer"].params["lr"] == 5e-3
    assert nodes["save"].type == "sd.save_embedding" and nodes["save"].params["name"] == "shape"
    _, events = run_tiny(imported.graph, SD15, tmp_path / "run")
    assert any(e["event"] == "saved" and e["node"] == "save" for e in events)


def test_masked_training_loads_masks_and_weights_the_loss(tmp_path):
    data = dataset(tmp_path / "data")
    for image in data.glob("*.png"):
        Image.new("L", Image.open(image).size, 255).save(data / f"{image.stem}-masklabel.png")
    config = {"__version": 11, "training_method": "LORA", "model_type": SD15, "base_model_name": "/m",
              "resolution": "64", "batch_size": 2, "masked_training": True, "unmasked_probability": 0.2,
              "unmasked_weight": 0.3, "tensorboard": False, "cache_dir": str(tmp_path / "cache"),
              "concepts": [{"path": str(data), "image": {"enable_random_flip": True}}]}
    imported = import_onetrainer(write_config(tmp_path, config))
    nodes = imported.graph.nodes
    assert nodes["data"].params["masks"] is True
    assert str(nodes["data_crop"].inputs["mask"]) == "data_mask.mask"
    assert str(nodes["data_tensor"].inputs["mask"]) == "data_flip.mask"
    assert "cache.mask" in [str(x) for x in nodes["batches"].inputs["fields"]]
    assert nodes["objective"].params == {"masked_training": "on", "unmasked_probability": 0.2, "unmasked_weight": 0.3}
    run_tiny(imported.graph, SD15, tmp_path / "run")


@pytest.mark.parametrize("change, message", [
    ({"model_type": "QWEN"}, "model_type QWEN: nodetrainer has no family"),
    ({"training_method": "FINE_TUNE_VAE"}, "training_method FINE_TUNE_VAE: nodetrainer cannot train"),
])
def test_model_types_and_methods_we_lack_are_clear_errors(tmp_path, change, message):
    config = {"__version": 11, "training_method": "LORA", "model_type": SD15, "concepts": [{"path": "/d"}], **change}
    with pytest.raises(ValueError, match=message):
        import_onetrainer(write_config(tmp_path, config))


def test_cli_writes_the_graph_and_says_what_is_unsupported(tmp_path):
    config = {"__version": 11, "training_method": "LORA", "model_type": SD15, "base_model_name": "/m",
              "force_circular_padding": True, "concepts": [{"path": "/d"}]}
    path = write_config(tmp_path, config)
    out = tmp_path / "graph.yaml"
    r = run_cli("import", "onetrainer", path, "-o", out, "--report")
    assert r.returncode == 0, r.stderr
    assert "force_circular_padding" in r.stdout and "circular padding" in r.stdout
    assert "base_model_name" in r.stdout and "-> base.path" in r.stdout
    assert out.read_text().startswith("format: nodetrainer.graph/1")
    again = run_cli("import", "onetrainer", path, "-o", out)
    assert again.returncode == 2 and "exists" in again.stderr
    bad = run_cli("import", "onetrainer", tmp_path / "missing.json", "-o", tmp_path / "g2.yaml")
    assert bad.returncode == 2 and "not readable" in bad.stderr and "Traceback" not in bad.stderr


def test_an_interval_we_cannot_express_is_reported_and_the_hook_waits_for_a_command(tmp_path):
    config = {"__version": 11, "training_method": "LORA", "model_type": SD15, "base_model_name": "/m",
              "sample_after": 90, "sample_after_unit": "SECOND", "save_every": 1, "save_every_unit": "EPOCH",
              "backup_before_save": False, "concepts": [{"path": "/d"}], "samples": [{"prompt": "a cat"}]}
    imported = import_onetrainer(write_config(tmp_path, config))
    report = imported.report
    unsupported = {r.key: r.target for r in report.of_kind(UNSUPPORTED)}
    assert "90 seconds is not a whole number of minutes" in unsupported["sample_after"]
    assert "sample_after_unit" in unsupported
    assert not any(r.key == "sample_after" for r in report.of_kind("note"))
    assert imported.graph.nodes["sample_hook"].params == {"every": 0}
    assert "save_backups" not in imported.graph.nodes                     # no backup before each save
    assert {r.key: r.target for r in report.of_kind(MAPPED)}["backup_before_save"].startswith("(no backup")
