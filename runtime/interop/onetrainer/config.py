"""Read a OneTrainer training config (full saved config of any version, or a preset) into effective values.

``read_config`` applies OneTrainer's loading rules (reference §1): migrations for full configs, presets laid
over the defaults, concepts and samples embedded or from their files, secrets never kept. The result also
says which keys differ from OneTrainer's defaults (``changed``), so an importer can map or report each one.
"""

import dataclasses
import json
import os

from . import defaults as D
from .migrations import migrate_concept, migrate_train_config, read_version

MAX_FILE_BYTES = 16 * 1024 * 1024

# Keys compared as a whole, not walked into (lists and free-form dicts).
_WHOLE_VALUE_KEYS = frozenset({"scheduler_params", "additional_embeddings", "optimizer_defaults",
                               "concept_stats", "muon_adam_config"})
# Reported per concept / per sample, not in ``changed``.
_LIST_KEYS = ("concepts", "samples")


@dataclasses.dataclass
class OneTrainerConfig:
    """The effective OneTrainer config and what differs from OneTrainer's defaults.

    ``values``: every TrainConfig key (``concepts``/``samples`` hold the resolved lists; ``secrets`` is never
    present). ``changed``: dotted keys whose value differs from the default. ``concept_changed`` /
    ``sample_changed``: the same per concept / sample. ``unknown``: keys of the file OneTrainer would ignore.
    ``notes``: one-line remarks (values dropped by migration, secrets dropped, samples file not found).
    """

    values: dict
    changed: frozenset
    concepts: list
    samples: list | None
    concept_changed: list
    sample_changed: list
    unknown: frozenset
    version: int
    preset: bool
    notes: list


def load_json(path, what="config"):
    """Parse a JSON file of bounded size; one-line ValueError naming the file otherwise."""
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise ValueError(f"{path}: {what} file not readable ({exc.strerror or exc})") from None
    if size > MAX_FILE_BYTES:
        raise ValueError(f"{path}: {what} file is {size} bytes, more than the {MAX_FILE_BYTES} allowed")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: {what} file not readable ({exc})") from None


def is_preset(path, raw):
    """A partial current-format preset: no ``__version`` and a ``#``-named file (not ``#.json``), or an
    ``optimizer`` given as an object (version 0 stored only the optimizer's name there)."""
    if "__version" in raw:
        return False
    name = os.path.basename(path)
    return (name.startswith("#") and name != "#.json") or isinstance(raw.get("optimizer"), dict)


def read_config(path, concepts=None, samples=None, preset=None, optimizer_rule="cli"):
    """Read OneTrainer config ``path``; ``concepts``/``samples`` are optional file paths that win over
    the config's own. ``preset`` None = detect (``is_preset``); True/False forces the form.

    ``optimizer_rule`` (§3.1): "cli" uses ``optimizer`` as loaded (``scripts/train.py``); "ui" rebuilds it
    as the UI does: ``optimizer_defaults[name]`` if present, else the UI's set for that optimizer; its
    keys then count as changed only where they differ from that set."""
    if optimizer_rule not in ("cli", "ui"):
        raise ValueError(f"optimizer_rule must be 'cli' or 'ui', got {optimizer_rule!r}")
    raw = load_json(path)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a OneTrainer config must be a JSON object, got {_kind(raw)}")
    notes = []
    if "secrets" in raw:
        raw = {k: v for k, v in raw.items() if k not in D.SECRET_KEYS}
        notes.append("'secrets' dropped: credentials are never imported")
    version = read_version(raw, D.CURRENT_VERSION, path)
    preset = is_preset(path, raw) if preset is None else preset
    if not preset:
        raw = migrate_train_config(raw, path, notes)
    values = D.train_config_defaults()
    unknown = set()
    _merge(values, raw, "", unknown)
    values.pop("secrets", None)
    baseline = D.train_config_defaults()
    if optimizer_rule == "ui":
        name = values["optimizer"]["optimizer"]
        # Parameters compare with the UI's set for the chosen optimizer; the name with the default one.
        baseline["optimizer"] = {**D.ui_optimizer_defaults(name), "optimizer": D.OPTIMIZER["optimizer"]}
        saved = values["optimizer_defaults"].get(name)
        values["optimizer"] = {**saved, "optimizer": name} if saved else D.ui_optimizer_defaults(name)
    concept_list = _resolve_concepts(path, raw, concepts, notes)
    sample_list = _resolve_samples(path, raw, samples, values["model_type"], notes)
    values["concepts"], values["samples"] = concept_list, sample_list
    concept_changed = [_diff(c, D.concept_defaults(), "", D.RANDOM_CONCEPT_KEYS) for c in concept_list]
    sample_defaults = D.sample_defaults(values["model_type"])
    sample_changed = [_diff(s, sample_defaults, "", frozenset()) for s in sample_list or []]
    changed = _diff({k: v for k, v in values.items() if k not in _LIST_KEYS}, baseline, "", D.RANDOM_KEYS)
    return OneTrainerConfig(values, frozenset(changed), concept_list, sample_list, concept_changed,
                            sample_changed, frozenset(unknown), version, preset, notes)


