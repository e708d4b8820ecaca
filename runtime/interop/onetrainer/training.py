"""The model and training nodes of an import: loader, setup, optimizer, LR schedule, objective, EMA, loop.

Each function reads its OneTrainer keys from ``imp.v`` and reports them through ``imp`` (importer.Import).
"""

from __future__ import annotations

from . import defaults as D
from . import values as V
from .values import Mapped, Unsupported

SCHEDULES = {"CONSTANT": "constant", "LINEAR": "linear", "COSINE": "cosine",
             "COSINE_WITH_RESTARTS": "cosine_with_soft_restarts",
             "COSINE_WITH_HARD_RESTARTS": "cosine_with_hard_restarts", "REX": "rex", "ADAFACTOR": "adafactor"}
SCHEDULE_FREE = ("schedule_free_adamw", "schedule_free_sgd", "schedule_free_radam", "prodigy_plus_schedule_free")
#: OneTrainer optimizer keys that are not settings of the optimizer's update
OPTIMIZER_NOT_NEEDED = {
    "fused": "the step kernel is train.loop's optimizer_kernel (auto picks the fused one where it can)",
    "foreach": "the step kernel is train.loop's optimizer_kernel",
    "capturable": "a CUDA-graph capture flag; nodetrainer does not capture the step",
    "differentiable": "for optimizers differentiated through; not used in training",
    "maximize": None, "fused_back_pass": None, "stochastic_rounding": None,
}
LOSS_WEIGHTS = {"CONSTANT": "none", "MIN_SNR_GAMMA": "min_snr_gamma", "DEBIASED_ESTIMATION": "debiased_estimation",
                "P2": "p2"}
DEVICES = {"cuda": "auto", "cpu": "cpu", "mps": "mps"}
ATTENTION = {"SDP": "auto", "FLASH": "flash", "CUDNN": "cudnn"}


# --- loader and setup ------------------------------------------------------------------------------------

def add_model(imp) -> None:
    """``base`` (the family's loader) and the setup node of the training method."""
    fam, v = imp.family, imp.v
    base = imp.b.add("base", fam.loader, {"path": v["base_model_name"], **fam.loader_params(imp)})
    imp.mapped("base_model_name", f"{base}.path")
    setup_id = {"LORA": "lora", "FINE_TUNE": "finetune", "EMBEDDING": "embedding"}[imp.method]
    imp.setup = imp.b.add(setup_id, fam.setups[imp.method], {}, {"model": f"{base}.model"})
    for key, value in fam.setup_params(imp, imp.method).items():
        imp.b.set(imp.setup, key, value)
    if imp.method == "LORA":
        _lora(imp)
    elif imp.method == "EMBEDDING":
        _embedding(imp)
    _parts(imp)


def _lora(imp) -> None:
    v, s, b = imp.v, imp.setup, imp.b
    kinds = {"LORA": "dora" if v["lora_decompose"] else "lora", "LOHA": "loha", "LOKR": "lokr", "OFT_2": "oft"}
    adapter = kinds.get(str(v["peft_type"]).upper())
    if adapter is None:
        imp.unsupported("peft_type", f"{v['peft_type']} is not an adapter kind nodetrainer has")
        adapter = "lora"
    b.set(s, "adapter", adapter)
    imp.mapped("peft_type", f"{s}.adapter")
    imp.mapped("lora_decompose", f"{s}.adapter")
    rank = v["lokr_dim"] if adapter == "lokr" else v["lora_rank"]
    b.set(s, "rank", int(rank))
    b.set(s, "alpha", float(v["lora_alpha"]))
    imp.mapped("lokr_dim" if adapter == "lokr" else "lora_rank", f"{s}.rank")
    imp.mapped("lora_alpha", f"{s}.alpha")
    b.set(s, "dropout", float(v["dropout_probability"]))
    imp.mapped("dropout_probability", f"{s}.dropout")
    if adapter == "oft":
        b.set(s, "oft_block_size", int(v["oft_block_size"]))
        imp.mapped("oft_block_size", f"{s}.oft_block_size")
    if adapter == "lokr":
        b.set(s, "lokr_factor", int(v["lokr_decompose_factor"]))
        b.set(s, "lokr_decompose_both", bool(v["lokr_decompose_both"]))
        imp.mapped("lokr_decompose_factor", f"{s}.lokr_factor")
        imp.mapped("lokr_decompose_both", f"{s}.lokr_decompose_both")
    imp.attempt(("layer_filter", "layer_filter_regex", "layer_filter_preset"), lambda: V.lora_targets(
        v["layer_filter"], v["layer_filter_regex"], v["layer_filter_preset"], model_type=v["model_type"]), s)
    if imp.b.param(s, "target_regex") == ".*":
        imp.b.set(s, "target_regex", None)
        imp.b.set(s, "targets", "all-linear")
    if v["lora_model_name"]:
        imp.unsupported("lora_model_name", "continuing from an existing LoRA file is not supported: the "
                                           "adapters start fresh")
    if v["lora_weight_dtype"] != "FLOAT_32":
        imp.unsupported("lora_weight_dtype", "the adapters always train in float32")


