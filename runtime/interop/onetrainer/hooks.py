"""The hooks and savers of an import: sample previews, periodic saves, backups, validation, TensorBoard,
and the saver of the trained model."""

from __future__ import annotations

import os

from ...graph import Link
from . import values as V

#: OneTrainer sample keys the generic sampler params cover: key -> our sampler param
SAMPLE_PARAMS = {"prompt": "prompts", "negative_prompt": "negative_prompt", "seed": "seed",
                 "diffusion_steps": "steps", "cfg_scale": "cfg", "width": "width", "height": "height",
                 "noise_scheduler": "scheduler"}
SAMPLE_NOT_NEEDED = {"frames": "video only", "length": "video only", "enabled": None}


def add(imp, data) -> None:
    _samples(imp)
    savers = _final_saver(imp)
    _saves(imp, savers)
    _backups(imp)
    _validation(imp, data)
    _tensorboard(imp)
    if imp.hooks:
        imp.b.nodes["train"].inputs["hooks"] = [Link.parse(h) for h in imp.hooks]


def _schedule(imp, action: str, keys: tuple, node: str, *args, **kw) -> bool:
    """Set a hook's every/unit/skip_first from OneTrainer's interval; False when it never fires. An
    interval we cannot express is reported against every key of it, and the hook fires only on command."""
    try:
        m = V.hook_schedule(action, *args, gradient_accumulation_steps=imp.accum, **kw)
    except V.Unsupported as e:
        for key in keys:
            if imp.changed(key) or key == keys[0]:
                imp.unsupported(key, f"{e.what}: {e.reason} (the hook runs only on command)")
        imp.b.set(node, "every", 0)
        return False
    node_type = V.HOOKS[action][0]
    imp.apply(keys, V.Mapped({k.replace(node_type, node): val for k, val in m.params.items()}, m.notes))
    return m.params[f"{node_type}.every"] > 0


# --- samples ------------------------------------------------------------------------------------------

def _samples(imp) -> None:
    v, b = imp.v, imp.b
    keys = ("sample_after", "sample_after_unit", "sample_skip_first")
    samples = [(i, s) for i, s in enumerate(v["samples"] or []) if s["enabled"]]
    for i, s in enumerate(v["samples"] or []):
        if not s["enabled"]:
            imp.mapped(f"samples[{i}].enabled", "(left out of the graph)")
            for key in imp.cfg.sample_changed[i] - {"enabled"}:
                imp.not_needed(f"samples[{i}].{key}", "the sample is disabled")
    if not samples:
        for key in (*keys, "samples_to_tensorboard", "non_ema_sampling"):
            imp.not_needed(key, "there are no samples")
        return
    groups: list[tuple[dict, list[str], list[int]]] = []
    for i, s in samples:
        params = _sample_params(imp, i, s)
        prompt, seed = params.pop("prompts")[0], params.pop("seed")
        last = groups[-1] if groups else None
        if last and last[0] == params and seed != -1 and last[2][0] + len(last[1]) == seed:
            last[1].append(prompt)
        else:
            groups.append((params, [prompt], [seed]))
    samplers = []
    for params, prompts, seeds in groups:
        node = b.add("previews", imp.family.sampler, {**params, "prompts": prompts, "seed": seeds[0]})
        samplers.append(f"{node}.sampler")
    hook = b.add("sample_hook", "train.sample_hook@1", {}, {"samplers": samplers})
    fires = _schedule(imp, "sample", keys, hook, v["sample_after"], v["sample_after_unit"],
                      skip_first=v["sample_skip_first"])
    if not fires and not any(r.key == "sample_after" for r in imp.report.of_kind("unsupported")):
        imp.report.note("sample_after", "samples only on the sample command (OneTrainer: never)")
    imp.hooks.append(f"{hook}.hook")
    if "ema" in b.nodes:
        b.set(hook, "non_ema", bool(v["non_ema_sampling"]))
        imp.mapped("non_ema_sampling", f"{hook}.non_ema")
    else:
        imp.not_needed("non_ema_sampling", "only read with ema on")
    imp.not_needed("sample_image_format", "nodetrainer writes PNG samples with their settings in the metadata")
    imp.not_needed("sample_video_format", "video only")
    imp.not_needed("sample_audio_format", "audio only")