def _kind(value):
    return {list: "a list", str: "a string", type(None): "null", bool: "a boolean"}.get(type(value), "a number")


def _merge(target, source, prefix, unknown):
    """Merge JSON ``source`` into defaults ``target`` key by key, as ``BaseConfig.from_dict`` does (§1.5)."""
    for key, value in source.items():
        if key == "__version":
            continue
        if key not in target:
            unknown.add(prefix + key)
            continue
        default = target[key]
        if key == "optimizer_defaults" and isinstance(value, dict):
            target[key] = {name: {**D._copy(D.OPTIMIZER), **entry} for name, entry in value.items()
                           if isinstance(entry, dict)}
        elif key == "additional_embeddings" and isinstance(value, list):
            target[key] = [_merged(D.EMBEDDING, e, f"{prefix}{key}[{i}].", unknown)
                           for i, e in enumerate(value) if isinstance(e, dict)]
        elif isinstance(default, dict) and key not in _WHOLE_VALUE_KEYS and isinstance(value, dict):
            _merge(default, value, f"{prefix}{key}.", unknown)
        else:
            target[key] = _convert(default, value)


def _merged(defaults, value, prefix, unknown):
    result = D._copy(defaults)
    _merge(result, value, prefix, unknown)
    return result


def _convert(default, value):
    """OneTrainer's value conversions: ints truncate, "inf" floats, null in a plain string is "None"."""
    if isinstance(default, bool) or value is None and not isinstance(default, str):
        return value
    if isinstance(default, int) and isinstance(value, float) and value == value and abs(value) != float("inf"):
        return int(value)
    if not isinstance(default, str) and value in ("inf", "-inf"):  # floats, nullable ones included
        return float(value)
    if isinstance(default, str) and value is None:
        return "None"
    return value


def _diff(values, defaults, prefix, ignore):
    """Dotted keys of ``values`` that differ from ``defaults`` (sub-objects walked, lists compared whole)."""
    changed = set()
    for key, value in values.items():
        dotted = prefix + key
        if dotted in ignore or key == "__version":
            continue
        default = defaults.get(key)
        if isinstance(value, dict) and isinstance(default, dict) and key not in _WHOLE_VALUE_KEYS:
            changed |= _diff(value, default, dotted + ".", ignore)
        elif value != default:
            changed.add(dotted)
    return changed


def _list_from(path, what):
    items = load_json(path, what)
    if not isinstance(items, list):
        raise ValueError(f"{path}: a OneTrainer {what} file must hold a JSON list, got {_kind(items)}")
    return items


def _pointer(config_path, name):
    """Resolve a pointer key: absolute, else relative to the config's folder or its two parents, else cwd."""
    if os.path.isabs(name):
        return name
    folder = os.path.dirname(os.path.abspath(config_path))
    for base in (folder, os.path.dirname(folder), os.path.dirname(os.path.dirname(folder))):
        candidate = os.path.join(base, name)
        if os.path.isfile(candidate):
            return candidate
    return name


def _list_source(config_path, raw, given, key: str, pointer_key: str):
    """``(items, where)`` of a list OneTrainer keeps beside a config: the ``given`` file, else the list
    embedded under ``key``, else the file ``pointer_key`` names (``(None, name)`` when that is missing)."""
    if given is not None:
        return _list_from(given, key), given
    if raw.get(key) is not None:
        items, where = raw[key], f"{config_path}: {key}"
        if not isinstance(items, list):
            raise ValueError(f"{where} must be a list, got {_kind(items)}")
        return items, where
    name = str(raw.get(pointer_key, D.TOP_LEVEL[pointer_key]))
    where = _pointer(config_path, name)
    return (_list_from(where, key), where) if os.path.isfile(where) else (None, name)


def _resolve_concepts(config_path, raw, concepts_path, notes):
    """Concepts: the given file, else the embedded list, else the ``concept_file_name`` file; migrated."""
    items, where = _list_source(config_path, raw, concepts_path, "concepts", "concept_file_name")
    if items is None:
        raise ValueError(f"{config_path}: concepts file '{where}' (concept_file_name) not found; "
                         "give it with --concepts")
    result = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"{where}: concept {i} must be a JSON object, got {_kind(item)}")
        migrated = migrate_concept(item, f"{where}: concept {i}", notes)
        result.append(_merged(D.concept_defaults(), migrated, "", set()))
    return result


def _resolve_samples(config_path, raw, samples_path, model_type, notes):
    """Samples: the given file, else the embedded list, else the pointer file (None when it is missing,
    as OneTrainer then skips sampling)."""
    items, where = _list_source(config_path, raw, samples_path, "samples", "sample_definition_file_name")
    if items is None:
        notes.append(f"samples file '{where}' not found: no samples (OneTrainer skips sampling too)")
        return None
    result = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"{where}: sample {i} must be a JSON object, got {_kind(item)}")
        result.append(_merged(D.sample_defaults(model_type), item, "", set()))
    return result
