"""nodetrainer export onetrainer: graph -> OneTrainer config, checked by importing the export again."""

import json

import pytest

from runtime.graph import Link
from runtime.graph_file import dumps_graph, load_graph
from runtime.interop.onetrainer import defaults as D
from runtime.interop.onetrainer.config import read_config
from runtime.interop.onetrainer.export import export, export_file
from runtime.interop.onetrainer.importer import import_onetrainer
from runtime.paths import GRAPHS_DIR


def _concept(name, **kw):
    return {"name": name, "path": f"/data/{name}", **kw}


def _config(**kw):
    return {"__version": D.CURRENT_VERSION, "model_type": "STABLE_DIFFUSION_15", "base_model_name": "/models/sd15",
            "concepts": [_concept("cats")], **kw}


def round_trip(tmp_path, config):
    """Import ``config``, export the graph, import the export: returns (first import, exported config, second)."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first_path = tmp_path / "a" / "config.json"
    first_path.write_text(json.dumps(config), encoding="utf-8")
    first = import_onetrainer(first_path)
    exported = export(first.graph)
    # the same file name: the graph's name says where it came from
    second_path = tmp_path / "b" / "config.json"
    second_path.write_text(json.dumps(exported), encoding="utf-8")
    second = import_onetrainer(second_path)
    assert dumps_graph(second.graph) == dumps_graph(first.graph)
    read = read_config(str(second_path))
    assert read.unknown == frozenset()
    assert exported["__version"] == D.CURRENT_VERSION
    assert set(exported) == set(D.train_config_defaults()) | {"__version"}
    concept_keys = set(D.concept_defaults()) | {"__version"}
    for concept in exported["concepts"]:
        assert set(concept) == concept_keys and concept["__version"] == D.CONCEPT_VERSION
        assert set(concept["image"]) == set(D.CONCEPT_IMAGE) | {"__version"}
        assert set(concept["text"]) == set(D.CONCEPT_TEXT) | {"__version"}
    for sample in exported["samples"]:
        assert set(sample) == set(D.SAMPLE) | {"__version"}
    for part in D.MODEL_PARTS:
        assert set(exported[part]) == set(D.MODEL_PART) | {"__version"}
    return first, exported, second


def test_lora_two_concepts_with_every_concept_option(tmp_path):
    config = _config(
        training_method="LORA", output_model_format="KOHYA_LORA", output_model_destination="/out/my_lora.safetensors",
        output_dtype="BFLOAT_16", lora_rank=8, lora_alpha=4.0, dropout_probability=0.1, layer_filter="attn1, ff.net",
        learning_rate=2e-4, epochs=10, batch_size=2, resolution="512,768", text_encoder_layer_skip=1,
        concepts=[
            _concept("cats", balancing=2.0, balancing_strategy="SAMPLES", loss_weight=0.5, include_subdirectories=True,
                     image_variations=3,
                     image={"enable_crop_jitter": False, "enable_random_flip": True, "enable_random_rotate": True,
                            "random_rotate_max_angle": 12.0, "enable_random_brightness": True,
                            "random_brightness_max_strength": 0.2, "enable_random_contrast": True,
                            "random_contrast_max_strength": 0.3, "enable_random_saturation": True,
                            "random_saturation_max_strength": 0.4, "enable_random_hue": True,
                            "random_hue_max_strength": 0.1, "enable_resolution_override": True,
                            "resolution_override": "640"},
                     text={"enable_tag_shuffling": True, "tag_delimiter": ";", "keep_tags_count": 2,
                           "tag_dropout_enable": True, "tag_dropout_probability": 0.25}),
            _concept("dogs", type="PRIOR_PREDICTION", text={"prompt_source": "filename", "tag_dropout_enable": True,
                                                             "tag_dropout_probability": 0.5},
                     image={"enable_fixed_flip": True}),
            _concept("held_out", type="VALIDATION")],
        validation=True, validate_after=2, validate_after_unit="EPOCH",
        samples=[{"prompt": "a cat", "seed": 1}, {"prompt": "a dog", "seed": 2},
                 {"prompt": "a bird", "random_seed": True, "noise_scheduler": "DDIM", "cfg_scale": 5.0}])
    first, exported, _ = round_trip(tmp_path, config)
    kinds = {e.type for e in first.graph.nodes.values()}
    assert {"data.random_contrast", "data.random_saturation", "data.drop_tags", "train.validation_hook"} <= kinds
    assert [c["type"] for c in exported["concepts"]] == ["STANDARD", "PRIOR_PREDICTION", "VALIDATION"]
    cats, dogs = exported["concepts"][:2]
    # the first concept's resolution is the global one; another concept's differs by an override
    assert exported["resolution"] == "640" and not cats["image"]["enable_resolution_override"]
    assert dogs["image"]["enable_resolution_override"] and dogs["image"]["resolution_override"] == "512,768"
    assert cats["text"]["tag_delimiter"] == ";" and cats["text"]["keep_tags_count"] == 2
    assert cats["balancing_strategy"] == "SAMPLES" and cats["image_variations"] == 3
    assert exported["layer_filter"] == "attn1,ff.net" and exported["layer_filter_regex"] is False
    assert exported["text_encoder_layer_skip"] == 1
    assert exported["output_model_destination"] == "/out/my_lora.safetensors"
    assert [s["prompt"] for s in exported["samples"]] == ["a cat", "a dog", "a bird"]
    assert exported["samples"][2]["random_seed"] is True


def test_lora_regex_filter_and_masked_training(tmp_path):
    config = _config(training_method="LORA", output_model_format="DIFFUSERS_LORA", layer_filter="attn[12],^down",
                     layer_filter_regex=True, masked_training=True, unmasked_weight=0.3, peft_type="LOHA",
                     aspect_ratio_bucketing=False, resolution="768")
    _, exported, second = round_trip(tmp_path, config)
    assert exported["layer_filter_regex"] is True and exported["layer_filter"] == "attn[12],^down"
    assert exported["masked_training"] is True and exported["unmasked_weight"] == 0.3
    assert exported["aspect_ratio_bucketing"] is False and exported["peft_type"] == "LOHA"
    assert any(e.type == "data.load_mask" for e in second.graph.nodes.values())


def test_finetune_part_learning_rates_and_text_encoder_stop(tmp_path):
    config = _config(training_method="FINE_TUNE", output_model_format="DIFFUSERS", epochs=50, learning_rate=1e-5,
                     output_model_destination="/out/finetuned",
                     unet={"learning_rate": 2e-6, "weight_dtype": "BFLOAT_16"},
                     text_encoder={"train": True, "learning_rate": 5e-7, "stop_training_after": 10,
                                   "stop_training_after_unit": "EPOCH", "weight_dtype": "FLOAT_16"})
    first, exported, _ = round_trip(tmp_path, config)
    assert first.graph.nodes["train"].params["stop_parts"] == ["text_encoder=10 epochs"]
    assert exported["text_encoder"]["stop_training_after"] == 10
    assert exported["text_encoder"]["stop_training_after_unit"] == "EPOCH"
    assert exported["unet"]["learning_rate"] == 2e-6 and exported["text_encoder"]["learning_rate"] == 5e-7
    assert exported["unet"]["weight_dtype"] == "BFLOAT_16" and exported["output_model_format"] == "DIFFUSERS"
    assert exported["output_model_destination"] == "/out/finetuned"


def test_embedding(tmp_path):
    config = _config(training_method="EMBEDDING", learning_rate=5e-3,
                     embedding={"placeholder": "<cat>", "token_count": 4, "initial_embedding_text": "cat"})
    _, exported, _ = round_trip(tmp_path, config)
    assert exported["embedding"]["placeholder"] == "<cat>" and exported["embedding"]["token_count"] == 4
    assert exported["output_model_format"] == "SAFETENSORS" and exported["learning_rate"] == 5e-3


@pytest.mark.parametrize("unit,every", [("STEP", 100), ("EPOCH", 2), ("MINUTE", 45)])
def test_ema_saves_backups_cosine_warmup_accumulation(tmp_path, unit, every):
    config = _config(training_method="LORA", output_model_format="KOHYA_LORA", ema="GPU", ema_decay=0.995,
                     ema_update_step_interval=2, non_ema_sampling=False,
                     learning_rate_scheduler="COSINE", learning_rate_warmup_steps=100, gradient_accumulation_steps=2,
                     save_every=every, save_every_unit=unit, save_skip_first=every * 2, save_filename_prefix="ckpt-",
                     backup_after=every, backup_after_unit=unit, rolling_backup=True, rolling_backup_count=2,
                     sample_after=every, sample_after_unit=unit, sample_skip_first=every,
                     samples=[{"prompt": "a cat"}])
    first, exported, _ = round_trip(tmp_path, config)
    assert first.graph.nodes["schedule"].params["warmup"] == 50.0
    assert exported["learning_rate_warmup_steps"] == 100 and exported["gradient_accumulation_steps"] == 2
    assert (exported["save_every"], exported["save_every_unit"]) == (every, unit)
    assert (exported["backup_after"], exported["backup_after_unit"]) == (every, unit)
    assert exported["save_filename_prefix"] == "ckpt-" and exported["backup_before_save"] is True
    assert exported["ema"] == "GPU" and exported["ema_decay"] == 0.995 and exported["non_ema_sampling"] is False
    assert exported["rolling_backup"] is True and exported["rolling_backup_count"] == 2


def test_restart_schedule_timesteps_and_losses(tmp_path):
    config = _config(training_method="LORA", output_model_format="KOHYA_LORA",
                     learning_rate_scheduler="COSINE_WITH_HARD_RESTARTS", learning_rate_cycles=3,
                     learning_rate_min_factor=0.1, timestep_distribution="LOGIT_NORMAL", noising_weight=0.5,
                     noising_bias=-0.25, min_noising_strength=0.1, max_noising_strength=0.9, mae_strength=0.5,
                     loss_weight_fn="MIN_SNR_GAMMA", loss_weight_strength=3.0, force_v_prediction=True,
                     offset_noise_weight=0.05, train_dtype="BFLOAT_16", clip_grad_norm=None, tensorboard=False,
                     backup_after_unit="NEVER")
    _, exported, _ = round_trip(tmp_path, config)
    assert exported["timestep_distribution"] == "LOGIT_NORMAL" and exported["noising_bias"] == -0.25
    assert exported["learning_rate_cycles"] == 3.0 and exported["loss_weight_fn"] == "MIN_SNR_GAMMA"
    assert exported["clip_grad_norm"] is None and exported["tensorboard"] is False


ASSORTED = {
    "schedule-free optimizer with its own warmup": dict(
        training_method="LORA", output_model_format="KOHYA_LORA", learning_rate_warmup_steps=30, learning_rate=1.0,
        optimizer={"optimizer": "PRODIGY_PLUS_SCHEDULE_FREE", "weight_decay": 0.01, "d_coef": 2.0}),
    "warmup fraction, linear, 8-bit AdamW params": dict(
        training_method="LORA", output_model_format="KOHYA_LORA", learning_rate_warmup_steps=0.05,
        learning_rate_scheduler="LINEAR", optimizer={"optimizer": "ADAMW_8BIT", "beta1": 0.8, "eps": 1e-7}),
    "one warmup update, EMA on the CPU, TF32, flash attention, compile": dict(
        training_method="LORA", output_model_format="KOHYA_LORA", learning_rate_warmup_steps=1.5, ema="CPU",
        train_dtype="TFLOAT_32", train_device="cpu", compile=True, attention_mechanism="FLASH"),
    "fine-tune, a stop in steps with accumulation 3, masks, validation": dict(
        training_method="FINE_TUNE", output_model_format="ORIGINAL_SINGLE_FILE", gradient_accumulation_steps=3,
        epochs=5, text_encoder={"train": True, "stop_training_after": 300, "stop_training_after_unit": "STEP"},
        masked_training=True, validation=True, concepts=[{"path": "/d/x y"}, {"path": "/d/v", "type": "VALIDATION"}]),
    "LoKr, samples only on command, no checkpointing": dict(
        training_method="LORA", output_model_format="KOHYA_LORA", samples=[{"prompt": "a"}], sample_after=0,
        sample_after_unit="NEVER", peft_type="LOKR", lokr_dim=4, lokr_decompose_factor=2,
        unet={"gradient_checkpointing": False}),
    "OFT, no latent cache": dict(training_method="LORA", output_model_format="KOHYA_LORA", peft_type="OFT_2",
                                 oft_block_size=16, latent_caching=False, cache_dir="/cache/x"),
    "DoRA, cache folder, exact square, zero SNR, sigmoid timesteps, P2": dict(
        training_method="LORA", output_model_format="KOHYA_LORA", lora_decompose=True, cache_dir="/cache/x",
        resolution="1024x1024", rescale_noise_scheduler_to_zero_terminal_snr=True, timestep_distribution="SIGMOID",
        noising_weight=3.0, noising_bias=0.1, loss_weight_fn="P2", loss_weight_strength=0.5),
}


@pytest.mark.parametrize("case", list(ASSORTED))
def test_assorted_settings_round_trip(tmp_path, case):
    round_trip(tmp_path, _config(**ASSORTED[case]))


FAMILIES = {
    "STABLE_DIFFUSION_XL_10_BASE": dict(training_method="LORA", output_model_format="KOHYA_LORA",
                                        text_encoder_layer_skip=1, text_encoder_2_layer_skip=1, epochs=40,
                                        samples=[{"prompt": "a cat", "cfg_scale": 6.0}]),
    "FLUX_DEV_1": dict(training_method="LORA", output_model_format="DIFFUSERS_LORA", text_encoder_2={"train": False},
                       text_encoder_2_sequence_length=256, transformer={"guidance_scale": 3.0},
                       timestep_distribution="LOGIT_NORMAL", dynamic_timestep_shifting=True,
                       samples=[{"prompt": "a cat", "cfg_scale": 4.0}]),
}


@pytest.mark.parametrize("model_type", list(FAMILIES))
def test_other_families_round_trip(tmp_path, model_type):
    from runtime.interop.onetrainer.family import family_for

    if family_for(model_type) is None:
        pytest.skip(f"no OneTrainer table for {model_type} yet")
    _, exported, _ = round_trip(tmp_path, _config(**{**FAMILIES[model_type], "model_type": model_type}))
    assert exported["model_type"] == model_type
    if model_type == "FLUX_DEV_1":
        assert exported["text_encoder_2_sequence_length"] == 256
        assert exported["transformer"]["guidance_scale"] == 3.0 and exported["samples"][0]["cfg_scale"] == 4.0
    else:
        assert exported["text_encoder_layer_skip"] == exported["text_encoder_2_layer_skip"] == 1


def test_values_the_importer_cannot_write_do_not_map(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(_config(training_method="LORA", output_model_format="KOHYA_LORA",
                                       layer_filter="attentions")), encoding="utf-8")
    graph = import_onetrainer(path).graph
    graph.nodes["objective"].params.update(loss="l1", min_snr_gamma=5.0, loss_weighting="p2")
    graph.nodes["lora"].params["target_regex"] = "up_blocks"
    graph.nodes["schedule"].params["warmup"] = 2.5
    flip = next(n for n, e in graph.nodes.items() if e.type == "data.scale_crop")
    graph.nodes[flip].params["crop"] = "random"  # maps: enable_crop_jitter
    with pytest.raises(ValueError) as e:
        export(graph)
    lines = {line.strip().split(":")[0] for line in str(e.value).splitlines()[1:]}
    assert lines == {"node objective (train.diffusion_objective) param loss",
                     "node objective (train.diffusion_objective) param min_snr_gamma",
                     "node lora (sd.lora_setup) param target_regex",
                     "node schedule (train.lr_schedule) param warmup"}


def test_a_node_that_does_not_map_is_named(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(_config(training_method="LORA", output_model_format="KOHYA_LORA")), encoding="utf-8")
    graph = import_onetrainer(path).graph
    tokenize = next(n for n, e in graph.nodes.items() if e.type == "sd.tokenize")
    caption = graph.nodes[tokenize].inputs["caption"]
    graph.add_node("dropout", "data.caption_dropout", 1, {"probability": 0.1})
    graph.nodes["dropout"].inputs["caption"] = caption
    graph.nodes[tokenize].inputs["caption"] = Link("dropout", "caption")
    graph.nodes["train"].params["max_steps"] = 10
    with pytest.raises(ValueError) as e:
        export(graph)
    lines = set(str(e.value).splitlines()[1:])
    assert lines == {"  node dropout (data.caption_dropout): no OneTrainer setting makes this node",
                     "  node train (train.loop) param max_steps: 10: OneTrainer has no such setting (OneTrainer "
                     "runs by epochs and has no max-steps setting)"}


def test_shipped_sd15_lora_preset_names_what_does_not_map():
    graph = load_graph(GRAPHS_DIR / "sd15-lora.yaml")
    with pytest.raises(ValueError) as e:
        export(graph)
    problems = {line.strip() for line in str(e.value).splitlines()[1:]}
    assert problems == {
        "node base (sd.load_model) param path: graph input 'base_model' has no default: give it one (or --set "
        "it) before exporting",
        "node concept (data.concept) param folder: graph input 'dataset' has no default: give it one (or --set "
        "it) before exporting",
        "node lora (sd.lora_setup) param targets: attn-mlp: OneTrainer selects layers by a layer_filter (a "
        "target_regex here)",
        "node lora (sd.lora_setup) param seed: 42: OneTrainer has no such setting (only the default 0 maps)",
        "node train (train.loop) param max_steps: 2000: OneTrainer has no such setting (OneTrainer runs by epochs "
        "and has no max-steps setting)",
        "node concept (data.concept) param caption: sidecar: OneTrainer reads each image's .txt (through "
        "data.load_text, lines random) or the file name",
        "node bucket (data.aspect_bucket) param quantization: 64 has no OneTrainer value (the nearest imports as 8)",
        "node save (sd.save_lora) param formats: 'both': OneTrainer writes one LoRA format",
        "node tensorboard (train.tensorboard) param every: 10: OneTrainer has no such setting (only the default 1 "
        "maps)",
        "node sample (sd.sample): no OneTrainer setting makes this node",
    }
    assert str(e.value).startswith("cannot export 'SD 1.5 LoRA' as a OneTrainer config; 10 things do not map:")


def test_export_file_writes_the_config(tmp_path):
    path = tmp_path / "config.json"
    config = _config(training_method="LORA", output_model_format="KOHYA_LORA", concepts=[_concept("cats")])
    config["concepts"][0]["path"] = "imgs"  # relative: to the graph's folder, where it exists
    (tmp_path / "imgs").mkdir()
    path.write_text(json.dumps(config), encoding="utf-8")
    graph_path = tmp_path / "graph.yaml"
    graph_path.write_text(import_onetrainer(path).text(), encoding="utf-8")
    out = tmp_path / "out.json"
    warnings = export_file(graph_path, out)
    written = json.loads(out.read_text(encoding="utf-8"))
    assert written["training_method"] == "LORA" and written["concepts"][0]["path"] == str(tmp_path / "imgs")
    assert warnings == [f"cats.folder: imgs is relative to the graph's folder: written as {tmp_path / 'imgs'}"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]


def test_export_file_of_a_graph_that_does_not_map_writes_nothing(tmp_path):
    out = tmp_path / "out.json"
    with pytest.raises(ValueError, match="1 thing does not map:\n  node lora \\(sd.lora_setup\\): input model "
                                         "must come from sd.load_model"):
        export_file(GRAPHS_DIR / "quickstart.yaml", out)
    assert not out.exists()


def test_a_quantizing_loader_gives_the_parts_it_stores_quantized_dtypes(tmp_path):
    from runtime.interop.onetrainer.family import family_for

    family = family_for("FLUX_DEV_1")
    if family is None or type(family).quantize_params is type(family).__mro__[1].quantize_params:
        pytest.skip("no Flux table with quantize_params yet")
    path = tmp_path / "config.json"
    path.write_text(json.dumps(_config(model_type="FLUX_DEV_1", **FAMILIES["FLUX_DEV_1"])), encoding="utf-8")
    graph = import_onetrainer(path).graph
    graph.nodes["base"].params["quantize"] = "nf4"
    with pytest.raises(ValueError, match="param transformer_dtype: 'float32'"):  # OneTrainer: one dtype per part
        export(graph)
    for key in ("transformer_dtype", "text_encoder_2_dtype"):  # the loader's own compute dtype
        graph.nodes["base"].params.pop(key, None)
    exported = export(graph)
    assert exported["transformer"]["weight_dtype"] == exported["text_encoder_2"]["weight_dtype"] == "NFLOAT_4"
    assert exported["text_encoder"]["weight_dtype"] != "NFLOAT_4"
    graph.nodes["base"].params["transformer_dtype"] = "float16"
    with pytest.raises(ValueError, match="node base \\(flux.load_model\\) param transformer_dtype"):
        export(graph)
