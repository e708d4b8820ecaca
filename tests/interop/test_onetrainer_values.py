"""OneTrainer values mean the same in nodetrainer: one test per rule of onetrainer-config.md §6."""

import re

import pytest

from runtime.interop.onetrainer import values as v
from runtime.interop.onetrainer.values import Unsupported


# §6.1 warmup: w > 1 counts batches (÷ accumulation), 0 < w <= 1 is a fraction, <= 0 none
def test_warmup_counts_batches_over_accumulation():
    assert v.warmup(100, 4).params == {"train.lr_schedule.warmup": 25.0}
    assert v.warmup(10, 3).params == {"train.lr_schedule.warmup": 3.0}  # int(10 / 3)
    assert v.warmup(3, 4).params == {"train.lr_schedule.warmup": 0.0}  # int(0.75): no warmup update
    assert v.warmup(0.1, 4).params == {"train.lr_schedule.warmup": 0.1}  # a fraction: accumulation irrelevant
    assert v.warmup(0, 2).params == {"train.lr_schedule.warmup": 0.0}
    assert v.warmup(-5, 2).params == {"train.lr_schedule.warmup": 0.0}
    with pytest.raises(Unsupported, match="learning_rate_warmup_steps = 1"):
        v.warmup(1, 1)  # OneTrainer: the fraction 1.0; ours: one update
    sf = v.warmup(100, 4, schedule_free=True).params  # raw value to the optimizer, constant schedule
    assert sf == {"train.lr_schedule.name": "constant", "train.lr_schedule.warmup": 0.0,
                  "train.optimizer.warmup_steps": 100}


# §6.1 epochs vs steps: epochs passes, no max-steps key, accumulation carried over
def test_run_length_is_epochs_without_max_steps():
    assert v.run_length(100, 2).params == {"train.loop.epochs": 100, "train.loop.max_steps": 0,
                                           "train.loop.gradient_accumulation": 2}
    with pytest.raises(Unsupported, match="epochs = 0"):
        v.run_length(0)


# §6.1 scalers: sqrt for the LR, linear tables
def test_scaler_factors():
    assert [v.scaler_factor(s, 4, 3, 2) for s in
            ("NONE", "BATCH", "GLOBAL_BATCH", "GRADIENT_ACCUMULATION", "BOTH", "GLOBAL_BOTH")] == [1, 4, 8, 3, 12, 24]
    assert v.loss_scaler("BATCH", batch_size=1).params == {}  # a scale of 1 changes nothing
    with pytest.raises(Unsupported, match="loss_scaler = 'BOTH': scales the loss by 12"):
        v.loss_scaler("BOTH", 4, 3)


# §6.2 STEP counts batches, EPOCH epochs, 0 = never; skip tests "elapsed + 1 > n"
def test_hook_schedule_steps_and_epochs():
    s = v.hook_schedule("save", 1000, "STEP", skip_first=500, gradient_accumulation_steps=4).params
    assert s == {"train.save_hook.every": 250, "train.save_hook.unit": "steps", "train.save_hook.skip_first": 125}
    # sample checks before the batch: elapsed 500 batches (125 updates) already passes the skip test
    s = v.hook_schedule("sample", 1000, "STEP", skip_first=500, gradient_accumulation_steps=4).params
    assert s["train.sample_hook.skip_first"] == 124
    # saves skip while batches done <= 502: updates 1..125 (500 batches) skip, 126 (504) may save
    assert v.hook_schedule("save", 8, "STEP", skip_first=502, gradient_accumulation_steps=4).params[
        "train.save_hook.skip_first"] == 125
    m = v.hook_schedule("save", 10, "STEP", gradient_accumulation_steps=4)
    assert m.params["train.save_hook.every"] == 3 and "not a whole number of updates" in m.notes[0]
    e = v.hook_schedule("backup", 2, "EPOCH").params
    assert (e["train.backup_hook.every"], e["train.backup_hook.unit"]) == (2, "epochs")
    assert v.hook_schedule("sample", 5, "EPOCH", skip_first=3).params["train.sample_hook.skip_first"] == 2
    for unit in ("STEP", "EPOCH"):
        assert v.hook_schedule("sample", 0, unit).params["train.sample_hook.every"] == 0
    assert v.hook_schedule("save", 2.9, "EPOCH").params["train.save_hook.every"] == 2  # ints truncate


