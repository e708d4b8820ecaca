"""Reading OneTrainer configs: defaults, presets, migrations, concepts/samples files, errors."""

import json

import pytest

from runtime.interop.onetrainer import defaults as D
from runtime.interop.onetrainer.config import MAX_FILE_BYTES, read_config


def _write(path, data):
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


def _full_default():
    """A full saved config, as OneTrainer writes it with nothing changed (concepts embedded, empty)."""
    config = D.train_config_defaults()
    config["__version"] = D.CURRENT_VERSION
    config["concepts"] = []
    return config


def test_default_config_reports_nothing_changed(tmp_path):
    result = read_config(_write(tmp_path / "config.json", _full_default()))
    assert result.changed == frozenset()
    assert result.unknown == frozenset()
    assert result.values["learning_rate"] == 3e-06
    assert result.values["text_encoder"]["stop_training_after"] == 30
    assert result.values["optimizer"]["optimizer"] == "ADAMW"
    assert not result.preset and result.version == D.CURRENT_VERSION
    ui = read_config(_write(tmp_path / "config.json", _full_default()), optimizer_rule="ui")
    assert ui.changed == frozenset() and ui.values["optimizer"]["weight_decay"] == 0.01


def test_changed_lists_dotted_keys_of_sub_objects(tmp_path):
    config = _full_default()
    config["unet"]["learning_rate"] = 1e-5
    config["optimizer"]["beta1"] = 0.95
    config["epochs"] = 7
    result = read_config(_write(tmp_path / "config.json", config))
    assert result.changed == {"unet.learning_rate", "optimizer.beta1", "epochs"}


def test_preset_is_laid_over_defaults_without_migration(tmp_path):
    preset = {"model_type": "STABLE_DIFFUSION_XL_10_BASE", "training_method": "LORA",
              "output_model_format": "SAFETENSORS", "noising_weight": 2.0,
              "optimizer": {"optimizer": "ADAFACTOR"}, "unet": {"weight_dtype": "BFLOAT_16"},
              "concepts": []}
    result = read_config(_write(tmp_path / "#sdxl lora.json", preset))
    assert result.preset
    # Not migrated: 10->11 would rename the format, 3->4 would change the noising distribution.
    assert result.values["output_model_format"] == "SAFETENSORS"
    assert result.values["timestep_distribution"] == "UNIFORM"
    assert result.values["unet"]["train"] is True            # keys absent from the preset keep defaults
    assert result.values["optimizer"]["eps"] is None
    assert result.changed == {"model_type", "training_method", "noising_weight", "optimizer.optimizer",
                              "unet.weight_dtype"}


def test_version_0_config_migrates_to_current_meaning(tmp_path):
    old = {"model_type": "STABLE_DIFFUSION_15", "training_method": "LORA",
           "optimizer": "ADAMW", "optimizer_beta1": 0.8, "optimizer_weight_decay": 0.02,
           "train_unet": False, "train_text_encoder_epochs": 5, "unet_learning_rate": 1e-4,
           "weight_dtype": "BFLOAT_16", "unet_weight_dtype": "NONE", "text_encoder_weight_dtype": "FLOAT_16",
           "vae_model_name": "my/vae", "min_snr_gamma": 5.0, "noising_weight": 1.5, "noising_bias": 0.75,
           "gradient_checkpointing": False, "save_after": 3, "save_after_unit": "EPOCH",
           "lora_layers": "attn", "lora_layer_preset": None, "lora_layers_regex": True,
           "output_model_format": "SAFETENSORS", "token_count": 3, "concepts": []}
    result = read_config(_write(tmp_path / "old.json", old))
    v = result.values
    assert result.version == 0 and not result.preset
    assert v["optimizer"]["optimizer"] == "ADAMW" and v["optimizer"]["beta1"] == 0.8
    assert v["optimizer"]["weight_decay"] == 0.02
    assert v["optimizer_defaults"]["ADAMW"]["beta1"] == 0.8
    assert v["unet"]["train"] is False and v["unet"]["learning_rate"] == 1e-4
    assert v["text_encoder"]["stop_training_after"] == 5
    assert v["text_encoder"]["stop_training_after_unit"] == "EPOCH"
    assert v["unet"]["weight_dtype"] == "BFLOAT_16"          # inherited the old global dtype
    assert v["text_encoder"]["weight_dtype"] == "FLOAT_16"
    assert v["vae"]["model_name"] == "my/vae"
    assert (v["loss_weight_fn"], v["loss_weight_strength"]) == ("MIN_SNR_GAMMA", 5.0)
    assert v["timestep_distribution"] == "SIGMOID" and v["noising_bias"] == 0.25
    assert v["unet"]["gradient_checkpointing"] is False
    assert (v["save_every"], v["save_every_unit"]) == (3, "EPOCH")
    assert (v["layer_filter"], v["layer_filter_preset"], v["layer_filter_regex"]) == ("attn", "full", True)
    assert v["output_model_format"] == "LEGACY_LORA"
    assert "weight_dtype" not in v and "min_snr_gamma" not in v
    assert any("token_count" in note for note in result.notes)
    assert result.unknown == frozenset()


