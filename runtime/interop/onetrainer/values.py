"""OneTrainer values re-expressed as nodetrainer node params (shared/reference/onetrainer-config.md §6).

Each function takes OneTrainer's value(s) as they appear in a config and returns a ``Mapped``: the
params of our nodes (``"node_type.param"`` keys unless the docstring says otherwise) plus notes where
the meaning is close but not identical. A value we cannot express raises ``Unsupported``, whose
message names the OneTrainer key and value. Pure functions: no torch, no file access.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

LOOP, SCHEDULE, OPTIMIZER = "train.loop", "train.lr_schedule", "train.optimizer"
DIFFUSION, FLOW = "train.diffusion_objective", "train.flow_matching_objective"
BUCKET = "data.aspect_bucket"
#: OneTrainer action -> (our hook node, OneTrainer's interval key, its skip key or None)
HOOKS = {
    "sample": ("train.sample_hook", "sample_after", "sample_skip_first"),
    "validate": ("train.validation_hook", "validate_after", None),
    "save": ("train.save_hook", "save_every", "save_skip_first"),
    "backup": ("train.backup_hook", "backup_after", None),
}
TIME_UNITS = ("EPOCH", "STEP", "SECOND", "MINUTE", "HOUR", "NEVER", "ALWAYS")
MAX_CLIP_SKIP = 12  # our clip_skip params' max


class Unsupported(ValueError):
    """A OneTrainer value nodetrainer cannot express; ``what`` names the key (and unit or value)."""

    def __init__(self, what: str, reason: str):
        self.what, self.reason = what, reason
        super().__init__(f"unsupported: {what}: {reason}")


@dataclass(frozen=True)
class Mapped:
    """Our params for a OneTrainer value, and notes on where the meaning differs slightly."""

    params: dict
    notes: tuple[str, ...] = field(default=())


def _int(key: str, value) -> int:
    """OneTrainer's int keys: a float truncates (§6.2); anything else is unsupported."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise Unsupported(f"{key} = {value!r}", "not a number")
    return int(value)


# --- §6.1 steps, epochs, accumulation, warmup ---------------------------------------------------------

def warmup(learning_rate_warmup_steps, gradient_accumulation_steps: int = 1, *,
           schedule_free: bool = False) -> Mapped:
    """OneTrainer's ``learning_rate_warmup_steps`` w (§6.1): w > 1 counts batches, so W = int(w / accum)
    optimizer updates; 0 < w <= 1 is a fraction of all updates; w <= 0 is none. Our
    ``train.lr_schedule.warmup`` is updates when >= 1 and a fraction below 1. Schedule-free optimizers get
    the raw w as their own ``warmup_steps`` and a constant schedule without warmup."""
    key = f"learning_rate_warmup_steps = {learning_rate_warmup_steps!r}"
    if isinstance(learning_rate_warmup_steps, bool) or not isinstance(learning_rate_warmup_steps, (int, float)):
        raise Unsupported(key, "not a number")
    w, accum = float(learning_rate_warmup_steps), max(1, int(gradient_accumulation_steps))
    if schedule_free:
        notes = (f"{key}: OneTrainer passes the raw value to the schedule-free optimizer, which takes "
                 f"whole steps: {int(w)}",) if 0 < w != int(w) else ()
        return Mapped({f"{SCHEDULE}.name": "constant", f"{SCHEDULE}.warmup": 0.0,
                       f"{OPTIMIZER}.warmup_steps": max(0, int(w))}, notes)
    if w <= 0:
        return Mapped({f"{SCHEDULE}.warmup": 0.0})
    if w > 1:
        return Mapped({f"{SCHEDULE}.warmup": float(int(w / accum))})
    if w == 1:
        raise Unsupported(key, "OneTrainer reads 1 as the fraction 1.0 (the whole run is warmup); "
                               "train.lr_schedule reads 1 as one update")
    return Mapped({f"{SCHEDULE}.warmup": w},
                  (f"{key}: OneTrainer truncates w x total updates, nodetrainer rounds it",))