def _sample_params(imp, i: int, s: dict) -> dict:
    key = f"samples[{i}]"
    fam = imp.family
    scheduler = fam.schedulers.get(str(s["noise_scheduler"]).upper())
    if scheduler is None:
        imp.unsupported(f"{key}.noise_scheduler", f"{s['noise_scheduler']} is not a scheduler of {fam.sampler}")
    params = {"prompts": [str(s["prompt"])], "negative_prompt": str(s["negative_prompt"]),
              "seed": -1 if s["random_seed"] else int(s["seed"]), "steps": int(s["diffusion_steps"]),
              "cfg": float(s["cfg_scale"]), "width": int(s["width"]), "height": int(s["height"])}
    if scheduler is not None:
        params["scheduler"] = scheduler
    spec = imp.b.registry.get(fam.sampler.partition("@")[0]).params
    params = {k: val for k, val in params.items() if k in spec}
    params.update(fam.sampler_params(imp, s, key))
    for k, param in SAMPLE_PARAMS.items():
        if not imp.report.handled(f"{key}.{k}"):
            imp.mapped(f"{key}.{k}", f"previews.{param}" if param in spec else "(not a setting of this sampler)")
    imp.mapped(f"{key}.random_seed", "previews.seed (-1)")
    for k, reason in SAMPLE_NOT_NEEDED.items():
        if reason:
            imp.not_needed(f"{key}.{k}", reason)
    return params


# --- savers -----------------------------------------------------------------------------------------------

def _saver_params(imp) -> tuple[str, dict]:
    v, fam = imp.v, imp.family
    fmt = str(v["output_model_format"]).upper()
    saver = fam.savers.get((imp.method, fmt))
    if saver is None:
        choices = ", ".join(f for (m, f) in fam.savers if m == imp.method)
        imp.unsupported("output_model_format", f"{fmt} for {imp.method}: nodetrainer writes {choices}")
        saver = next(t for (m, _), t in fam.savers.items() if m == imp.method)
    else:
        imp.mapped("output_model_format", f"save ({saver.partition('@')[0]})")
    node_type, _, extra = saver.partition(" ")
    params = dict(p.split("=", 1) for p in extra.split()) if extra else {}
    dest = str(v["output_model_destination"])
    stem = os.path.splitext(os.path.basename(dest.rstrip("/\\")))[0] or "model"
    params["name"] = stem
    if os.path.isabs(dest):
        params["folder"] = os.path.dirname(dest) if os.path.splitext(dest)[1] else dest
        imp.mapped("output_model_destination", "save.name, save.folder")
    else:
        imp.mapped("output_model_destination", "save.name")
        if imp.changed("output_model_destination"):
            imp.report.note("output_model_destination", f"{dest} is relative: written in the run folder "
                                                        "(OneTrainer: relative to its own folder)")
    spec = imp.b.registry.get(node_type.partition("@")[0]).params
    if "dtype" in spec:
        try:
            dtype = V.output_dtype(v["output_dtype"]).params["dtype"]
            if dtype in getattr(spec["dtype"].kind, "options", ()):
                params["dtype"] = dtype
                imp.mapped("output_dtype", "save.dtype")
            else:
                imp.unsupported("output_dtype", f"{dtype} is not a dtype {node_type} writes")
        except V.Unsupported as e:
            imp.unsupported("output_dtype", f"{e.what}: {e.reason}")
    return node_type, params