def _embedding(imp) -> None:
    e, s, b = imp.v["embedding"], imp.setup, imp.b
    b.set(s, "placeholder", str(e["placeholder"]))
    b.set(s, "vectors", int(e["token_count"]))
    b.set(s, "initial_text", str(e["initial_embedding_text"]))
    imp.mapped("embedding.placeholder", f"{s}.placeholder")
    imp.mapped("embedding.token_count", f"{s}.vectors")
    imp.mapped("embedding.initial_embedding_text", f"{s}.initial_text")
    if e["model_name"]:
        imp.unsupported("embedding.model_name", "continuing from an existing embedding file is not supported")
    if e["is_output_embedding"]:
        imp.unsupported("embedding.is_output_embedding", "output embeddings are not supported")
    imp.tokenizers = {name: f"{s}.{name}" for name in imp.b.registry.get(imp.b.nodes[s].type).outputs
                      if name.startswith("tokenizer")}


def _parts(imp) -> None:
    """Per-part keys: weight dtype, trained or not, per-part learning rate, stops, checkpointing."""
    v, fam, s = imp.v, imp.family, imp.setup
    for key in D.MODEL_PARTS:
        part = fam.parts.get(key)
        if part is None:
            for sub in D.MODEL_PART:
                imp.not_needed(f"{key}.{sub}", f"{v['model_type']} has no {key}")
            continue
        cfg = v[key]
        if part.dtype:
            imp.attempt(f"{key}.weight_dtype", lambda: _dtype(imp, key, part, V.weight_dtype(
                f"{key}.weight_dtype", cfg["weight_dtype"])), "base")
        if cfg["model_name"]:
            imp.unsupported(f"{key}.model_name", f"the {key} loads from base_model_name with the rest of the model")
        if not cfg["include"]:
            imp.unsupported(f"{key}.include", f"a model without its {key} is not supported")
        dropout = ("OneTrainer's dropout of this text encoder's conditioning (caption dropout per encoder)"
                   if key.startswith("text_encoder") else "dropout inside a trained part")
        for sub, reason in (("dropout_probability", dropout),
                            ("attention_mask", "an attention mask for the text encoder"),
                            ("offload_fraction", "offloading part of the weights")):
            if cfg[sub] != D.model_part_defaults(key)[sub]:
                imp.unsupported(f"{key}.{sub}", f"{reason} is not supported" + (
                    "; data.caption_dropout drops the whole caption" if sub == "dropout_probability"
                    and key.startswith("text_encoder") else ""))
        if imp.method == "EMBEDDING" and not cfg["train_embedding"] and key.startswith("text_encoder"):
            imp.unsupported(f"{key}.train_embedding", "the embedding setup trains the new vectors in every text "
                                                      "encoder; it cannot leave one out")
        else:
            imp.not_needed(f"{key}.train_embedding", "only read by embedding training, for text encoders")
        if part.denoiser:
            imp.pending_checkpointing = bool(cfg["gradient_checkpointing"])
            imp.pending_offload = bool(cfg["activation_offloading"])
            imp.mapped(f"{key}.gradient_checkpointing", "train.gradient_checkpointing")
            imp.mapped(f"{key}.activation_offloading", "train.offload_activations")
        else:
            imp.not_needed(f"{key}.gradient_checkpointing", "nodetrainer checkpoints the denoiser (train.loop)")
            if cfg["activation_offloading"]:
                imp.unsupported(f"{key}.activation_offloading", "activation offloading applies to the denoiser")
        if not part.trains:
            for sub in ("train", "learning_rate", "stop_training_after", "stop_training_after_unit"):
                imp.not_needed(f"{key}.{sub}", f"the {key} does not train")
            continue
        _part_training(imp, key, part, cfg)