def test_version_8_prior_becomes_transformer_for_transformer_models(tmp_path):
    old = {"__version": 8, "model_type": "FLUX_DEV_1", "prior": {"learning_rate": 2e-4, "weight_dtype": "NONE"},
           "weight_dtype": "FLOAT_8", "gradient_checkpointing": "CPU_OFFLOADED", "layer_offload_fraction": 0.5,
           "enable_activation_offloading": True, "concepts": []}
    v = read_config(_write(tmp_path / "v8.json", old)).values
    assert v["transformer"]["learning_rate"] == 2e-4
    assert v["transformer"]["weight_dtype"] == "FLOAT_8"
    assert v["transformer"]["offload_fraction"] == 0.5 and v["transformer"]["activation_offloading"] is True


def test_embedded_and_separate_concepts_are_the_same(tmp_path):
    concepts = [{"name": "cats", "path": "/data/cats", "seed": 1, "repeats": 2.0, "validation_concept": False,
                 "image": {"enable_random_flip": True}, "text": {"prompt_source": "concept"}},
                {"__version": 2, "name": "val", "path": "/data/val", "seed": 2, "type": "VALIDATION"}]
    embedded = _full_default()
    embedded["concepts"] = concepts
    pointed = _full_default()
    pointed["concepts"] = None
    (tmp_path / "training_concepts").mkdir()
    _write(tmp_path / "training_concepts" / "concepts.json", concepts)
    given = _full_default()
    given["concepts"] = None
    a = read_config(_write(tmp_path / "embedded.json", embedded))
    b = read_config(_write(tmp_path / "pointed.json", pointed))
    concepts_file = str(tmp_path / "training_concepts" / "concepts.json")
    c = read_config(_write(tmp_path / "given.json", given), concepts=concepts_file)
    assert a.concepts == b.concepts == c.concepts
    first = a.concepts[0]
    assert first["balancing"] == 2.0 and first["type"] == "STANDARD" and "repeats" not in first
    assert first["image"]["enable_random_flip"] is True and first["image"]["enable_crop_jitter"] is True
    assert a.concept_changed[0] == {"name", "path", "balancing", "image.enable_random_flip", "text.prompt_source"}
    assert a.concepts[1]["type"] == "VALIDATION"


def test_samples_take_model_specific_defaults_and_missing_file_is_a_note(tmp_path):
    config = _full_default()
    config["model_type"] = "STABLE_DIFFUSION_XL_10_BASE"
    config["samples"] = [{"prompt": "a cat", "seed": 7}]
    result = read_config(_write(tmp_path / "config.json", config))
    assert result.samples[0]["width"] == 1024 and result.samples[0]["noise_scheduler"] == "EULER_A"
    assert result.sample_changed == [{"prompt", "seed"}]
    del config["samples"]
    result = read_config(_write(tmp_path / "config.json", config))
    assert result.samples is None and any("samples file" in note for note in result.notes)


def test_secrets_are_never_kept(tmp_path):
    config = _full_default()
    config["secrets"] = {"huggingface_token": "hf_secret"}
    result = read_config(_write(tmp_path / "config.json", config))
    assert "secrets" not in result.values
    assert "hf_secret" not in repr(result)


