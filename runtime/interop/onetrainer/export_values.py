"""Our node params re-expressed as OneTrainer values: the inverse of ``values.py`` (reference §6).

Each function takes the params of one of our nodes and returns OneTrainer's keys, and checks itself by
running the importer's conversion on its answer: a value the importer would turn into something else
raises ``NoMap`` naming the param, so an export never writes a config that imports as another graph.
Pure functions: no torch, no file access.
"""

from __future__ import annotations

import math
import re

from . import values as V
from .training import SCHEDULES, optimizer_name


class NoMap(ValueError):
    """A param value OneTrainer has no setting for; ``param`` names it (None: the node as a whole)."""

    def __init__(self, param: str | None, reason: str):
        self.param, self.reason = param, reason
        super().__init__(f"{param}: {reason}" if param else reason)


FLOATS = {"float32": "FLOAT_32", "float16": "FLOAT_16", "bfloat16": "BFLOAT_16"}
#: OneTrainer's quantized weight dtypes -> our loaders' quantize (values.weight_dtype)
QUANTIZED = dict(V._QUANTIZED)
PRECISION = {"fp32": "FLOAT_32", "fp16": "FLOAT_16", "bf16": "BFLOAT_16"}
OUR_UNITS = {"steps": "STEP", "epochs": "EPOCH", "minutes": "MINUTE"}


def same(a, b) -> bool:
    """Equal as the importer would have written it (floats compared to a relative 1e-9)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def _check(forward: dict, ours: dict, prefix: str = "") -> None:
    """Every param the importer's conversion sets must be ours; the first that differs raises."""
    for name, value in forward.items():
        key = name[len(prefix):] if prefix and name.startswith(prefix) else name.rpartition(".")[2]
        if key in ours and not same(ours[key], value):
            raise NoMap(key, f"{ours[key]!r} has no OneTrainer value (the nearest imports as {value!r})")


# --- §6.1 warmup --------------------------------------------------------------------------------------------

def warmup(value: float, accum: int) -> float:
    """train.lr_schedule.warmup (updates when >= 1, a fraction below 1) -> ``learning_rate_warmup_steps``
    (batches when > 1, a fraction when <= 1)."""
    w = float(value)
    if w <= 0:
        return 0.0
    if w < 1:
        ot = w
    else:
        if w != int(w):
            raise NoMap("warmup", f"{w:g} updates: OneTrainer counts warmup in whole batches")
        ot = float(int(w) * accum)
        if ot <= 1:  # OneTrainer reads 1 as the whole run; 1.5 batches truncate to 1 update
            ot = 1.5
    _check(V.warmup(ot, accum).params, {"warmup": w})
    return ot


def schedule_name(name: str) -> str:
    for ot, ours in SCHEDULES.items():
        if ours == name:
            return ot
    raise NoMap("name", f"{name}: OneTrainer has no such schedule ({', '.join(SCHEDULES.values())})")


def optimizer(name: str) -> str:
    from . import defaults as D

    for ot in D.OPTIMIZER_SETS:
        if optimizer_name(ot) == name:
            return ot
    raise NoMap("name", f"{name} is not an optimizer OneTrainer has")


# --- §6.2 hook schedules ------------------------------------------------------------------------------------

def hook_schedule(action: str, every: int, unit: str, skip_first: int, accum: int) -> tuple[int, str, int]:
    """A hook's every / unit / skip_first -> OneTrainer's (interval, unit, skip) for ``action`` (sample,
    validate, save, backup); every 0 (only on command) is interval 0, unit NEVER."""
    every, skip = int(every), int(skip_first)
    if every <= 0:
        if skip:
            raise NoMap("skip_first", "a hook that never fires skips nothing")
        n, u, s = 0, "NEVER", 0
    else:
        u = OUR_UNITS[unit]
        n = every * accum if u == "STEP" else every
        if skip <= 0:
            s = 0
        elif u == "STEP":
            s = (skip + 1) * accum if action in ("sample", "validate") else skip * accum
        elif u == "EPOCH":
            s = skip + 1
        else:
            s = skip
    skip_key = V.HOOKS[action][2]
    if skip_key is None and s:
        raise NoMap("skip_first", f"OneTrainer has no skip for {action}")
    m = V.hook_schedule(action, n, u, skip_first=s, gradient_accumulation_steps=accum)
    _check(m.params, {"every": every, "unit": unit, "skip_first": skip})
    return n, u, s