# §6.2 wall-clock units, NEVER and ALWAYS
def test_hook_schedule_time_never_always():
    assert v.hook_schedule("backup", 2, "HOUR").params == {
        "train.backup_hook.every": 120, "train.backup_hook.unit": "minutes", "train.backup_hook.skip_first": 0}
    assert v.hook_schedule("sample", 120, "SECOND").params["train.sample_hook.every"] == 2
    with pytest.raises(Unsupported, match=r"^unsupported: sample_after in SECOND: 90 seconds"):
        v.hook_schedule("sample", 90, "SECOND")
    assert v.hook_schedule("save", 10, "MINUTE", skip_first=30).params["train.save_hook.skip_first"] == 30
    never = v.hook_schedule("save", 5, "NEVER").params
    assert never["train.save_hook.every"] == 0  # saving disabled
    always = v.hook_schedule("validate", 7, "ALWAYS", gradient_accumulation_steps=4).params
    assert (always["train.validation_hook.every"], always["train.validation_hook.unit"]) == (1, "steps")
    assert v.hook_schedule("sample", 0, "MINUTE").params["train.sample_hook.every"] == 1  # every check
    with pytest.raises(Unsupported, match="sample_after_unit = 'DAY'"):
        v.hook_schedule("sample", 1, "DAY")


# §6.2 part stop_training_after: one-shot elapsed test, NEVER/null = never
def test_part_stop_training():
    assert v.part_stop_training("text_encoder", 30, "EPOCH", epochs=30).params == {}  # trains the whole run
    assert v.part_stop_training("text_encoder", None, "NEVER", epochs=5).params == {}
    assert v.part_stop_training("text_encoder", 0, "EPOCH", epochs=5).params == {"train": False}
    assert v.part_stop_training("text_encoder", 9, "ALWAYS", epochs=5).params == {"train": False}
    with pytest.raises(Unsupported, match=r"text_encoder.stop_training_after in EPOCH"):
        v.part_stop_training("text_encoder", 30, "EPOCH", epochs=100)


# §6.3 resolution strings
def test_resolution_strings():
    one = v.resolution("512", model_type="STABLE_DIFFUSION_15").params
    assert one == {"data.aspect_bucket.resolution": 512, "data.aspect_bucket.resolutions": [],
                   "data.aspect_bucket.quantization": 8}
    many = v.resolution("512, 768,1024", model_type="STABLE_DIFFUSION_XL_10_BASE").params
    assert many["data.aspect_bucket.resolutions"] == ["512", "768", "1024"]
    assert many["data.aspect_bucket.quantization"] == 64
    off = v.resolution("512", aspect_ratio_bucketing=False).params
    assert off["data.aspect_bucket.aspects"] == ["1:1"]  # a square crop
    assert v.resolution("1024x1024").params["data.aspect_bucket.aspects"] == ["1:1"]
    with pytest.raises(Unsupported, match="resolution = '1024x768'.*rotated"):
        v.resolution("1024x768")
    with pytest.raises(Unsupported, match="only with aspect ratio bucketing"):
        v.resolution("1024x768", aspect_ratio_bucketing=False)
    for bad in ("512,1024x768", "512x", "abc", "", "4"):
        with pytest.raises(Unsupported, match="resolution"):
            v.resolution(bad)


# §6.4 null part LR inherits, then × sqrt(LR scaler)
def test_part_learning_rates_inherit_then_scale():
    m = v.learning_rates(1e-4, {"unet": None, "text_encoder": 4e-5}, learning_rate_scaler="BATCH", batch_size=4)
    assert m.params == {"train.optimizer.lr": pytest.approx(2e-4), "unet_lr": None,
                        "text_encoder_lr": pytest.approx(8e-5)}
    with pytest.raises(Unsupported, match="text_encoder.learning_rate = 0"):
        v.learning_rates(1e-4, {"text_encoder": 0.0})