def run_length(epochs, gradient_accumulation_steps=1) -> Mapped:
    """OneTrainer runs ``epochs`` full passes and has no max-steps key (§6.1); a step is a batch and an
    optimizer update comes every ``gradient_accumulation_steps`` batches: our train.loop's epochs,
    max_steps 0 (run by epochs) and gradient_accumulation."""
    n = _int("epochs", epochs)
    accum = _int("gradient_accumulation_steps", gradient_accumulation_steps)
    if n < 1:
        raise Unsupported(f"epochs = {epochs!r}", "train.loop runs at least one epoch")
    if accum < 1:
        raise Unsupported(f"gradient_accumulation_steps = {gradient_accumulation_steps!r}",
                          "must be at least 1")
    return Mapped({f"{LOOP}.epochs": n, f"{LOOP}.max_steps": 0, f"{LOOP}.gradient_accumulation": accum})


# --- §6.2 time units ------------------------------------------------------------------------------------

def _unit(key: str, unit) -> str:
    u = str(unit).upper()
    if u not in TIME_UNITS:
        raise Unsupported(f"{key} = {unit!r}", f"not a OneTrainer time unit ({', '.join(TIME_UNITS)})")
    return u


def _minutes(key: str, n: int, unit: str) -> int:
    """``n`` SECOND / MINUTE / HOUR in whole minutes (our hooks' time unit)."""
    if unit == "HOUR":
        return n * 60
    if unit == "SECOND":
        if n % 60:
            raise Unsupported(f"{key} in SECOND", f"{n} seconds is not a whole number of minutes, and "
                                                   "nodetrainer's hooks count minutes")
        return n // 60
    return n


def _skip(action: str, key: str, s: int, unit: str, accum: int) -> int:
    """OneTrainer's skip test is true once elapsed + 1 > s (§6.2), our hooks fire when elapsed > skip_first.
    Sample/validate check before a batch (elapsed = batches done), save/backup after it."""
    if s <= 0 or unit == "ALWAYS":
        return 0
    if unit == "STEP":
        return max(0, math.ceil(s / accum) - 1) if action in ("sample", "validate") else s // accum
    if unit == "EPOCH":
        return s - 1
    return _minutes(key, s, unit)


def hook_schedule(action: str, interval, unit, *, skip_first=0, gradient_accumulation_steps: int = 1) -> Mapped:
    """OneTrainer's ``sample_after`` / ``validate_after`` / ``save_every`` / ``backup_after`` with its unit
    (and ``*_skip_first``) -> our hook's every / unit / skip_first (§6.2). Intervals are ints (floats
    truncate); STEP counts batches (÷ accumulation: our steps are updates); 0 or NEVER = never (our every
    0: only on command); ALWAYS = every batch, i.e. every update (actions wait for an accumulation
    boundary); SECOND / HOUR become minutes; a 0-second/minute/hour interval fires at every check."""
    if action not in HOOKS:
        raise ValueError(f"unknown OneTrainer action {action!r} (one of {', '.join(HOOKS)})")
    node, key, skip_key = HOOKS[action]
    u = _unit(f"{key}_unit", unit)
    n = _int(key, interval)
    s = _int(skip_key or "skip_first", skip_first)
    accum = max(1, int(gradient_accumulation_steps))
    notes: list[str] = []

    def out(every: int, our_unit: str, skip: int = 0) -> Mapped:
        return Mapped({f"{node}.every": every, f"{node}.unit": our_unit, f"{node}.skip_first": skip}, tuple(notes))

    if u == "NEVER" or (n <= 0 and u in ("EPOCH", "STEP")):
        return out(0, "steps")
    if u == "ALWAYS" or n <= 0:
        if s > 0 and u not in ("ALWAYS", "STEP", "EPOCH"):
            raise Unsupported(f"{skip_key} in {u}", f"{key} 0 fires every update, and a skip in {u.lower()} "
                                                    "cannot be combined with a step interval")
        return out(1, "steps")
    if action in ("sample", "validate"):
        notes.append(f"{key}: OneTrainer also {'samples' if action == 'sample' else 'validates'} when "
                     "training starts; nodetrainer's hook first fires after one interval")
    if u == "STEP":
        if n % accum:
            notes.append(f"{key} = {n} batches is not a whole number of updates with gradient accumulation "
                         f"{accum}: every {math.ceil(n / accum)} updates")
        return out(max(1, math.ceil(n / accum)), "steps", _skip(action, skip_key, s, u, accum))
    if u == "EPOCH":
        return out(n, "epochs", _skip(action, skip_key, s, u, accum))
    return out(_minutes(key, n, u), "minutes", _skip(action, skip_key, s, u, accum))


