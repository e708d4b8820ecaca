"""OneTrainer's config migrations (reference §5), re-expressed on plain JSON dicts.

``migrate_train_config`` brings a TrainConfig dict of any ``__version`` up to ``CURRENT_VERSION``;
``migrate_concept`` does the same for one ConceptConfig dict. Each step turns a version-k dict into a
version-k+1 dict. Unlike OneTrainer, a step whose input key is absent skips that change instead of raising.
Values a step drops (as OneTrainer drops them) are named in the returned notes.
"""

import copy

from .defaults import CONCEPT_VERSION, CURRENT_VERSION

_WUERSTCHEN = ("WUERSTCHEN_2", "STABLE_CASCADE_1")
_V1_PARTS = ("unet", "prior", "text_encoder", "text_encoder_2", "vae", "effnet_encoder", "decoder",
             "decoder_text_encoder", "decoder_vqgan")
_ALL_PARTS = _V1_PARTS + ("transformer", "unconditional_transformer", "text_encoder_3", "text_encoder_4")


def _rename(d, old, new):
    if old in d:
        d[new] = d.pop(old)


def _step0(d, notes):
    """0->1: the optimizer name and ``optimizer_*`` keys move into the ``optimizer`` sub-object."""
    name = d.pop("optimizer", None)
    sub = {"optimizer": name} if name is not None else {}
    for key in [k for k in d if k.startswith("optimizer_") and k != "optimizer_defaults"]:
        sub[key[len("optimizer_"):]] = d.pop(key)
    d["optimizer"] = sub
    if name is not None:
        d["optimizer_defaults"] = {name: copy.deepcopy(sub)}


def _step1(d, notes):
    """1->2: per-part settings move into part sub-objects; old embedding keys are dropped."""
    for part in _V1_PARTS:
        sub = d.get(part) if isinstance(d.get(part), dict) else {}
        if f"train_{part}" in d:
            sub["train"] = d.pop(f"train_{part}")
        if f"train_{part}_epochs" in d and part in ("unet", "prior", "text_encoder", "text_encoder_2"):
            sub["stop_training_after"] = d.pop(f"train_{part}_epochs")
            sub["stop_training_after_unit"] = "EPOCH"
        for field in ("learning_rate", "weight_dtype"):
            if f"{part}_{field}" in d:
                sub[field] = d.pop(f"{part}_{field}")
        if part in ("prior", "vae", "effnet_encoder", "decoder") and f"{part}_model_name" in d:
            sub["model_name"] = d.pop(f"{part}_model_name")
        d[part] = sub
    for key in ("embedding_model_names", "token_count", "initial_embedding_text"):
        if key in d:
            d.pop(key)
            notes.append(f"'{key}' dropped by migration 1->2 (OneTrainer drops it too)")


def _step2(d, notes):
    """2->3: ``min_snr_gamma`` becomes a loss weight function."""
    gamma = d.pop("min_snr_gamma", 0.0)
    if gamma:
        d["loss_weight_fn"], d["loss_weight_strength"] = "MIN_SNR_GAMMA", gamma
    elif d.get("model_type") in _WUERSTCHEN:
        d["loss_weight_fn"], d["loss_weight_strength"] = "P2", 1.0


def _step3(d, notes):
    """3->4: the old sigmoid noising becomes ``timestep_distribution`` SIGMOID (bias re-centred on 0)."""
    if "noising_weight" not in d:
        return
    if d["noising_weight"] != 0:
        d["timestep_distribution"] = "SIGMOID"
        d["noising_bias"] = d.get("noising_bias", 0.5) - 0.5
    else:
        d["timestep_distribution"], d["noising_weight"], d["noising_bias"] = "UNIFORM", 0.0, 0.0


def _step4(d, notes):
    """4->5: ``gradient_checkpointing`` bool becomes "ON"/"OFF"."""
    value = d.get("gradient_checkpointing", True)
    if isinstance(value, bool):
        d["gradient_checkpointing"] = "ON" if value else "OFF"


def _step5(d, notes):
    """5->6: ``save_after`` becomes ``save_every``."""
    _rename(d, "save_after", "save_every")
    _rename(d, "save_after_unit", "save_every_unit")