def test_from_dict_conversions(tmp_path):
    config = _full_default()
    config.update(epochs=2.9, clip_grad_norm=None, stale_key=1)
    config["optimizer"]["growth_rate"] = "inf"
    result = read_config(_write(tmp_path / "config.json", config))
    assert result.values["epochs"] == 2                    # ints truncate
    assert result.values["clip_grad_norm"] is None         # nullable: no clipping
    assert result.values["optimizer"]["growth_rate"] == float("inf")
    assert result.unknown == {"stale_key"}
    assert result.changed == {"epochs", "clip_grad_norm", "optimizer.growth_rate"}


@pytest.mark.parametrize("content, message", [
    ("{not json", "not JSON"),
    ("[1, 2]", "must be a JSON object, got a list"),
    (json.dumps({"__version": 99}), "newer than the newest known (11)"),
    (json.dumps({"__version": "x"}), "'__version' must be a whole number"),
])
def test_bad_config_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError) as info:
        read_config(str(path))
    assert message in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_concepts_file_is_an_error(tmp_path):
    config = _full_default()
    config["concepts"] = None
    config["concept_file_name"] = "nowhere/concepts.json"
    with pytest.raises(ValueError, match=r"concepts file 'nowhere/concepts.json' \(concept_file_name\) not found"):
        read_config(_write(tmp_path / "config.json", config))
    with pytest.raises(ValueError, match="missing.json: concepts file not readable"):
        read_config(_write(tmp_path / "config.json", config), concepts=str(tmp_path / "missing.json"))


def test_oversized_file_is_refused(tmp_path):
    path = tmp_path / "huge.json"
    with open(path, "wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(ValueError, match="more than the"):
        read_config(str(path))


def test_defaults_table_is_complete():
    config = D.train_config_defaults()
    assert len(config) + 1 == 161                            # every TrainConfig key but secrets
    assert len(D.OPTIMIZER) == 104 and len(D.MODEL_PART) == 14
    assert len(D.CONCEPT_IMAGE) == 22 and len(D.CONCEPT_TEXT) == 15 and len(D.SAMPLE) == 23


def test_ui_optimizer_rule_loads_the_optimizer_set_or_the_saved_one(tmp_path):
    preset = {"optimizer": {"optimizer": "ADAFACTOR"}, "concepts": []}
    path = _write(tmp_path / "#flux ft.json", preset)
    cli = read_config(path)
    ui = read_config(path, optimizer_rule="ui")
    assert cli.values["optimizer"]["eps"] is None
    assert ui.values["optimizer"]["eps"] == 1e-30 and ui.values["optimizer"]["stochastic_rounding"] is True
    assert ui.changed == {"optimizer.optimizer"}
    preset["optimizer_defaults"] = {"ADAFACTOR": {"optimizer": "ADAFACTOR", "fused_back_pass": True}}
    ui = read_config(_write(tmp_path / "#flux ft.json", preset), optimizer_rule="ui")
    assert ui.values["optimizer"]["fused_back_pass"] is True
    assert "optimizer.fused_back_pass" in ui.changed and "optimizer_defaults" in ui.changed


def test_pointer_files_resolve_from_the_onetrainer_root(tmp_path):
    (tmp_path / "training_presets").mkdir()
    (tmp_path / "training_concepts").mkdir()
    (tmp_path / "training_samples").mkdir()
    _write(tmp_path / "training_concepts" / "concepts.json", [{"name": "dogs", "path": "/d", "seed": 3}])
    _write(tmp_path / "training_samples" / "samples.json", [{"prompt": "a dog"}])
    config = _full_default()
    config["concepts"] = None
    result = read_config(_write(tmp_path / "training_presets" / "#.json", config))
    assert not result.preset                                   # "#.json" is a full saved config
    assert [c["name"] for c in result.concepts] == ["dogs"]
    assert result.samples[0]["prompt"] == "a dog" and result.samples[0]["cfg_scale"] == 7.5  # SD1.5 default