def part_stop_training(part: str, stop_training_after, unit, epochs) -> Mapped:
    """OneTrainer's ``<part>.stop_training_after`` freezes a part once that many units have elapsed
    (§6.2: true once elapsed + 1 > n; null or NEVER = never). nodetrainer cannot freeze a part mid-run, so
    only the cases that mean "for the whole run" map: never / not before the last epoch -> nothing;
    0 steps or epochs, or ALWAYS -> the part does not train (params ``{"train": False}``)."""
    key = f"{part}.stop_training_after"
    if stop_training_after is None:
        return Mapped({})
    u = _unit(f"{key}_unit", unit)
    if u == "NEVER":
        return Mapped({})
    n = _int(key, stop_training_after)
    if u == "ALWAYS" or (n <= 0 and u in ("EPOCH", "STEP")):
        return Mapped({"train": False})
    if u == "EPOCH" and n >= _int("epochs", epochs):
        return Mapped({})
    raise Unsupported(f"{key} in {u}", f"nodetrainer cannot stop training a part after {n} "
                                       f"{u.lower()}{'s' if n != 1 else ''} while the rest trains on")


# --- §6.3 resolution strings ------------------------------------------------------------------------------

def quantum(model_type: str | None) -> int:
    """The bucket side multiple OneTrainer uses per model type (§6.3)."""
    t = str(model_type or "").upper()
    if t.startswith(("STABLE_DIFFUSION_15", "STABLE_DIFFUSION_2")):
        return 8
    if t.startswith("PIXART"):
        return 16
    if t == "SANA":
        return 32
    if t in ("WUERSTCHEN_2", "STABLE_CASCADE_1"):
        return 128
    return 64


_INTS = re.compile(r"\s*\d{1,5}\s*(,\s*\d{1,5}\s*)*", re.ASCII)
_SIZE = re.compile(r"\s*(\d{1,5})\s*x\s*(\d{1,5})\s*", re.ASCII)


def resolution(text, *, aspect_ratio_bucketing: bool = True, model_type: str | None = None,
               key: str = "resolution") -> Mapped:
    """OneTrainer's ``resolution`` string (§6.3) -> data.aspect_bucket params. "512": buckets of 512²
    pixels (bucketing off: a square crop, our aspects ["1:1"]); "512,768": one drawn per image
    (our ``resolutions``); "1024x768": an exact width x height, which our buckets (always also used
    rotated) express only when square; with bucketing off OneTrainer rejects it."""
    s = str(text)
    q = quantum(model_type)
    square = {} if aspect_ratio_bucketing else {f"{BUCKET}.aspects": ["1:1"]}
    size = _SIZE.fullmatch(s)
    if size and "," not in s:
        w, h = int(size.group(1)), int(size.group(2))
        if not aspect_ratio_bucketing:
            raise Unsupported(f"{key} = {s[:40]!r}", "OneTrainer accepts W x H only with aspect ratio bucketing")
        if w != h:
            raise Unsupported(f"{key} = {s[:40]!r}", "an exact non-square size: data.aspect_bucket always "
                                                     "offers the rotated bucket too")
        return _bucket(key, s, [w], q, {f"{BUCKET}.aspects": ["1:1"]})
    if not _INTS.fullmatch(s):
        raise Unsupported(f"{key} = {s[:40]!r}", "not a OneTrainer resolution (one number, numbers "
                                                 "separated by commas, or W x H)")
    sizes = list(dict.fromkeys(int(p) for p in s.split(",")))
    return _bucket(key, s, sizes, q, square)


