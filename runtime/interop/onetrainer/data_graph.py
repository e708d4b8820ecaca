"""The data graph of an import: one branch per OneTrainer concept, merged, encoded, cached, batched.

A branch is the concept's source, its aspect buckets (the concept's resolution override or the global
resolution), image loading, crop and augmentations, and its caption stages; branches join in a Merge
node, then the family's encoders, one disk cache and the batches node. VALIDATION concepts get their
own branches, encoders, cache and batches (batch size 1, as OneTrainer's validation loader).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from . import values as V
from .values import Mapped

ROLES = {"STANDARD": "standard", "PRIOR_PREDICTION": "prior_prediction"}
#: OneTrainer's colour augmentations: (key stem, our node, the highest strength it takes)
COLOURS = (("brightness", "data.random_brightness@1", 1.0), ("contrast", "data.random_contrast@1", 1.0),
           ("saturation", "data.random_saturation@1", 1.0), ("hue", "data.random_hue@1", 0.5))


@dataclass
class Data:
    """The ``node.port`` of the training batches and of the validation batches (None: no validation)."""

    batches: str
    validation: str | None = None


def add(imp) -> Data:
    v = imp.v
    train, validation = [], []
    for i, concept in enumerate(v["concepts"]):
        key = f"concepts[{i}]"
        if not concept["enabled"]:
            _left_out(imp, i, "the concept is disabled (enabled: false)")
            continue
        if concept["type"] == "VALIDATION":
            if v["validation"]:
                validation.append(i)
                imp.mapped(f"{key}.type", "validation branch (train.validation_hook)")
            else:
                _left_out(imp, i, "a validation concept, and validation is off")
            continue
        if concept["type"] not in ROLES:
            imp.unsupported(f"{key}.type", f"{concept['type']} is not a concept type nodetrainer has")
        train.append(i)
    if not train:
        raise ValueError("no enabled training concept: OneTrainer would have nothing to train on either")
    batches = _stream(imp, train, "", int(v["batch_size"]))
    imp.mapped("batch_size", "batches.batch_size")
    val = _stream(imp, validation, "val_", 1) if validation else None
    _global_keys(imp)
    return Data(batches, val)


def _left_out(imp, i: int, reason: str) -> None:
    imp.mapped(f"concepts[{i}].enabled", "(left out of the graph)")
    for key in sorted(imp.cfg.concept_changed[i]):
        if key != "enabled":
            imp.not_needed(f"concepts[{i}].{key}", reason)


def _stream(imp, indices: list[int], prefix: str, batch_size: int) -> str:
    """Branches, merge, encoders, cache and batches for the concepts at ``indices``; the batches' port."""
    branches = [_branch(imp, i, prefix) for i in indices]
    fields = branches[0]
    if len(branches) > 1:
        merge = imp.b.add(f"{prefix}merge", "data.merge@1", {}, {
            "fields": list(branches[0].values()), "more": [ref for br in branches[1:] for ref in br.values()]})
        fields = {name: f"{merge}.{name}" for name in branches[0]}
    encoded = imp.family.encode(imp, prefix, fields["image"], fields["caption"], fields)
    cached = dict(encoded.cached)
    cached["bucket"] = fields["bucket"]
    if "mask" in fields:
        cached["mask"] = fields["mask"]
    direct = {**encoded.direct, "loss_weight": fields["loss_weight"], "role": fields["role"]}
    if imp.v["latent_caching"] or any(ref.rsplit(".", 1)[1] != name for name, ref in cached.items()):
        if not imp.v["latent_caching"]:
            imp.unsupported("latent_caching", "fields of the same name need the cache to tell them apart; "
                                              "the graph caches (one augmentation per cache variation)")
        cache = imp.b.add(f"{prefix}cache", "data.disk_cache@2", {
            "rename": [f"{ref}={name}" for name, ref in cached.items() if ref.rsplit(".", 1)[1] != name],
            "variations": _variations(imp, indices)}, {"fields": list(cached.values())})
        imp.mapped("latent_caching", f"{cache} (data.disk_cache)")
        if imp.changed("cache_dir"):
            imp.b.set(cache, "folder", imp.v["cache_dir"])
            imp.mapped("cache_dir", f"{cache}.folder")
        cached = {name: f"{cache}.{name}" for name in cached}
    else:
        imp.mapped("latent_caching", "(no cache: every epoch encodes again)")
        imp.not_needed("cache_dir", "latent_caching is off")
    bucket = cached.pop("bucket")
    batch_fields = list(cached.values()) + list(direct.values())
    return imp.b.add(f"{prefix}batches", "data.batches@1", {"batch_size": batch_size},
                     {"fields": batch_fields, "bucket": bucket}) + ".batches"