def _dtype(imp, key: str, part, mapped: Mapped) -> Mapped:
    if "quantize" in mapped.params:
        params = imp.family.quantize_params(imp, key, part, mapped.params["quantize"])
        if params is None:
            raise Unsupported(f"{part.dtype} = {mapped.params['quantize']}",
                              f"this family's loader does not quantize the {key} this way")
        return Mapped(params, mapped.notes)
    return Mapped({part.dtype: mapped.params["dtype"]}, mapped.notes)


def _part_training(imp, key: str, part, cfg: dict) -> None:
    s, method = imp.setup, imp.method
    if method == "EMBEDDING":
        for sub in ("train", "learning_rate", "stop_training_after", "stop_training_after_unit"):
            imp.not_needed(f"{key}.{sub}", "embedding training trains only the new token vectors")
        return
    flag = part.finetune if method == "FINE_TUNE" else part.lora
    trains = bool(cfg["train"])
    if flag is None:
        if not trains:
            imp.unsupported(f"{key}.train", f"the {method.lower().replace('_', '-')} setup always trains the {key}")
        trains = True
    stop = _stop(imp, key, part, cfg, trains)
    if stop is False:
        trains = False
    if flag is not None:
        imp.family.set_part_trains(imp, part, flag, trains)
        imp.mapped(f"{key}.train", f"{s}.{flag}")
    if not trains:
        imp.not_needed(f"{key}.learning_rate", f"the {key} does not train")
        return
    lr = cfg["learning_rate"]
    if lr is None:
        return
    if method != "FINE_TUNE" or not part.lr:
        if lr != imp.v["learning_rate"]:
            imp.unsupported(f"{key}.learning_rate", "the LoRA setup has no per-part learning rate")
        else:
            imp.mapped(f"{key}.learning_rate", "optimizer.lr (the same rate)")
        return
    imp.attempt(f"{key}.learning_rate", lambda: _part_lr(imp, part, lr), s)


def _part_lr(imp, part, lr) -> Mapped:
    v = imp.v
    m = V.learning_rates(v["learning_rate"], {part.lr.removesuffix("_lr"): lr},
                         learning_rate_scaler=v["learning_rate_scaler"], batch_size=v["batch_size"],
                         gradient_accumulation_steps=imp.accum)
    return Mapped({part.lr: m.params[part.lr]})


def _stop(imp, key: str, part, cfg: dict, trains: bool):
    """The part's ``stop_training_after``: None (no stop), False (never trains), or an entry added to
    ``imp.stop_parts`` (a stop partway)."""
    keys = (f"{key}.stop_training_after", f"{key}.stop_training_after_unit")
    if not trains:
        for k in keys:
            imp.not_needed(k, f"the {key} does not train")
        return None
    n, unit = cfg["stop_training_after"], str(cfg["stop_training_after_unit"]).upper()
    try:
        whole = V.part_stop_training(key, n, unit, imp.v["epochs"])
    except Unsupported as e:
        if unit == "EPOCH":
            entry = f"{part.name}={int(n)} epochs"
        elif unit == "STEP":
            entry = f"{part.name}={max(1, int(n) // imp.accum)} steps"
            if int(n) % imp.accum:
                imp.report.note(keys[0], f"{n} batches is not a whole number of updates with gradient "
                                         f"accumulation {imp.accum}: {int(n) // imp.accum} updates")
        else:
            imp.unsupported(keys[0], f"{e.what}: nodetrainer stops a part after epochs or steps, not time")
            return None
        imp.stop_parts.append(entry)
        for k in keys:
            imp.mapped(k, "train.stop_parts")
        return entry
    for k in keys:
        imp.mapped(k, f"{imp.setup}.{part.finetune or part.lora}" if whole.params else "(trains to the end)")
    return False if whole.params.get("train") is False else None