def _bucket(key: str, text: str, sizes: list[int], q: int, extra: dict) -> Mapped:
    for v in sizes:
        if not 8 <= v <= 8192:
            raise Unsupported(f"{key} = {text[:40]!r}", f"{v} is outside data.aspect_bucket's 8..8192")
    if len(sizes) == 1:
        params = {f"{BUCKET}.resolution": sizes[0], f"{BUCKET}.resolutions": []}
    else:
        params = {f"{BUCKET}.resolution": min(sizes), f"{BUCKET}.resolutions": [str(v) for v in sizes]}
    params[f"{BUCKET}.quantization"] = min(q, min(sizes))
    params.update(extra)
    return Mapped(params)


# --- §6.4 per-part learning rates, §6.1 scalers ---------------------------------------------------------------

def scaler_factor(scaler, batch_size: int = 1, gradient_accumulation_steps: int = 1, world_size: int = 1) -> int:
    """OneTrainer's LearningRateScaler / LossScaler scale (§6.1): NONE 1, BATCH bs, GLOBAL_BATCH bs x world,
    GRADIENT_ACCUMULATION accum, BOTH accum x bs, GLOBAL_BOTH accum x bs x world."""
    bs, acc, world = int(batch_size), int(gradient_accumulation_steps), int(world_size)
    table = {"NONE": 1, "BATCH": bs, "GLOBAL_BATCH": bs * world, "GRADIENT_ACCUMULATION": acc,
             "BOTH": acc * bs, "GLOBAL_BOTH": acc * bs * world}
    name = str(scaler).upper()
    if name not in table:
        raise Unsupported(f"scaler = {scaler!r}", f"not a OneTrainer scaler ({', '.join(table)})")
    return table[name]


def learning_rates(learning_rate, parts: dict | None = None, *, learning_rate_scaler="NONE", batch_size: int = 1,
                   gradient_accumulation_steps: int = 1, world_size: int = 1) -> Mapped:
    """OneTrainer's per-part LRs (§6.4): a part's null ``learning_rate`` inherits the top-level one; then
    every group LR is multiplied by sqrt(LearningRateScaler scale) (§6.1). Returns ``train.optimizer.lr``
    and, per part, ``<part>_lr`` (our setup nodes' names): None where it inherits (our empty = the
    optimizer's). A part LR of exactly 0 is unsupported: our 0 means "the optimizer's"."""
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) or learning_rate < 0:
        raise Unsupported(f"learning_rate = {learning_rate!r}", "not a learning rate")
    k = math.sqrt(scaler_factor(learning_rate_scaler, batch_size, gradient_accumulation_steps, world_size))
    params: dict = {f"{OPTIMIZER}.lr": float(learning_rate) * k}
    for part, lr in (parts or {}).items():
        if lr is None:
            params[f"{part}_lr"] = None
            continue
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr < 0:
            raise Unsupported(f"{part}.learning_rate = {lr!r}", "not a learning rate")
        if lr == 0:
            raise Unsupported(f"{part}.learning_rate = 0", "OneTrainer trains the part with LR 0; "
                                                           "nodetrainer's 0 means the optimizer's LR")
        params[f"{part}_lr"] = float(lr) * k
    return Mapped(params)


