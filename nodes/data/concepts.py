"""Concepts (scanned image folders) and the source stage that merges them into one item stream."""

from __future__ import annotations

import bisect
import hashlib
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from runtime import Choice, Dir, Input, Output, Param, StrList, Text, node
from runtime.data import SkipItem, Skipped, SourceStage
from runtime.data.item import mix_seed, stable_id
from runtime.events import safe_text
from runtime.port_types import Caption, Concept, ImagePath, Resolution, Role, Scalar, TextPath

IMAGE_EXTENSIONS = ["png", "jpg", "jpeg", "webp", "bmp"]
MASK_SUFFIX = "-masklabel"
IGNORED_SUFFIXES = (MASK_SUFFIX, "-condlabel")
_ORIENTATION = 0x0112
#: what a concept's items are for (OneTrainer's concept type): the objective reads them from batch["role"]
ROLES = ("standard", "prior", "prior_prediction")
#: most items one epoch may hold (the batch plan keeps a list of them): a bound on 'balancing'
MAX_ITEMS = 10_000_000


@dataclass(frozen=True)
class ImageRecord:
    """One image of a concept, as found by the scan."""

    path: str
    size: tuple[int, int]  # (width, height) after EXIF orientation
    stat: str  # "mtime_ns:bytes" of the image
    caption_path: str | None = None
    caption_stat: str = ""
    mask_path: str | None = None
    mask_stat: str = ""


@dataclass
class ConceptData:
    """A scanned concept: the ``Concept`` value that ``data.concept`` outputs."""

    name: str
    folder: str
    caption: str  # sidecar | filename | fixed
    text: str
    missing_caption: str
    balancing: float
    balancing_strategy: str
    loss_weight: float
    records: list[ImageRecord] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    #: one of ROLES; not part of the fingerprint (it changes no image or caption), but of the role field's identity
    role: str = "standard"

    @property
    def count(self) -> int:
        """Items this concept contributes to each epoch."""
        n = len(self.records)
        if n == 0 or self.balancing <= 0:
            return 0
        if self.balancing_strategy == "samples":
            return int(self.balancing)
        return max(1, round(n * self.balancing))

    def as_fields(self) -> dict:
        """This concept alone as a source (path, caption, size, mask_path), for the preview."""
        from runtime.data.engine import Field, SourceEngine

        node = ConceptsSource()
        stage = SourceEngine(node, self.name or "concept", "data.concepts", 1, {}, {"concepts": [self]},
                             outputs=("path", "caption", "size", "mask_path", "role"))
        stage.length_value = node.open(None, [self])
        return {name: Field(stage, name, t) for name, t in
                (("path", "ImagePath"), ("caption", "Caption"), ("size", "Resolution"), ("mask_path", "ImagePath"),
                 ("role", "Role"))}

    @property
    def fingerprint(self) -> str:
        """The settings that define items (not the file list: files key per item)."""
        text = "|".join(map(repr, (self.name, self.folder, self.caption, self.text, self.missing_caption,
                                   self.balancing, self.balancing_strategy, self.loss_weight)))
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _stat(path: str) -> str:
    st = os.stat(path)
    return f"{st.st_mtime_ns}:{st.st_size}"


def image_size(path: str) -> tuple[int, int]:
    """(width, height) from the file header, with EXIF orientation applied; raises for unreadable files."""
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
        raw = im.info.get("exif")
        if raw:
            exif = Image.Exif()
            exif.load(raw)
            if exif.get(_ORIENTATION, 1) in (5, 6, 7, 8):
                w, h = h, w
    if w <= 0 or h <= 0:
        raise ValueError(f"empty image ({w}x{h})")
    return w, h


def list_images(folder: str, recursive: bool, extensions: list[str]) -> list[str]:
    wanted = {e.lower().lstrip(".") for e in extensions}
    root = Path(folder)
    found = []
    for p in (root.rglob("*") if recursive else root.glob("*")):
        if p.suffix.lower().lstrip(".") in wanted and not p.stem.endswith(IGNORED_SUFFIXES) and p.is_file():
            found.append(str(p))
    found.sort()
    return found