def _step6(d, notes):
    """6->7: a null ``lora_layer_preset`` becomes "full"."""
    if "lora_layer_preset" in d and d["lora_layer_preset"] is None:
        d["lora_layer_preset"] = "full"


def _step7(d, notes):
    """7->8: the LoRA layer filter keys become the general layer filter keys."""
    _rename(d, "lora_layers", "layer_filter")
    _rename(d, "lora_layer_preset", "layer_filter_preset")
    _rename(d, "lora_layers_regex", "layer_filter_regex")


def _step8(d, notes):
    """8->9: transformer models kept their denoiser under ``prior``; it becomes ``transformer``."""
    if d.get("model_type", "STABLE_DIFFUSION_15") not in _WUERSTCHEN and isinstance(d.get("prior"), dict):
        d["transformer"] = copy.deepcopy(d["prior"])


def _step9(d, notes):
    """9->10: the global ``weight_dtype`` is removed; parts that inherited it ("NONE") take its value."""
    if "weight_dtype" not in d:
        return
    value = d.pop("weight_dtype")
    for part in _ALL_PARTS:
        sub = d.get(part)
        if isinstance(sub, dict) and sub.get("weight_dtype") == "NONE":
            sub["weight_dtype"] = value


def _step10(d, notes):
    """10->11: legacy output formats renamed; global checkpoint/offload settings fanned out per part."""
    if d.get("output_model_format") == "SAFETENSORS":
        method = d.get("training_method", "FINE_TUNE")
        if method == "LORA":
            d["output_model_format"] = "LEGACY_LORA"
        elif method in ("FINE_TUNE", "FINE_TUNE_VAE"):
            d["output_model_format"] = "LEGACY_SAFETENSORS"
    checkpointing = d.pop("gradient_checkpointing", "ON")
    activations = d.pop("enable_activation_offloading", True)
    fraction = d.pop("layer_offload_fraction", 0.0)
    offloaded = checkpointing == "CPU_OFFLOADED"
    for part in _ALL_PARTS:
        sub = d.get(part)
        if isinstance(sub, dict):
            sub["gradient_checkpointing"] = checkpointing != "OFF"
            sub["activation_offloading"] = offloaded and bool(activations)
            sub["offload_fraction"] = fraction if offloaded else 0.0
    _rename(d, "enable_async_offloading", "async_offloading")


_TRAIN_STEPS = (_step0, _step1, _step2, _step3, _step4, _step5, _step6, _step7, _step8, _step9, _step10)
assert len(_TRAIN_STEPS) == CURRENT_VERSION


def _concept_step0(d, notes):
    """0->1: ``repeats`` becomes ``balancing``."""
    _rename(d, "repeats", "balancing")


def _concept_step1(d, notes):
    """1->2: bool ``validation_concept`` becomes ``type`` VALIDATION/STANDARD."""
    if "validation_concept" in d:
        d["type"] = "VALIDATION" if d.pop("validation_concept") else "STANDARD"


_CONCEPT_STEPS = (_concept_step0, _concept_step1)
assert len(_CONCEPT_STEPS) == CONCEPT_VERSION


def read_version(d, current, where):
    """The ``__version`` of a config dict (missing = 0); ValueError if it is not an int in 0..current."""
    version = d.get("__version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"{where}: '__version' must be a whole number >= 0, got {version!r}")
    if version > current:
        raise ValueError(f"{where}: '__version' {version} is newer than the newest known ({current}); "
                         "update nodetrainer's OneTrainer importer")
    return version


def _run(d, steps, current, where, notes):
    d = copy.deepcopy(d)
    for step in steps[read_version(d, current, where):]:
        step(d, notes)
    d["__version"] = current
    return d


def migrate_train_config(d, where="config", notes=None):
    """A copy of TrainConfig dict ``d`` migrated to the current version; dropped values go to ``notes``."""
    return _run(d, _TRAIN_STEPS, CURRENT_VERSION, where, [] if notes is None else notes)


def migrate_concept(d, where="concept", notes=None):
    """A copy of ConceptConfig dict ``d`` migrated to the current concept version."""
    return _run(d, _CONCEPT_STEPS, CONCEPT_VERSION, where, [] if notes is None else notes)