def loss_scaler(value, batch_size: int = 1, gradient_accumulation_steps: int = 1, world_size: int = 1) -> Mapped:
    """OneTrainer's ``loss_scaler`` multiplies the loss by its scale, linearly (§6.1). nodetrainer's
    objectives have no global loss multiplier, so only a scale of 1 maps (to nothing)."""
    factor = scaler_factor(value, batch_size, gradient_accumulation_steps, world_size)
    if factor != 1:
        raise Unsupported(f"loss_scaler = {value!r}", f"scales the loss by {factor}; nodetrainer's objectives "
                                                       "have no loss multiplier")
    return Mapped({})

# --- §6.9 dtype names ------------------------------------------------------------------------------------------

_FLOATS = {"FLOAT_32": "float32", "FLOAT_16": "float16", "BFLOAT_16": "bfloat16"}
_QUANTIZED = {"FLOAT_8": "fp8", "INT_8": "int8", "NFLOAT_4": "nf4"}
_PRECISION = {"FLOAT_32": "fp32", "TFLOAT_32": "fp32", "FLOAT_16": "fp16", "BFLOAT_16": "bf16"}


def train_dtype(value) -> Mapped:
    """OneTrainer's ``train_dtype`` (§6.9) -> train.loop precision (autocast dtype) and tf32:
    TFLOAT_32 is float32 with TF32 matmuls."""
    name = str(value).upper()
    if name not in _PRECISION:
        raise Unsupported(f"train_dtype = {value!r}", "train.loop trains in FLOAT_32, TFLOAT_32, FLOAT_16 or "
                                                      "BFLOAT_16")
    return Mapped({f"{LOOP}.precision": _PRECISION[name], f"{LOOP}.tf32": name == "TFLOAT_32"})


def weight_dtype(key: str, value) -> Mapped:
    """A part's ``weight_dtype`` (§6.9) -> our loader's dtype and quantize: FLOAT_32/16, BFLOAT_16 are the
    dtype; FLOAT_8, INT_8, NFLOAT_4 are weight-only quantized Linear weights (our quantize fp8, int8,
    nf4; the dtype stays the loader's). 8-bit activations (W8A8), GGUF and NONE have no equivalent."""
    name = str(value).upper()
    if name in _FLOATS:
        return Mapped({"dtype": _FLOATS[name]})
    if name in _QUANTIZED:
        return Mapped({"quantize": _QUANTIZED[name]},
                      (f"{key} = {name}: nodetrainer quantizes with torchao (OneTrainer: its own fp8 / "
                       "bitsandbytes); only loaders with a quantize param take it",))
    reason = ("8-bit activations are not supported" if "W8A8" in name else
              "GGUF weights are not supported" if name.startswith("GGUF") else
              "not a weight dtype" if name != "NONE" else "no dtype")
    raise Unsupported(f"{key} = {value!r}", reason)


def output_dtype(value, key: str = "output_dtype") -> Mapped:
    """OneTrainer's ``output_dtype`` (§6.9) -> our saver's dtype; FLOAT_8 / NFLOAT_4 files are unsupported."""
    name = str(value).upper()
    if name not in _FLOATS:
        raise Unsupported(f"{key} = {value!r}", "nodetrainer saves float16, bfloat16 or float32 weights")
    return Mapped({"dtype": _FLOATS[name]})


# --- §6.6 layer filter --------------------------------------------------------------------------------------