def _variations(imp, indices: list[int]) -> int:
    counts = {max(int(imp.v["concepts"][i]["image_variations"]), int(imp.v["concepts"][i]["text_variations"]), 1)
              for i in indices}
    for i in indices:
        for key in ("image_variations", "text_variations"):
            imp.mapped(f"concepts[{i}].{key}", "cache.variations")
            if len(counts) > 1 and imp.changed(f"concepts[{i}].{key}"):
                imp.report.note(f"concepts[{i}].{key}", f"one cache for all concepts keeps {max(counts)} "
                                                        "variations of each")
    return max(counts)


def _slug(concept: dict, i: int) -> str:
    name = concept["name"] or os.path.basename(os.path.normpath(concept["path"] or "")) or f"concept_{i + 1}"
    return re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_").lower() or f"concept_{i + 1}"


def _branch(imp, i: int, prefix: str) -> dict[str, str]:
    """One concept's branch; returns its fields (image, caption, bucket, loss_weight, role, size, crop_offset
    [, mask]): what the family's encoders may read."""
    c, key, b = imp.v["concepts"][i], f"concepts[{i}]", imp.b
    p = prefix + _slug(c, i)
    masks = bool(imp.v["masked_training"])
    concept = b.add(p, "data.concept@1", {
        "folder": c["path"], "name": c["name"], "recursive": bool(c["include_subdirectories"]),
        "balancing": float(c["balancing"]), "balancing_strategy": str(c["balancing_strategy"]).lower(),
        "loss_weight": float(c["loss_weight"]), "role": ROLES.get(c["type"], "standard"), "masks": masks})
    for k, param in (("path", "folder"), ("name", "name"), ("include_subdirectories", "recursive"),
                     ("balancing", "balancing"), ("balancing_strategy", "balancing_strategy"),
                     ("loss_weight", "loss_weight")):
        imp.mapped(f"{key}.{k}", f"{concept}.{param}")
    if c["type"] != "VALIDATION":
        imp.mapped(f"{key}.type", f"{concept}.role")
    imp.not_needed(f"{key}.concept_stats", "statistics OneTrainer's UI computed; nodetrainer scans the folder")
    source = b.add(f"{p}_source", "data.concepts@1", {}, {"concepts": [f"{concept}.concept"]})
    caption = _caption(imp, i, p, concept, source)
    bucket = b.add(f"{p}_bucket", "data.aspect_bucket@1", {}, {"size": f"{source}.size"})
    _resolution(imp, i, bucket)
    fields = _image(imp, i, p, source, bucket, masks)
    return {"image": fields.pop("image"), "caption": caption, "bucket": f"{bucket}.bucket",
            "loss_weight": f"{source}.loss_weight", "role": f"{source}.role", "size": f"{source}.size", **fields}


def _resolution(imp, i: int, bucket: str) -> None:
    c, v, key = imp.v["concepts"][i]["image"], imp.v, f"concepts[{i}].image"
    override = bool(c["enable_resolution_override"])
    text, keys = (c["resolution_override"], (f"{key}.resolution_override", f"{key}.enable_resolution_override")) \
        if override else (v["resolution"], ("resolution",))
    imp.attempt(keys, lambda: _bucket(V.resolution(text, aspect_ratio_bucketing=bool(v["aspect_ratio_bucketing"]),
                                                   model_type=v["model_type"], key=keys[0])), bucket)
    imp.mapped("aspect_ratio_bucketing", f"{bucket}.aspects")
    if not override:
        imp.not_needed(f"{key}.resolution_override", "only read with enable_resolution_override")


def _bucket(m: Mapped) -> Mapped:
    return Mapped({name.rpartition(".")[2]: value for name, value in m.params.items()}, m.notes)