# --- optimizer, schedule, objective, loop ---------------------------------------------------------------

def add_training(imp, data) -> None:
    """optimizer, schedule, objective, (ema) and train, wired to the setup and ``data.batches``."""
    b = imp.b
    b.add("optimizer", "train.optimizer@1")
    b.add("schedule", "train.lr_schedule@1")
    objective = "train.flow_matching_objective@1" if imp.family.objective == "flow" else "train.diffusion_objective@1"
    b.add("objective", objective)
    b.add("train", "train.loop@1", {}, {"model": f"{imp.setup}.adapted", "batches": data.batches,
                                        "optimizer": "optimizer.optimizer", "schedule": "schedule.schedule",
                                        "objective": "objective.objective"})
    _optimizer(imp)
    _schedule(imp)
    _objective(imp)
    _loop(imp)
    _ema(imp)


def optimizer_name(name: str) -> str | None:
    """Our optimizer for a OneTrainer one (ADAMW_8BIT -> adamw8bit, AdEMAMix -> ademamix); None: none."""
    from nodes.train.optimizers import NAMES

    ours = str(name).lower().replace("_8bit", "8bit").replace("dadapt_ada_grad", "dadapt_adagrad")
    return ours if ours in NAMES else None


def _optimizer(imp) -> None:
    v, b = imp.v, imp.b
    opt = v["optimizer"]
    name = optimizer_name(opt["optimizer"])
    if name is None:
        imp.unsupported("optimizer.optimizer", f"{opt['optimizer']} is not an optimizer nodetrainer has: "
                                               "the graph uses adamw")
        name = "adamw"
    b.set("optimizer", "name", name)
    imp.mapped("optimizer.optimizer", "optimizer.name")
    lr = v["embedding_learning_rate"] if imp.method == "EMBEDDING" and v["embedding_learning_rate"] else \
        v["learning_rate"]
    imp.attempt(("learning_rate", "learning_rate_scaler"), lambda: V.learning_rates(
        lr, learning_rate_scaler=v["learning_rate_scaler"], batch_size=v["batch_size"],
        gradient_accumulation_steps=imp.accum))
    if imp.method == "EMBEDDING":
        imp.mapped("embedding_learning_rate", "optimizer.lr")
    spec = b.registry.get("train.optimizer").params
    for key, value in opt.items():
        if key == "optimizer" or not imp.changed(f"optimizer.{key}"):
            continue
        ours = {"weight_decay": "weight_decay"}.get(key, key)
        if key in OPTIMIZER_NOT_NEEDED:
            reason = OPTIMIZER_NOT_NEEDED[key]
            if reason is None:
                imp.unsupported(f"optimizer.{key}", "nodetrainer's optimizers have no such option")
            else:
                imp.not_needed(f"optimizer.{key}", reason)
        elif ours in spec and ours not in ("name", "lr", "warmup_steps"):
            try:
                b.set("optimizer", ours, value if value is None else spec[ours].check(value))
                imp.mapped(f"optimizer.{key}", f"optimizer.{ours}")
            except (TypeError, ValueError) as e:
                imp.unsupported(f"optimizer.{key}", f"{value!r} is not a valid {ours}: {e}")
        else:
            imp.unsupported(f"optimizer.{key}", f"train.optimizer has no {key} setting")
    imp.not_needed("optimizer_defaults", "the UI's remembered settings of other optimizers")