_SD, _FLUX1 = "sd", "flux1"
#: OneTrainer's LAYER_PRESETS per setup family: preset -> (patterns, regex?)
LAYER_PRESETS = {
    _SD: {"attn-mlp": ["attentions"], "attn-only": ["attn"]},
    "sd3": {"attn-only": ["attn"], "blocks": ["transformer_block"]},
    _FLUX1: {"attn-mlp": ["attn", "ff.net", "proj_mlp"], "attn-only": ["attn"], "blocks": ["transformer_block"]},
    "flux2": {"blocks": ["transformer_block"]},
    "pixart": {"attn-mlp": ["attn1", "attn2", "ff.net"], "attn-only": ["attn1", "attn2"],
               "blocks": ["transformer_block"]},
    "sana": {"attn-mlp": ["attn1", "attn2", "ff."], "attn-only": ["attn1", "attn2"], "blocks": ["transformer_block"]},
    "anima": {"attn-mlp": ["attn1", "attn2", "ff"], "attn-only": ["attn1", "attn2"], "blocks": ["transformer_block"]},
    "qwen": {"attn-mlp": ["attn", "img_mlp", "txt_mlp"], "attn-only": ["attn"], "blocks": ["transformer_block"]},
    "hidream": {"attn-mlp": ["attn1", "ff_i"], "attn-only": ["attn1"], "blocks": ["stream_block"]},
    "krea2": {"attn-mlp": ["attn", "ff"], "attn-only": ["attn"], "blocks": ["transformer_blocks"]},
    "ernie": {"attn-mlp": ["self_attention", "mlp"], "attn-only": ["self_attention"], "blocks": ["layers"]},
    "ideogram": {"attn-mlp": ["attention", "feed_forward"], "attn-only": ["attention"], "blocks": ["layers"]},
    "wuerstchen": {"attn-only": ["attention"], "down-blocks": ["down_blocks"], "up-blocks": ["up_blocks"],
                   "mapper-only": ["mapper"]},
}
_FAMILY_PREFIXES = (("STABLE_DIFFUSION_3", "sd3"), ("STABLE_DIFFUSION", _SD), ("FLUX_2", "flux2"),
                    ("FLUX", _FLUX1), ("CHROMA", _FLUX1), ("HUNYUAN", _FLUX1), ("PIXART", "pixart"),
                    ("SANA", "sana"), ("ANIMA", "anima"), ("QWEN", "qwen"), ("HI_DREAM", "hidream"),
                    ("KREA", "krea2"), ("ERNIE", "ernie"), ("IDEOGRAM", "ideogram"), ("WUERSTCHEN", "wuerstchen"),
                    ("STABLE_CASCADE", "wuerstchen"))


def preset_family(model_type) -> str | None:
    """The LAYER_PRESETS family of a OneTrainer model type (None: no preset table known, e.g. Z-Image)."""
    t = str(model_type or "").upper()
    return next((fam for prefix, fam in _FAMILY_PREFIXES if t.startswith(prefix)), None)


def preset_filter(model_type, preset) -> tuple[str, bool]:
    """What OneTrainer's UI writes for ``layer_filter_preset`` (§6.6): (",".join(patterns), regex flag);
    "full" is ("", False)."""
    if preset == "full":
        return "", False
    table = LAYER_PRESETS.get(preset_family(model_type) or "", {})
    if preset not in table:
        raise Unsupported(f"layer_filter_preset = {preset!r}", f"no such preset known for {model_type}")
    return ",".join(table[preset]), False


def lora_targets(layer_filter="", layer_filter_regex: bool = False, layer_filter_preset=None, *,
                 model_type=None, semantics: str = "cli") -> Mapped:
    """OneTrainer's ``layer_filter`` (§6.6) -> our LoRA setup's ``target_regex`` (fullmatched against
    full module names). The filter splits on ",", pieces trimmed; an empty piece matches every layer; a
    piece matches as a substring, or with ``layer_filter_regex`` as a regex found anywhere; any match
    selects. ``layer_filter_preset`` is only a UI label: with ``semantics="cli"`` (what OneTrainer's
    trainer reads) it is ignored, with ``"ui"`` a preset other than custom replaces the filter."""
    if semantics not in ("cli", "ui"):
        raise ValueError(f"semantics must be 'cli' or 'ui', not {semantics!r}")
    notes: list[str] = []
    text, is_regex = str(layer_filter or ""), bool(layer_filter_regex)
    if layer_filter_preset not in (None, "custom"):
        if semantics == "ui":
            text, is_regex = preset_filter(model_type, layer_filter_preset)
        else:
            try:
                ui = preset_filter(model_type, layer_filter_preset)[0]
            except Unsupported:
                ui = None
            if ui is not None and ui != text:
                notes.append(f"layer_filter_preset = {layer_filter_preset!r} is only a UI label: OneTrainer's "
                             f"trainer uses layer_filter {text!r}, its UI would write {ui!r}")
    pieces = [p.strip() for p in text.split(",")]
    notes.append("OneTrainer adapts 3x3 convolutions too where a filter selects them, and every layer of "
                 "trained text encoders; nodetrainer adapts Linear and 1x1 layers (LoCon for 3x3)")
    if any(not p for p in pieces):
        return Mapped({"target_regex": ".*"}, tuple(notes))
    if is_regex:
        for p in pieces:
            try:
                re.compile(p)
            except re.error as e:
                raise Unsupported(f"layer_filter = {p[:60]!r}", f"not a valid regular expression: {e}") from None
        alternatives = "|".join(f"(?:{p})" for p in pieces)
    else:
        alternatives = "|".join(re.escape(p) for p in pieces)
    return Mapped({"target_regex": f".*(?:{alternatives}).*"}, tuple(notes))


