"""Aspect-ratio bucketing and scale-and-crop to the bucket."""

from __future__ import annotations

import math
import re

from runtime import Choice, Input, Output, Param, StrList, node
from runtime.data import AggregateStage, PerSampleStage, passthrough
from runtime.data.item import mix_seed
from runtime.port_types import Image, Mask, Offset, Resolution

from .concepts import MAX_ITEMS

DEFAULT_ASPECTS = ["1:1", "5:4", "4:3", "3:2", "16:9", "2:1", "3:1", "4:1"]
RESAMPLE = ("lanczos", "bicubic", "bilinear", "box", "nearest")
#: widest aspect ratio (and its inverse, the tallest) a bucket may have
MAX_ASPECT = 16
MAX_ASPECTS = 256
MAX_RESOLUTIONS = 64
MIN_RESOLUTION, MAX_RESOLUTION = 8, 8192
_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_ASPECT = re.compile(rf"\s*{_NUMBER}\s*(?::\s*{_NUMBER}\s*)?", re.ASCII)


def parse_aspect(text: str) -> float:
    """'4:3' or '1.5' -> width / height, from 1:MAX_ASPECT to MAX_ASPECT:1; plain decimals only."""
    m = _ASPECT.fullmatch(text)
    if m is None:
        raise ValueError(f"not an aspect ratio: {text[:40]!r} (use 'W:H' or a number, like '4:3' or '1.5')")
    w, h = float(m[1]), float(m[2]) if m[2] is not None else 1.0
    if not (w > 0 and h > 0):
        raise ValueError(f"not an aspect ratio: {text[:40]!r}: both sides must be above 0")
    value = w / h
    if not 1 / MAX_ASPECT <= value <= MAX_ASPECT:  # also refuses inf and nan from huge digit strings
        raise ValueError(f"aspect ratio {text[:40]!r} is outside 1:{MAX_ASPECT} .. {MAX_ASPECT}:1")
    return value


def parse_aspects(texts: list[str]) -> list[float]:
    """Every ratio of a list (see ``parse_aspect``); ValueError names the first bad one."""
    if not texts:
        raise ValueError("give at least one aspect ratio")
    if len(texts) > MAX_ASPECTS:
        raise ValueError(f"{len(texts)} aspect ratios; at most {MAX_ASPECTS}")
    return [parse_aspect(a) for a in texts]


def parse_resolutions(texts: list[str]) -> list[int]:
    """Resolutions from a list whose entries may hold several, comma-separated ('512,768,1024', as
    OneTrainer writes them); ValueError names the first bad one."""
    out: list[int] = []
    for text in texts:
        for part in str(text).split(","):
            part = part.strip()
            if not part.isdigit() or not part.isascii():
                raise ValueError(f"not a resolution: {part[:40]!r} (use whole numbers, like 512 or '512,768,1024')")
            value = int(part) if len(part) <= 5 else MAX_RESOLUTION + 1
            if not MIN_RESOLUTION <= value <= MAX_RESOLUTION:
                raise ValueError(f"resolution {part[:40]} is outside {MIN_RESOLUTION}..{MAX_RESOLUTION}")
            if value not in out:
                out.append(value)
            if len(out) > MAX_RESOLUTIONS:
                raise ValueError(f"more than {MAX_RESOLUTIONS} resolutions")
    return out


def bucket_list(resolution: int, quantization: int, aspects: list[float]) -> list[tuple[int, int]]:
    """Buckets of about ``resolution``² pixels for each aspect and its inverse, sides multiples of ``quantization``."""
    area = resolution * resolution
    out: list[tuple[int, int]] = []
    for a in aspects:
        for ratio in (a, 1 / a):
            w = math.sqrt(area * ratio)
            h = area / w
            size = (max(quantization, round(w / quantization) * quantization),
                    max(quantization, round(h / quantization) * quantization))
            if size not in out:
                out.append(size)
    return sorted(out, key=lambda s: s[0] / s[1])