def _schedule(imp) -> None:
    v, b = imp.v, imp.b
    name = SCHEDULES.get(str(v["learning_rate_scheduler"]).upper())
    if name is None:
        imp.unsupported("learning_rate_scheduler", f"{v['learning_rate_scheduler']}: a custom scheduler class "
                                                   "is not supported (the graph uses constant)")
        name = "constant"
    schedule_free = b.param("optimizer", "name") in SCHEDULE_FREE
    b.set("schedule", "name", "constant" if schedule_free else name)
    imp.mapped("learning_rate_scheduler", "schedule.name")
    imp.attempt(("learning_rate_warmup_steps",), lambda: V.warmup(
        v["learning_rate_warmup_steps"], imp.accum, schedule_free=schedule_free))
    cycles = v["learning_rate_cycles"]
    if name in ("cosine_with_soft_restarts", "cosine_with_hard_restarts"):
        if float(cycles) != int(cycles) or cycles < 1:
            imp.unsupported("learning_rate_cycles", f"{cycles}: train.lr_schedule takes a whole number of cycles")
        else:
            b.set("schedule", "cycles", int(cycles))
            imp.mapped("learning_rate_cycles", "schedule.cycles")
    else:
        imp.not_needed("learning_rate_cycles", f"only read by the restart schedules, not {name}")
    b.set("schedule", "min_factor", float(v["learning_rate_min_factor"]))
    imp.mapped("learning_rate_min_factor", "schedule.min_factor")
    if v["custom_learning_rate_scheduler"] or v["scheduler_params"]:
        for key in ("custom_learning_rate_scheduler", "scheduler_params"):
            if imp.changed(key):
                imp.unsupported(key, "a custom scheduler class is never imported (graph files run no code)")


def _objective(imp) -> None:
    v, b = imp.v, imp.b
    flow = imp.family.objective == "flow"
    imp.attempt(("timestep_distribution", "noising_weight", "noising_bias", "timestep_shift",
                 "dynamic_timestep_shifting", "min_noising_strength", "max_noising_strength"),
                lambda: V.timesteps(v["timestep_distribution"], v["noising_weight"], v["noising_bias"],
                                    timestep_shift=v["timestep_shift"],
                                    dynamic_timestep_shifting=v["dynamic_timestep_shifting"],
                                    min_noising_strength=v["min_noising_strength"],
                                    max_noising_strength=v["max_noising_strength"], flow_matching=flow))
    _loss(imp)
    if flow:
        b.set("objective", "offset_noise", float(v["offset_noise_weight"]))
        imp.mapped("offset_noise_weight", "objective.offset_noise")
        for key in ("generalized_offset_noise", "perturbation_noise_weight",
                    "rescale_noise_scheduler_to_zero_terminal_snr", "force_v_prediction", "force_epsilon_prediction"):
            if imp.changed(key):
                imp.unsupported(key, "a DDPM setting; flow-matching models have no noise schedule to change")
    else:
        for key, param in (("offset_noise_weight", "offset_noise"), ("generalized_offset_noise", "generalized_offset_noise"),
                           ("perturbation_noise_weight", "input_perturbation"),
                           ("rescale_noise_scheduler_to_zero_terminal_snr", "zero_terminal_snr")):
            value = v[key]
            b.set("objective", param, bool(value) if isinstance(value, bool) else float(value))
            imp.mapped(key, f"objective.{param}")
        if v["force_v_prediction"] and v["force_epsilon_prediction"]:
            imp.unsupported("force_epsilon_prediction", "both force_v_prediction and force_epsilon_prediction")
        elif v["force_v_prediction"] or v["force_epsilon_prediction"]:
            b.set("objective", "prediction", "v_prediction" if v["force_v_prediction"] else "epsilon")
            imp.mapped("force_v_prediction", "objective.prediction")
            imp.mapped("force_epsilon_prediction", "objective.prediction")
    imp.not_needed("vb_loss_strength", "only for models that learn their variance, which nodetrainer's do not")
    imp.attempt("loss_scaler", lambda: V.loss_scaler(v["loss_scaler"], v["batch_size"], imp.accum))
    masked = bool(v["masked_training"])
    b.set("objective", "masked_training", "on" if masked else "auto")
    imp.mapped("masked_training", "objective.masked_training, data.concept.masks")
    for key, param in (("unmasked_probability", "unmasked_probability"), ("unmasked_weight", "unmasked_weight"),
                       ("normalize_masked_area_loss", "normalize_masked_area")):
        if masked:
            b.set("objective", param, v[key])
            imp.mapped(key, f"objective.{param}")
        else:
            imp.not_needed(key, "only read with masked_training")
    if v["masked_prior_preservation_weight"]:
        imp.unsupported("masked_prior_preservation_weight", "masked prior preservation is not supported")
    if v["custom_conditioning_image"]:
        imp.unsupported("custom_conditioning_image", "conditioning images (inpainting models) are not supported")