# §6.9 dtype names
def test_dtype_names():
    assert v.train_dtype("BFLOAT_16").params == {"train.loop.precision": "bf16", "train.loop.tf32": False}
    assert v.train_dtype("TFLOAT_32").params == {"train.loop.precision": "fp32", "train.loop.tf32": True}
    assert v.weight_dtype("unet.weight_dtype", "FLOAT_16").params == {"dtype": "float16"}
    assert v.weight_dtype("transformer.weight_dtype", "NFLOAT_4").params == {"quantize": "nf4"}
    assert v.weight_dtype("transformer.weight_dtype", "FLOAT_8").params == {"quantize": "fp8"}
    for bad in ("INT_W8A8", "GGUF", "NONE"):
        with pytest.raises(Unsupported, match=f"transformer.weight_dtype = '{bad}'"):
            v.weight_dtype("transformer.weight_dtype", bad)
    assert v.output_dtype("BFLOAT_16").params == {"dtype": "bfloat16"}
    with pytest.raises(Unsupported, match="output_dtype = 'FLOAT_8'"):
        v.output_dtype("FLOAT_8")


def _selects(mapped, name):
    return re.fullmatch(mapped.params["target_regex"], name) is not None


# §6.6 layer filter: comma pieces, trimmed, substring (or regex search), empty = all; preset = UI label
def test_layer_filter_matching():
    m = v.lora_targets("attn1, ff.net")
    assert _selects(m, "transformer_blocks.0.attn1.to_q") and _selects(m, "blocks.1.ff.net.0.proj")
    assert not _selects(m, "transformer_blocks.0.attn2.to_q") and not _selects(m, "blocks.1.ffxnet")  # "." literal
    assert _selects(v.lora_targets(""), "anything.at_all")
    assert _selects(v.lora_targets("attn1,"), "conv_in")  # an empty piece matches everything
    r = v.lora_targets(r"^down_blocks\.1, attn2$", layer_filter_regex=True)
    assert _selects(r, "down_blocks.1.resnets.0.conv1") and _selects(r, "mid.attn2")
    assert not _selects(r, "up.down_blocks.1.x") and not _selects(r, "mid.attn2.to_q")
    with pytest.raises(Unsupported, match="not a valid regular expression"):
        v.lora_targets("attn(", layer_filter_regex=True)


def test_layer_filter_preset_cli_vs_ui():
    cli = v.lora_targets("", layer_filter_preset="attn-mlp", model_type="STABLE_DIFFUSION_15")
    assert _selects(cli, "down_blocks.0.resnets.0.conv1")  # the trainer reads only layer_filter: all layers
    assert "only a UI label" in cli.notes[0]
    ui = v.lora_targets("", layer_filter_preset="attn-mlp", model_type="STABLE_DIFFUSION_15", semantics="ui")
    assert _selects(ui, "down_blocks.0.attentions.0.proj_in") and not _selects(ui, "down_blocks.0.resnets.0.conv1")
    flux = v.lora_targets("", layer_filter_preset="attn-mlp", model_type="FLUX_DEV_1", semantics="ui")
    assert _selects(flux, "single_transformer_blocks.0.proj_mlp") and not _selects(flux, "x_embedder")
    with pytest.raises(Unsupported, match="layer_filter_preset = 'blocks'"):
        v.lora_targets("", layer_filter_preset="blocks", model_type="STABLE_DIFFUSION_15", semantics="ui")