def _image(imp, i: int, p: str, source: str, bucket: str, masks: bool) -> dict[str, str]:
    c, key, b = imp.v["concepts"][i]["image"], f"concepts[{i}].image", imp.b
    image = b.add(f"{p}_load", "data.load_image@1", {}, {"path": f"{source}.path", "bucket": f"{bucket}.bucket"})
    image_ref = f"{image}.image"
    mask_ref = None
    if masks:
        mask = b.add(f"{p}_mask", "data.load_mask@1", {}, {"path": f"{source}.mask_path", "image": image_ref})
        mask_ref = f"{mask}.mask"
    crop = b.add(f"{p}_crop", "data.scale_crop@1", {"crop": "random" if c["enable_crop_jitter"] else "center"},
                 {"image": image_ref, "bucket": f"{bucket}.bucket", "mask": mask_ref})
    imp.mapped(f"{key}.enable_crop_jitter", f"{crop}.crop")
    image_ref, mask_ref = f"{crop}.image", f"{crop}.mask" if masks else None
    if c["enable_random_flip"] or c["enable_fixed_flip"]:
        flip = b.add(f"{p}_flip", "data.random_flip@1", {"probability": 0.5 if c["enable_random_flip"] else 1.0},
                     {"image": image_ref, "mask": mask_ref})
        image_ref, mask_ref = f"{flip}.image", f"{flip}.mask" if masks else None
        imp.mapped(f"{key}.enable_random_flip", f"{flip}.probability")
        if c["enable_random_flip"]:
            imp.not_needed(f"{key}.enable_fixed_flip", "the random flip wins, as in OneTrainer")
        else:
            imp.mapped(f"{key}.enable_fixed_flip", f"{flip}.probability")
    image_ref, mask_ref = _rotate(imp, i, p, image_ref, mask_ref)
    for stem, node_type, top in COLOURS:
        image_ref = _colour(imp, i, p, stem, node_type, top, image_ref)
    for k in ("enable_random_circular_mask_shrink", "enable_random_mask_rotate_crop"):
        if c[k]:
            imp.unsupported(f"{key}.{k}", "mask augmentations are not supported")
    tensor = b.add(f"{p}_tensor", "data.to_tensor@1", {}, {"image": image_ref, "mask": mask_ref})
    out = {"image": f"{tensor}.image", "crop_offset": f"{crop}.crop_offset"}
    if masks:
        out["mask"] = f"{tensor}.mask"
    return out


def _rotate(imp, i, p, image_ref, mask_ref):
    c, key = imp.v["concepts"][i]["image"], f"concepts[{i}].image"
    angle = float(c["random_rotate_max_angle"])
    if c["enable_random_rotate"]:
        if not 0 <= angle <= 180:
            imp.unsupported(f"{key}.random_rotate_max_angle", f"{angle} is outside data.random_rotate's 0..180")
            return image_ref, mask_ref
        rot = imp.b.add(f"{p}_rotate", "data.random_rotate@1", {"probability": 1.0, "max_angle": angle},
                        {"image": image_ref, "mask": mask_ref})
        imp.mapped(f"{key}.enable_random_rotate", f"{rot}.probability")
        imp.mapped(f"{key}.random_rotate_max_angle", f"{rot}.max_angle")
        imp.not_needed(f"{key}.enable_fixed_rotate", "the random rotation wins, as in OneTrainer")
        return f"{rot}.image", f"{rot}.mask" if mask_ref else None
    if c["enable_fixed_rotate"]:
        imp.unsupported(f"{key}.enable_fixed_rotate", "a fixed rotation by the max angle is not supported "
                                                      "(data.random_rotate draws the angle)")
    else:
        imp.not_needed(f"{key}.random_rotate_max_angle", "only read with a rotation on")
    return image_ref, mask_ref


def _colour(imp, i, p, stem, node_type, top, image_ref):
    c, key = imp.v["concepts"][i]["image"], f"concepts[{i}].image"
    strength = float(c[f"random_{stem}_max_strength"])
    if c[f"enable_random_{stem}"]:
        if not 0 <= strength <= top:
            imp.unsupported(f"{key}.random_{stem}_max_strength", f"{strength} is outside {node_type[:-2]}'s "
                                                                 f"strength 0..{top:g}")
            return image_ref
        node = imp.b.add(f"{p}_{stem}", node_type, {"probability": 1.0, "strength": strength}, {"image": image_ref})
        imp.mapped(f"{key}.enable_random_{stem}", f"{node}.probability")
        imp.mapped(f"{key}.random_{stem}_max_strength", f"{node}.strength")
        imp.not_needed(f"{key}.enable_fixed_{stem}", "the random change wins, as in OneTrainer")
        return f"{node}.image"
    if c[f"enable_fixed_{stem}"]:
        imp.unsupported(f"{key}.enable_fixed_{stem}", f"a fixed {stem} change is not supported "
                                                      f"({node_type[:-2]} draws its factor)")
    else:
        imp.not_needed(f"{key}.random_{stem}_max_strength", f"only read with random {stem} on")
    return image_ref