def _loss(imp) -> None:
    v, b = imp.v, imp.b
    keys = ("mse_strength", "mae_strength", "log_cosh_strength", "huber_strength")
    strengths = {k: float(v[k]) for k in keys}
    if strengths == {"mse_strength": 1.0, "mae_strength": 0.0, "log_cosh_strength": 0.0, "huber_strength": 0.0}:
        pass
    else:
        b.set("objective", "loss", "mix")
        for k in keys:
            b.set("objective", k, strengths[k])
            imp.mapped(k, f"objective.{k}")
    b.set("objective", "huber_delta", float(v["huber_delta"]))
    imp.mapped("huber_delta", "objective.huber_delta")
    fn = str(v["loss_weight_fn"]).upper()
    flow = imp.family.objective == "flow"
    weighting = ({"CONSTANT": "none", "SIGMA": "sigma_sqrt"} if flow else LOSS_WEIGHTS).get(fn)
    if weighting is None:
        imp.unsupported("loss_weight_fn", f"{fn} is not a loss weighting of the "
                                          f"{'flow-matching' if flow else 'diffusion'} objective")
        return
    b.set("objective", "loss_weighting", weighting)
    imp.mapped("loss_weight_fn", "objective.loss_weighting")
    strength = float(v["loss_weight_strength"])
    if weighting == "min_snr_gamma":
        b.set("objective", "min_snr_gamma", strength)
        imp.mapped("loss_weight_strength", "objective.min_snr_gamma")
    elif weighting == "p2":
        b.set("objective", "p2_gamma", strength)
        imp.mapped("loss_weight_strength", "objective.p2_gamma")
    else:
        imp.not_needed("loss_weight_strength", f"not read by loss_weight_fn {fn}")


def _loop(imp) -> None:
    v, b = imp.v, imp.b
    imp.attempt(("epochs", "gradient_accumulation_steps"), lambda: V.run_length(v["epochs"], imp.accum))
    norm = v["clip_grad_norm"]
    b.set("train", "max_grad_norm", float(norm) if norm else 0.0)
    imp.mapped("clip_grad_norm", "train.max_grad_norm")
    imp.attempt("train_dtype", lambda: V.train_dtype(v["train_dtype"]))
    device = DEVICES.get(str(v["train_device"]).split(":")[0].lower())
    if device is None:
        imp.unsupported("train_device", f"{v['train_device']} is not a device nodetrainer trains on")
    else:
        b.set("train", "device", device)
        imp.mapped("train_device", "train.device")
    attention = ATTENTION.get(str(v["attention_mechanism"]).upper())
    if attention is None:
        imp.unsupported("attention_mechanism", f"{v['attention_mechanism']} attention is not supported")
    else:
        b.set("train", "attention", attention)
        imp.mapped("attention_mechanism", "train.attention")
    b.set("train", "compile", "default" if v["compile"] else "off")
    imp.mapped("compile", "train.compile")
    b.set("train", "gradient_checkpointing", getattr(imp, "pending_checkpointing", False))
    b.set("train", "offload_activations", getattr(imp, "pending_offload", False))
    if imp.stop_parts:
        b.set("train", "stop_parts", list(imp.stop_parts))


def _ema(imp) -> None:
    v, b = imp.v, imp.b
    mode = str(v["ema"]).upper()
    imp.mapped("ema", "ema (train.ema)")
    if mode == "OFF":
        for key in ("ema_decay", "ema_update_step_interval"):
            imp.not_needed(key, "only read with ema on")
        return
    if mode not in ("GPU", "CPU"):
        imp.unsupported("ema", f"{mode} is not an EMA mode")
        return
    b.add("ema", "train.ema@1", {"decay": float(v["ema_decay"]), "interval": max(1, int(v["ema_update_step_interval"])),
                                 "device": "cpu" if mode == "CPU" else "train"})
    imp.mapped("ema_decay", "ema.decay")
    imp.mapped("ema_update_step_interval", "ema.interval")
    imp.hooks.insert(0, "ema.hook")