@node("data.concept", title="Concept", category="Data")
class ConceptNode:
    """A folder of training images with its captions, balancing and loss weight.

    The scan reads each image's header (size, EXIF orientation): files that are
    not readable images, and images without a caption when captions come from
    sidecar files, and files whose names are not valid UTF-8, are skipped with
    a warning naming the file. A concept with no readable image is an error
    naming its folder. Connect one or more concepts to a Concepts source.
    """

    concept = Output(Concept, doc="the scanned concept")
    folder = Param(Dir(), doc="folder of images")
    name = Param(str, "", doc="label in messages (default: the folder name)")
    recursive = Param(bool, False, doc="also scan sub-folders")
    extensions = Param(StrList, IMAGE_EXTENSIONS, doc="image file extensions to include (without the dot)")
    caption = Param(Choice("sidecar", "filename", "fixed"), "sidecar",
                    doc="caption source: a .txt file beside each image, the file name, or the fixed text")
    text = Param(Text, "", doc="the caption when caption is 'fixed' or missing_caption is 'fixed'")
    missing_caption = Param(Choice("skip", "filename", "fixed", "empty"), "skip",
                            doc="when a sidecar .txt is missing: skip the image, or use the file name, "
                                "the fixed text or an empty caption")
    balancing = Param(float, 1.0, min=0, max=MAX_ITEMS,
                      doc="repeats per epoch (fractions allowed), or a number of samples")
    balancing_strategy = Param(Choice("repeats", "samples"), "repeats",
                               doc="'repeats': items = images x balancing; 'samples': items = balancing")
    loss_weight = Param(float, 1.0, min=0, max=1000, doc="loss weight of this concept's items")
    role = Param(Choice(*ROLES), "standard",
                 doc="'standard': trained as usual; 'prior': regularisation images, their loss also weighted by "
                     "the objective's prior_loss_weight; 'prior_prediction': trained towards the base model's "
                     "own prediction (adapters off), OneTrainer's PRIOR_PREDICTION")
    masks = Param(bool, False, doc="use '<name>-masklabel.png' beside an image as its mask")

    def run(self, ctx):
        name = self.name or Path(self.folder).name
        files = list_images(self.folder, self.recursive, self.extensions)
        data = ConceptData(name, self.folder, self.caption, self.text, self.missing_caption, self.balancing,
                           self.balancing_strategy, self.loss_weight, role=self.role)
        where = f"{self.folder}{' or its sub-folders' if self.recursive else ''}"
        if not files:
            raise ValueError(f"concept {name!r}: no images with extensions "
                             f"{', '.join(self.extensions)} in {where}")
        for i, path in enumerate(files):
            if i % 256 == 0:
                ctx.check_cancelled()
            shown = safe_text(path)
            # names with undecodable bytes would break captions, cache keys and messages downstream
            rec, reason = self._scan(path) if shown == path else (None, "file name is not valid UTF-8")
            if rec is None:
                data.skipped.append(Skipped(None, shown, reason, ctx.node_id))
                ctx.warn(f"concept {name!r}: skipped {shown}: {reason}", path=shown)
            else:
                data.records.append(rec)
        if not data.records:
            raise ValueError(f"concept {name!r}: no readable images in {where} ({len(files)} file(s) skipped; "
                             f"first: {data.skipped[0]})")
        if data.count > MAX_ITEMS:
            raise ValueError(f"param 'balancing': {len(data.records)} image(s) with balancing {self.balancing:g} "
                             f"({self.balancing_strategy}) make {data.count} items per epoch, more than {MAX_ITEMS}")
        ctx.log(f"concept {name!r}: {len(data.records)} image(s), {data.count} item(s) per epoch"
                + (f", {len(data.skipped)} skipped" if data.skipped else ""), images=len(data.records),
                skipped=len(data.skipped))
        return {"concept": data}

    def _scan(self, path: str) -> tuple[ImageRecord | None, str]:
        try:
            size = image_size(path)
            stat = _stat(path)
        except Exception as e:  # any failure to parse the header makes the file unusable
            return None, f"unreadable image: {type(e).__name__}: {e}"
        cap_path, cap_stat = None, ""
        if self.caption == "sidecar":
            candidate = os.path.splitext(path)[0] + ".txt"
            if os.path.isfile(candidate):
                cap_path, cap_stat = candidate, _stat(candidate)
            elif self.missing_caption == "skip":
                return None, f"no caption: {os.path.basename(candidate)} not found"
        mask_path, mask_stat = None, ""
        if self.masks:
            candidate = os.path.splitext(path)[0] + MASK_SUFFIX + ".png"
            if os.path.isfile(candidate):
                mask_path, mask_stat = candidate, _stat(candidate)
        return ImageRecord(path, size, stat, cap_path, cap_stat, mask_path, mask_stat), ""