# --- §6.7 text encoder layer skip -----------------------------------------------------------------------------

def clip_skip(model_type, skips: dict) -> Mapped:
    """OneTrainer's ``text_encoder_N_layer_skip`` (§6.7): k selects hidden state (default - k), 0 = the
    model's normal output (the penultimate layer for SDXL's CLIPs). Our ``clip_skip`` counts the same way
    from the same base (SD: 1 = clip skip 2; SDXL: layers before the penultimate), one value for both SDXL
    encoders. Our Flux.1 nodes have no skip, so only 0 maps; families OneTrainer reads no key for ignore
    the values."""
    t = str(model_type or "").upper()
    if t.startswith("STABLE_DIFFUSION_XL"):
        keys = ("text_encoder_layer_skip", "text_encoder_2_layer_skip")
    elif t.startswith(("STABLE_DIFFUSION_15", "STABLE_DIFFUSION_2")):
        keys = ("text_encoder_layer_skip",)
    elif t.startswith("FLUX_DEV") or t.startswith("FLUX_FILL"):
        for key in ("text_encoder_layer_skip", "text_encoder_2_layer_skip"):
            if _int(key, skips.get(key, 0) or 0):
                raise Unsupported(f"{key} = {skips[key]!r}", "nodetrainer's Flux.1 nodes have no layer skip")
        return Mapped({})
    elif t in ("QWEN", "Z_IMAGE", "KREA_2", "ANIMA", "ERNIE", "IDEOGRAM_4", "FLUX_2"):
        return Mapped({}, tuple(f"{k} is not read by OneTrainer for {t}" for k, v in skips.items() if v))
    else:
        raise Unsupported(f"text encoder layer skip for {model_type}", "no nodetrainer family for it")
    values = {k: _int(k, skips.get(k, 0) or 0) for k in keys}
    for k, v in values.items():
        if not 0 <= v <= MAX_CLIP_SKIP:
            raise Unsupported(f"{k} = {v}", f"clip_skip is 0..{MAX_CLIP_SKIP}")
    if len(set(values.values())) > 1:
        raise Unsupported(", ".join(f"{k} = {v}" for k, v in values.items()),
                          "nodetrainer's SDXL nodes take one clip_skip for both text encoders")
    return Mapped({"clip_skip": next(iter(values.values()))})


# --- §6.8 timestep distribution ------------------------------------------------------------------------------

def _ranged(name: str, value: float, lo: float, hi: float, what: str) -> float:
    if not lo <= value <= hi:
        raise Unsupported(what, f"gives {name} {value:g}, outside {lo:g}..{hi:g}")
    return value