def _caption(imp, i: int, p: str, concept: str, source: str) -> str:
    t, key, b = imp.v["concepts"][i]["text"], f"concepts[{i}].text", imp.b
    where = str(t["prompt_source"])
    if where == "filename":
        b.set(concept, "caption", "filename")
        ref = f"{source}.caption"
        imp.mapped(f"{key}.prompt_source", f"{concept}.caption")
    else:
        if where != "sample":
            imp.unsupported(f"{key}.prompt_source", f"{where!r}: one prompt file for a whole concept is not "
                                                    "supported; the graph reads each image's .txt")
        # OneTrainer reads a .txt as prompts, one per line, and draws one per epoch
        text = b.add(f"{p}_text", "data.load_text@1", {"lines": "random"}, {"path": f"{source}.text_path"})
        ref = f"{text}.caption"
        imp.mapped(f"{key}.prompt_source", f"{text}.lines")
    if where != "concept":
        imp.not_needed(f"{key}.prompt_path", "only read with prompt_source 'concept'")
    delim, keep = str(t["tag_delimiter"]), int(t["keep_tags_count"])
    used = False
    if t["enable_tag_shuffling"]:
        node = b.add(f"{p}_shuffle", "data.shuffle_tags@1", {"delimiter": delim, "keep_first": keep}, {"caption": ref})
        ref, used = f"{node}.caption", True
        imp.mapped(f"{key}.enable_tag_shuffling", node)
    if t["tag_dropout_enable"]:
        mode = str(t["tag_dropout_mode"]).upper()
        if mode != "FULL":
            imp.unsupported(f"{key}.tag_dropout_mode", f"{mode}: data.drop_tags drops each tag with one "
                                                       "probability (OneTrainer's FULL)")
        else:
            imp.mapped(f"{key}.tag_dropout_mode", f"{p}_drop_tags (FULL)")
        special = str(t["tag_dropout_special_tags_mode"]).upper() != "NONE"
        for k in ("tag_dropout_special_tags_mode", "tag_dropout_special_tags", "tag_dropout_special_tags_regex"):
            if special:
                imp.unsupported(f"{key}.{k}", "white- and blacklists of tags kept from dropout are not supported")
            else:
                imp.not_needed(f"{key}.{k}", "only read with tag_dropout_special_tags_mode other than NONE")
        node = b.add(f"{p}_drop_tags", "data.drop_tags@1", {"delimiter": delim, "keep_first": keep,
                                                             "probability": float(t["tag_dropout_probability"])},
                     {"caption": ref})
        ref, used = f"{node}.caption", True
        imp.mapped(f"{key}.tag_dropout_enable", node)
        imp.mapped(f"{key}.tag_dropout_probability", f"{node}.probability")
    else:
        for k in ("tag_dropout_mode", "tag_dropout_probability", "tag_dropout_special_tags_mode",
                  "tag_dropout_special_tags", "tag_dropout_special_tags_regex"):
            imp.not_needed(f"{key}.{k}", "only read with tag_dropout_enable")
    for k, param in (("tag_delimiter", "delimiter"), ("keep_tags_count", "keep_first")):
        if used:
            imp.mapped(f"{key}.{k}", f"{p}_shuffle/_drop_tags.{param}")
        else:
            imp.not_needed(f"{key}.{k}", "only read with tag shuffling or dropout")
    for k in ("caps_randomize_enable", "caps_randomize_mode", "caps_randomize_probability", "caps_randomize_lowercase"):
        if t["caps_randomize_enable"]:
            imp.unsupported(f"{key}.{k}", "random capitalisation of tags is not supported")
        else:
            imp.not_needed(f"{key}.{k}", "only read with caps_randomize_enable")
    return ref


def _global_keys(imp) -> None:
    imp.not_needed("dataloader_threads", "data.batches loads in the training process (set its workers for "
                                         "DataLoader processes)")
    imp.not_needed("clear_cache_before_training", "the cache is keyed by the content of everything upstream: "
                                                  "nothing stale is ever read")
    imp.not_needed("concept_file_name", "the concepts are read into the graph")
    for i, c in enumerate(imp.v["concepts"]):
        imp.not_needed(f"concepts[{i}].seed", "augmentations draw from the run seed and the node id")