def stop_entry(entry: str, accum: int) -> tuple[str, int, str]:
    """A train.loop stop_parts entry ``name=N epochs|steps`` -> (part name, stop_training_after, unit)."""
    m = re.fullmatch(r"\s*([A-Za-z0-9_]+)\s*=\s*(\d+)\s*(epochs?|steps?)\s*", str(entry))
    if not m:
        raise NoMap("stop_parts", f"{entry!r} is not 'part=N epochs' or 'part=N steps'")
    n = int(m.group(2))
    if m.group(3).startswith("epoch"):
        return m.group(1), n, "EPOCH"
    return m.group(1), n * accum, "STEP"


# --- §6.3 resolution ------------------------------------------------------------------------------------------

def resolution(bucket: dict, default_aspects: list, bucketing: bool, model_type: str) -> str:
    """data.aspect_bucket params -> OneTrainer's resolution string, for a config whose
    ``aspect_ratio_bucketing`` is ``bucketing``."""
    sizes = [str(s) for s in bucket["resolutions"]] or [str(bucket["resolution"])]
    square = list(bucket["aspects"]) == ["1:1"]
    if not square and not same(list(bucket["aspects"]), default_aspects):
        raise NoMap("aspects", f"{bucket['aspects']}: OneTrainer buckets over its own aspect ratios, or "
                               "crops square")
    if bucketing and square:
        if len(sizes) > 1:
            raise NoMap("aspects", "square crops of several sizes while other concepts bucket by aspect")
        text = f"{sizes[0]}x{sizes[0]}"
    elif not bucketing and not square:
        raise NoMap("aspects", "buckets by aspect while other concepts crop square (OneTrainer's "
                               "aspect_ratio_bucketing is one switch for all)")
    else:
        text = ",".join(sizes)
    try:
        m = V.resolution(text, aspect_ratio_bucketing=bucketing, model_type=model_type)
    except V.Unsupported as e:
        raise NoMap("resolution", e.reason) from None
    _check(m.params, bucket)
    return text


# --- §6.6 layer filter ---------------------------------------------------------------------------------------

def layer_filter(target_regex: str | None, targets: str, model_type: str) -> tuple[str, bool]:
    """The LoRA setup's target_regex (what the importer wrote for a layer_filter) -> (layer_filter,
    layer_filter_regex)."""
    if target_regex is None:
        if targets == "all-linear":
            return "", False
        raise NoMap("targets", f"{targets}: OneTrainer selects layers by a layer_filter (a target_regex here)")
    m = re.fullmatch(r"\.\*\(\?:(.*)\)\.\*", target_regex, re.S)
    candidates = []
    if m:
        inner = m.group(1)
        plain = [_unescape(p) for p in re.split(r"(?<!\\)\|", inner)]
        if all(p is not None for p in plain):
            candidates.append((",".join(plain), False))
        if inner.startswith("(?:") and inner.endswith(")"):
            candidates.append((",".join(inner[3:-1].split(")|(?:")), True))
    for text, is_regex in candidates:
        try:
            got = V.lora_targets(text, is_regex, None, model_type=model_type).params["target_regex"]
        except V.Unsupported:
            continue
        if got == target_regex:
            return text, is_regex
    raise NoMap("target_regex", f"{target_regex!r} is not a OneTrainer layer_filter ('.*(?:a|b).*' for "
                                "substrings a, b)")