def timesteps(timestep_distribution="UNIFORM", noising_weight=0.0, noising_bias=0.0, *, timestep_shift=1.0,
              dynamic_timestep_shifting=False, min_noising_strength=0.0, max_noising_strength=1.0,
              flow_matching: bool = False) -> Mapped:
    """OneTrainer's timestep distribution params (§6.8) -> our objective's. LOGIT_NORMAL: mean = bias,
    std = weight + 1; HEAVY_TAIL: scale = weight; BETA: alpha = weight, beta = bias (min 1e-4); SIGMOID
    and INVERTED_PARABOLA: steepness / curvature = weight, centre = bias + 0.5; UNIFORM and COS_MAP
    ignore both. [min, max]_noising_strength bound the timesteps (flow: sigmas); the shift is the same
    s t / ((s - 1) t + 1)."""
    dist = str(timestep_distribution).upper()
    what = f"timestep_distribution = {dist} (noising_weight {noising_weight}, noising_bias {noising_bias})"
    w, b = float(noising_weight or 0.0), float(noising_bias or 0.0)
    node = FLOW if flow_matching else DIFFUSION
    p: dict = {}
    if dist == "SIGMOID" and w == 0:
        dist = "UNIFORM"  # steepness 0 is a flat density
    if dist == "UNIFORM":
        p["uniform"] = {}
    elif dist == "COS_MAP":
        p["cosmap" if flow_matching else "cos_map"] = {}
    elif dist == "LOGIT_NORMAL":
        p["logit_normal"] = {"logit_mean": _ranged("logit_mean", b, -5, 5, what),
                             "logit_std": _ranged("logit_std", w + 1, 0.01, 10, what)}
    elif dist == "HEAVY_TAIL":
        p["mode" if flow_matching else "heavy_tail"] = {
            "mode_scale" if flow_matching else "heavy_tail_scale": _ranged("the tail scale", w, -1, 1.75, what)}
    elif dist == "BETA":
        p["beta"] = {"beta_alpha": _ranged("beta_alpha", max(w, 1e-4), 1e-4, 1000, what),
                     "beta_beta": _ranged("beta_beta", max(b, 1e-4), 1e-4, 1000, what)}
    elif dist == "INVERTED_PARABOLA":
        p["inverted_parabola"] = {"parabola_curvature": _ranged("parabola_curvature", w, 0, 1000, what),
                                  "distribution_center": _ranged("distribution_center", b + 0.5, 0, 1, what)}
    elif dist == "SIGMOID":
        if flow_matching:
            raise Unsupported(what, "the flow-matching objective's sigmoid is kohya's sigmoid(scale x N(0, 1)), "
                                    "not OneTrainer's steepness/centre density")
        p["sigmoid"] = {"sigmoid_steepness": _ranged("sigmoid_steepness", w, -100, 100, what),
                        "distribution_center": _ranged("distribution_center", b + 0.5, 0, 1, what)}
    else:
        raise Unsupported(f"timestep_distribution = {timestep_distribution!r}", "not a OneTrainer distribution")
    (name, shape), = p.items()
    lo, hi = float(min_noising_strength), float(max_noising_strength)
    if not 0 <= lo < hi <= 1:
        raise Unsupported(f"min/max_noising_strength = {lo:g}/{hi:g}", "need 0 <= min < max <= 1")
    out = {f"{node}.{'sampling' if flow_matching else 'timestep_distribution'}": name}
    out.update({f"{node}.{k}": v for k, v in shape.items()})
    shift = _ranged("the shift", float(timestep_shift), 0.01, 100, f"timestep_shift = {timestep_shift!r}")
    if flow_matching:
        out.update({f"{node}.min_sigma": lo, f"{node}.max_sigma": hi, f"{node}.shift": shift,
                    f"{node}.dynamic_shift": bool(dynamic_timestep_shifting)})
    else:
        if dynamic_timestep_shifting:
            raise Unsupported("dynamic_timestep_shifting = true", "only flow-matching models shift by resolution")
        out.update({f"{node}.min_timestep": int(round(lo * 1000)), f"{node}.max_timestep": int(round(hi * 1000)),
                    f"{node}.timestep_shift": shift})
    return Mapped(out)