class _ItemView:
    """Item outputs of the concepts source, computed on access."""

    __slots__ = ("concept", "cindex", "rec")

    def __init__(self, concept: ConceptData, cindex: int, rec: ImageRecord):
        self.concept = concept
        self.cindex = cindex
        self.rec = rec

    def __getitem__(self, port: str):
        rec = self.rec
        if port == "path":
            return rec.path
        if port == "size":
            return rec.size
        if port == "caption":
            return caption_of(self.concept, rec)
        if port == "text_path":
            return rec.caption_path
        if port == "mask_path":
            return rec.mask_path
        if port == "loss_weight":
            return self.concept.loss_weight
        if port == "concept":
            return self.cindex
        if port == "role":
            return self.concept.role
        raise KeyError(port)


def caption_of(concept: ConceptData, rec: ImageRecord) -> str:
    mode = concept.caption
    if mode == "sidecar" and rec.caption_path is None:
        mode = concept.missing_caption
    if mode == "sidecar":
        try:
            with open(rec.caption_path, encoding="utf-8") as f:
                return f.read().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise SkipItem(f"no caption: cannot read {rec.caption_path}: {e}", rec.path) from None
    if mode == "filename":
        return Path(rec.path).stem
    if mode == "fixed":
        return concept.text
    return ""


@node("data.concepts", title="Concepts", category="Data")
class ConceptsSource(SourceStage):
    """Merge concepts into one stream of items: the source of the data graph.

    Each concept contributes its items (images x repeats, or a number of
    samples) in order; whole repeats are stable across epochs, a fractional
    remainder is a fresh random subset each epoch. Concepts of one source share
    every stage after it: for per-concept settings (augmentations, captions,
    resolution) give each concept its own source and stages, and join the
    branches with Merge branches (data.merge).
    """

    concepts = Input(Concept, multi=True, doc="one or more concepts")
    path = Output(ImagePath, doc="image file path")
    caption = Output(Caption, doc="caption (from the concept's caption setting)")
    size = Output(Resolution, doc="original (width, height), read at scan time")
    mask_path = Output(ImagePath, doc="mask file path, or None when the image has none")
    text_path = Output(TextPath, doc="caption sidecar path, or None")
    loss_weight = Output(Scalar, doc="the concept's loss weight")
    concept = Output(Scalar, doc="index of the item's concept in the 'concepts' input")
    role = Output(Role, doc="the concept's role ('standard', 'prior', 'prior_prediction'); data.batches collates "
                  "it into a list of strings")

    def open(self, ctx, concepts):
        if not concepts:
            raise ValueError("no concepts connected")
        self._concepts = list(concepts)
        self._node_seed = stable_id(ctx.node_id) if ctx is not None else 0
        self._offsets = [0]
        for c in self._concepts:
            self._offsets.append(self._offsets[-1] + c.count)
        self._tails: dict = {}
        total = self._offsets[-1]
        if total == 0:
            raise ValueError("no items: every concept has balancing 0")
        if total > MAX_ITEMS:
            raise ValueError(f"input 'concepts': {total} items per epoch, more than {MAX_ITEMS}; lower the "
                             f"concepts' balancing")
        return total

    def _locate(self, epoch: int, index: int, seed: int) -> tuple[int, ImageRecord]:
        c = bisect.bisect_right(self._offsets, index) - 1
        concept = self._concepts[c]
        j = index - self._offsets[c]
        n = len(concept.records)
        full = concept.count // n
        if j < full * n:
            return c, concept.records[j % n]
        key = (seed, epoch, c)
        perm = self._tails.get(key)
        if perm is None:
            perm = list(range(n))
            random.Random(mix_seed(seed, self._node_seed, c, epoch, 0x7A11)).shuffle(perm)
            if len(self._tails) > 64:
                self._tails.clear()
            self._tails[key] = perm
        return c, concept.records[perm[j - full * n]]

    def fetch(self, epoch, index, seed):
        c, rec = self._locate(epoch, index, seed)
        return _ItemView(self._concepts[c], c, rec)

    def identity(self, port, epoch, index, seed):
        c, rec = self._locate(epoch, index, seed)
        if port in ("path", "size"):
            return f"{rec.path}|{rec.stat}"
        if port in ("caption", "text_path"):
            concept = self._concepts[c]
            if concept.caption == "sidecar" and rec.caption_path:
                return f"{rec.caption_path}|{rec.caption_stat}"
            return f"{rec.path}|{concept.caption}|{concept.missing_caption}"
        if port == "mask_path":
            return f"{rec.mask_path}|{rec.mask_stat}"
        if port == "role":
            return f"c{c}|{self._concepts[c].role}"
        return f"c{c}"

    def describe(self, epoch, index, seed):
        return self._locate(epoch, index, seed)[1].path

    def content_key(self):
        return ",".join(c.fingerprint for c in self._concepts)

    def scan_skipped(self):
        return [s for c in self._concepts for s in c.skipped]