# §6.7 text encoder layer skip: 0 = the model's normal output (SDXL: penultimate), same as our clip_skip
def test_text_encoder_layer_skip():
    assert v.clip_skip("STABLE_DIFFUSION_15", {"text_encoder_layer_skip": 1}).params == {"clip_skip": 1}
    sdxl = {"text_encoder_layer_skip": 2, "text_encoder_2_layer_skip": 2}
    assert v.clip_skip("STABLE_DIFFUSION_XL_10_BASE", sdxl).params == {"clip_skip": 2}
    with pytest.raises(Unsupported, match="one clip_skip for both"):
        v.clip_skip("STABLE_DIFFUSION_XL_10_BASE", {"text_encoder_layer_skip": 1, "text_encoder_2_layer_skip": 0})
    assert v.clip_skip("FLUX_DEV_1", {"text_encoder_layer_skip": 0}).params == {}
    with pytest.raises(Unsupported, match="text_encoder_2_layer_skip = 1"):
        v.clip_skip("FLUX_DEV_1", {"text_encoder_2_layer_skip": 1})
    ignored = v.clip_skip("QWEN", {"text_encoder_layer_skip": 3})
    assert ignored.params == {} and "not read by OneTrainer" in ignored.notes[0]


# §6.8 timestep distribution params
def test_timestep_distribution_params():
    d = v.timesteps("LOGIT_NORMAL", 0.5, -0.2, min_noising_strength=0.1, max_noising_strength=0.9).params
    assert d == {"train.diffusion_objective.timestep_distribution": "logit_normal",
                 "train.diffusion_objective.logit_mean": -0.2, "train.diffusion_objective.logit_std": 1.5,
                 "train.diffusion_objective.min_timestep": 100, "train.diffusion_objective.max_timestep": 900,
                 "train.diffusion_objective.timestep_shift": 1.0}
    s = v.timesteps("SIGMOID", 3.0, 0.1).params
    assert s["train.diffusion_objective.sigmoid_steepness"] == 3.0
    assert s["train.diffusion_objective.distribution_center"] == pytest.approx(0.6)
    assert v.timesteps("BETA", 0.0, 2.0).params["train.diffusion_objective.beta_alpha"] == 1e-4  # floored
    f = v.timesteps("INVERTED_PARABOLA", 7.7, 0.0, timestep_shift=3.0, dynamic_timestep_shifting=True,
                    flow_matching=True).params
    assert f["train.flow_matching_objective.sampling"] == "inverted_parabola"
    assert f["train.flow_matching_objective.parabola_curvature"] == 7.7
    assert f["train.flow_matching_objective.distribution_center"] == 0.5
    assert f["train.flow_matching_objective.dynamic_shift"] is True
    assert v.timesteps("HEAVY_TAIL", 1.0, flow_matching=True).params[
        "train.flow_matching_objective.mode_scale"] == 1.0
    assert v.timesteps("SIGMOID", 0.0, 0.3, flow_matching=True).params[
        "train.flow_matching_objective.sampling"] == "uniform"  # steepness 0 is flat
    with pytest.raises(Unsupported, match="timestep_distribution = SIGMOID"):
        v.timesteps("SIGMOID", 2.0, 0.0, flow_matching=True)
    with pytest.raises(Unsupported, match="distribution_center 1.5"):
        v.timesteps("INVERTED_PARABOLA", 1.0, 1.0)
    with pytest.raises(Unsupported, match="dynamic_timestep_shifting"):
        v.timesteps("UNIFORM", dynamic_timestep_shifting=True)


def test_layer_filter_regex_drives_our_target_selection():
    """The regex we write selects, through nodes.lora_targets, the layers OneTrainer's filter selects."""
    torch = pytest.importorskip("torch")
    from nodes.lora_targets import UNET_PRESETS, target_modules

    block = torch.nn.Module()
    block.attn1 = torch.nn.Linear(2, 2)
    block.ff = torch.nn.Linear(2, 2)
    block.proj = torch.nn.Conv2d(2, 2, 1)
    root = torch.nn.Module()
    root.blocks = torch.nn.ModuleList([block])
    regex = v.lora_targets("attn1, proj").params["target_regex"]
    assert target_modules(root, "attn", regex, UNET_PRESETS) == ["blocks.0.attn1", "blocks.0.proj"]