def _final_saver(imp) -> tuple[str, dict]:
    node_type, params = _saver_params(imp)
    imp.b.add("save", node_type, params, {"model": "train.trained"})
    return node_type, params


def _saves(imp, saver: tuple[str, dict]) -> None:
    v, b = imp.v, imp.b
    keys = ("save_every", "save_every_unit", "save_skip_first")
    never = str(v["save_every_unit"]).upper() == "NEVER" or (v["save_every"] <= 0 and
                                                             str(v["save_every_unit"]).upper() in ("EPOCH", "STEP"))
    if never:
        for key in (*keys, "save_filename_prefix", "backup_before_save"):
            imp.not_needed(key, "periodic saves are off (save_every_unit NEVER)")
        return
    node_type, params = saver
    prefix = str(v["save_filename_prefix"])
    periodic = b.add("periodic_saver", node_type, {**params, "name": prefix + params["name"]})
    imp.mapped("save_filename_prefix", f"{periodic}.name")
    hook = b.add("save_hook", "train.save_hook@1", {}, {"savers": [f"{periodic}.saver"]})
    _schedule(imp, "save", keys, hook, v["save_every"], v["save_every_unit"], skip_first=v["save_skip_first"])
    imp.hooks.append(f"{hook}.hook")
    if v["backup_before_save"]:
        backup = b.add("save_backups", "train.backup_hook@1", {k: b.param(hook, k) for k in ("every", "unit", "skip_first")})
        imp.hooks.append(f"{backup}.hook")
        imp.mapped("backup_before_save", f"{backup} (a backup on the save schedule)")
    else:
        imp.mapped("backup_before_save", "(no backup on the save schedule)")


def _backups(imp) -> None:
    v, b = imp.v, imp.b
    keys = ("backup_after", "backup_after_unit")
    hook = b.add("backups", "train.backup_hook@1")
    if not _schedule(imp, "backup", keys, hook, v["backup_after"], v["backup_after_unit"]):
        del b.nodes[hook]
        imp.not_needed("rolling_backup", "backups are off")
        imp.not_needed("rolling_backup_count", "backups are off")
        return
    keep = int(v["rolling_backup_count"]) if v["rolling_backup"] else 10000
    b.set(hook, "keep", max(1, keep))
    imp.mapped("rolling_backup", f"{hook}.keep")
    if v["rolling_backup"]:
        imp.mapped("rolling_backup_count", f"{hook}.keep")
    else:
        imp.not_needed("rolling_backup_count", "only read with rolling_backup")
    imp.hooks.append(f"{hook}.hook")


def _validation(imp, data) -> None:
    v, b = imp.v, imp.b
    keys = ("validate_after", "validate_after_unit")
    imp.mapped("validation", "validation (train.validation_hook)")
    if data.validation is None:
        if v["validation"]:
            imp.report.note("validation", "validation is on but no concept has type VALIDATION: nothing to validate")
        for key in keys:
            imp.not_needed(key, "no validation")
        return
    hook = b.add("validation", "train.validation_hook@1", {}, {"batches": data.validation})
    _schedule(imp, "validate", keys, hook, v["validate_after"], v["validate_after_unit"])
    imp.hooks.append(f"{hook}.hook")


def _tensorboard(imp) -> None:
    v = imp.v
    for key in ("tensorboard_expose", "tensorboard_always_on", "tensorboard_port"):
        imp.not_needed(key, "start TensorBoard yourself: tensorboard --logdir <run folder>/tensorboard")
    imp.mapped("tensorboard", "tensorboard (train.tensorboard)")
    if not v["tensorboard"]:
        imp.not_needed("samples_to_tensorboard", "tensorboard is off")
        return
    node = imp.b.add("tensorboard", "train.tensorboard@1", {"images": bool(v["samples_to_tensorboard"])})
    if imp.v["samples"]:
        imp.mapped("samples_to_tensorboard", f"{node}.images")
    imp.hooks.append(f"{node}.hook")