def nearest_bucket(size: tuple[int, int], buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is closest (in log space) to ``size``'s."""
    la = math.log(size[0] / size[1])
    return min(buckets, key=lambda b: abs(math.log(b[0] / b[1]) - la))


@node("data.aspect_bucket", title="Aspect bucketing", category="Data")
class AspectBucket(AggregateStage):
    """Assign each item the bucket (a training size) closest to its aspect ratio.

    Buckets have about resolution² pixels, one per aspect ratio in 'aspects'
    and its inverse, with sides rounded to multiples of 'quantization'. Buckets
    holding fewer than 'min_items' items are merged into the nearest bucket
    that has enough. Connect 'bucket' to Scale & crop and to the batches node.

    With several 'resolutions' (OneTrainer's '512,768,1024'), each item draws
    one of them per epoch (seeded by the run seed, this node, the epoch and
    the item), then gets its aspect's bucket at that resolution; a batch still
    holds one size. Behind a cache, connect the batches node's 'bucket' to the
    cache's copy of it (the cache keeps one draw per variation).
    """

    size = Input(Resolution, doc="original (width, height) of each item")
    bucket = Output(Resolution, doc="the item's bucket (width, height)")
    resolution = Param(int, 512, min=MIN_RESOLUTION, max=MAX_RESOLUTION,
                       doc="side of the square bucket; others keep its area")
    resolutions = Param(StrList, [], doc="several resolutions to draw from per item and epoch (e.g. 512, 768, "
                        "1024, or '512,768,1024'); replaces 'resolution' when set")
    quantization = Param(int, 64, min=1, max=1024,
                         doc="bucket sides are multiples of this (8 for SD 1.x latents); at most the resolution")
    aspects = Param(StrList, DEFAULT_ASPECTS,
                    doc=f"aspect ratios W:H (or a number), from 1:{MAX_ASPECT} to {MAX_ASPECT}:1; each is also "
                        f"used rotated")
    min_items = Param(int, 1, min=1, max=MAX_ITEMS, doc="merge buckets with fewer items into the nearest larger one")

    @property
    def per_epoch(self) -> bool:
        """Several resolutions: a fresh draw every epoch."""
        return len(self._targets()) > 1

    @property
    def random(self) -> bool:
        return len(self._targets()) > 1

    def _targets(self) -> list[int]:
        try:
            return parse_resolutions(self.resolutions) or [self.resolution]
        except ValueError:
            return [self.resolution]

    def check(self, c):
        for param, why in self._problems():
            c.error(why, param=param)

    def _problems(self) -> list[tuple[str, str]]:
        out = []
        try:
            parse_aspects(self.aspects)
        except ValueError as e:
            out.append(("aspects", str(e)))
        try:
            targets = parse_resolutions(self.resolutions)
        except ValueError as e:
            out.append(("resolutions", str(e)))
            targets = []
        param = "resolutions" if targets else "resolution"
        smallest = min(targets or [self.resolution])
        if self.quantization > smallest:
            out.append(("quantization", f"{self.quantization} is more than {param} {smallest}"))
        return out

    def setup(self, ctx, **values):
        problems = self._problems()
        if problems:
            raise ValueError("; ".join(f"param {p!r}: {why}" for p, why in problems))
        aspects = parse_aspects(self.aspects)
        self._sets = [bucket_list(r, self.quantization, aspects) for r in self._targets()]
        self._buckets = self._sets[0]

    def aggregate(self, item, size):
        sets = self._sets
        if len(sets) == 1:
            column = [nearest_bucket(s, sets[0]) if s is not None else None for s in size]
            return {"bucket": merge_small(column, self.min_items) if self.min_items > 1 else column}
        # item.seed is this node's for (run seed, epoch); mixed with the index, each item's draw is its own
        drawn = [mix_seed(item.seed, i) % len(sets) for i in range(len(size))]
        column = [nearest_bucket(s, sets[k]) if s is not None else None for s, k in zip(size, drawn)]
        if self.min_items > 1:  # within each resolution, so a small bucket never moves to another size
            for k in range(len(sets)):
                rows = [i for i, d in enumerate(drawn) if d == k]
                for i, b in zip(rows, merge_small([column[i] for i in rows], self.min_items)):
                    column[i] = b
        return {"bucket": column}


def merge_small(column: list, min_items: int) -> list:
    """Move items of buckets with fewer than ``min_items`` to the nearest bucket that has enough."""
    counts: dict = {}
    for b in column:
        if b is not None:
            counts[b] = counts.get(b, 0) + 1
    big = [b for b, n in counts.items() if n >= min_items]
    if not big:
        big = [max(counts, key=counts.get)] if counts else []
    target = {}
    for b in counts:
        if b not in big:
            target[b] = nearest_bucket(b, big)
    return [target.get(b, b) if b is not None else None for b in column]


def crop_box(size: tuple[int, int], bucket: tuple[int, int], crop: str, jitter: float, rng) -> tuple:
    """Scale so the image covers the bucket, then place the crop: returns the source box and the
    crop's offset in the scaled image."""
    w, h = size
    bw, bh = bucket
    scale = max(bw / w, bh / h)
    slack_x, slack_y = w * scale - bw, h * scale - bh
    if crop == "random":
        ox, oy = rng.uniform(0, slack_x), rng.uniform(0, slack_y)
    else:
        ox, oy = slack_x / 2, slack_y / 2
        if jitter > 0:
            ox += rng.uniform(-jitter, jitter) * slack_x / 2
            oy += rng.uniform(-jitter, jitter) * slack_y / 2
    ox, oy = round(ox), round(oy)
    box = (ox / scale, oy / scale, (ox + bw) / scale, (oy + bh) / scale)
    return box, (ox, oy)


@passthrough("image", "mask")
@node("data.scale_crop", title="Scale & crop", category="Data")
class ScaleCrop(PerSampleStage):
    """Scale an image (and its mask) to cover its bucket, then crop to the bucket size.

    The crop is centred, or placed at random; 'jitter' moves a centred crop by
    up to that fraction of the spare margin. 'crop_offset' is the crop's
    top-left corner in the scaled image (SDXL's crop conditioning).
    """

    image = Input(Image, doc="image (PIL)")
    bucket = Input(Resolution, doc="target (width, height)")
    mask = Input(Mask, optional=True, doc="mask cropped like the image")
    crop_offset = Output(Offset, doc="(x, y) of the crop in the scaled image")
    crop = Param(Choice("center", "random"), "center", doc="where the crop goes")
    jitter = Param(float, 0.0, min=0, max=1, doc="random shift of a centred crop, as a fraction of the margin")
    resample = Param(Choice(*RESAMPLE), "bicubic", doc="resampling filter for the image")

    @property
    def random(self):
        return self.crop == "random" or self.jitter > 0

    def process(self, item, image, bucket, mask):
        from PIL import Image as PILImage

        if not isinstance(image, PILImage.Image):
            raise TypeError(f"expects a PIL image (place it before To tensor), got {type(image).__name__}")
        bucket = (int(bucket[0]), int(bucket[1]))
        box, offset = crop_box(image.size, bucket, self.crop, self.jitter, item.rng if self.random else None)
        filt = PILImage.Resampling[self.resample.upper()]
        out = image.resize(bucket, filt, box=box)
        if mask is not None:
            if mask.size != image.size:
                mask = mask.resize(image.size, PILImage.Resampling.BILINEAR)
            mask = mask.resize(bucket, PILImage.Resampling.BILINEAR, box=box)
        return {"image": out, "mask": mask, "crop_offset": offset}