def _unescape(piece: str) -> str | None:
    text = re.sub(r"\\(.)", r"\1", piece)
    return text if re.escape(text) == piece and "," not in text else None


# --- §6.7 clip skip ---------------------------------------------------------------------------------------------

def layer_skips(model_type: str, clip_skip: int) -> dict:
    """Our clip_skip -> OneTrainer's text_encoder_N_layer_skip keys for ``model_type``."""
    t = str(model_type).upper()
    keys = ("text_encoder_layer_skip", "text_encoder_2_layer_skip") if t.startswith("STABLE_DIFFUSION_XL") \
        else ("text_encoder_layer_skip",)
    skips = {k: int(clip_skip) for k in keys}
    try:
        m = V.clip_skip(model_type, skips)
    except V.Unsupported as e:
        raise NoMap("clip_skip", e.reason) from None
    if m.params.get("clip_skip", 0) != int(clip_skip):
        raise NoMap("clip_skip", f"OneTrainer has no layer skip for {model_type}")
    return skips if "clip_skip" in m.params else {}


# --- §6.8 timesteps ----------------------------------------------------------------------------------------------

DIFFUSION = {"uniform": "UNIFORM", "cos_map": "COS_MAP", "logit_normal": "LOGIT_NORMAL", "heavy_tail": "HEAVY_TAIL",
             "beta": "BETA", "inverted_parabola": "INVERTED_PARABOLA", "sigmoid": "SIGMOID"}
FLOW = {"uniform": "UNIFORM", "cosmap": "COS_MAP", "logit_normal": "LOGIT_NORMAL", "mode": "HEAVY_TAIL",
        "beta": "BETA", "inverted_parabola": "INVERTED_PARABOLA"}


def timesteps(p: dict, flow: bool) -> dict:
    """The objective's timestep params -> OneTrainer's timestep_distribution, noising_weight/bias, shift and
    min/max_noising_strength."""
    name = p["sampling" if flow else "timestep_distribution"]
    dist = (FLOW if flow else DIFFUSION).get(name)
    if dist is None:
        raise NoMap("sampling" if flow else "timestep_distribution", f"{name}: not a OneTrainer distribution")
    w = b = 0.0
    if dist == "LOGIT_NORMAL":
        w, b = p["logit_std"] - 1, p["logit_mean"]
    elif dist == "HEAVY_TAIL":
        w = p["mode_scale" if flow else "heavy_tail_scale"]
    elif dist == "BETA":
        w, b = p["beta_alpha"], p["beta_beta"]
    elif dist == "INVERTED_PARABOLA":
        w, b = p["parabola_curvature"], p["distribution_center"] - 0.5
    elif dist == "SIGMOID":
        w, b = p["sigmoid_steepness"], p["distribution_center"] - 0.5
    out = {"timestep_distribution": dist, "noising_weight": float(w), "noising_bias": float(b)}
    if flow:
        out.update(min_noising_strength=float(p["min_sigma"]), max_noising_strength=float(p["max_sigma"]),
                   timestep_shift=float(p["shift"]), dynamic_timestep_shifting=bool(p["dynamic_shift"]))
    else:
        out.update(min_noising_strength=p["min_timestep"] / 1000, max_noising_strength=p["max_timestep"] / 1000,
                   timestep_shift=float(p["timestep_shift"]), dynamic_timestep_shifting=False)
    try:
        m = V.timesteps(dist, w, b, timestep_shift=out["timestep_shift"],
                        dynamic_timestep_shifting=out["dynamic_timestep_shifting"],
                        min_noising_strength=out["min_noising_strength"],
                        max_noising_strength=out["max_noising_strength"], flow_matching=flow)
    except V.Unsupported as e:
        raise NoMap("sampling" if flow else "timestep_distribution", f"{e.what}: {e.reason}") from None
    _check(m.params, p)
    return out
