"""Decoding image files, at a reduced JPEG DCT scale when the size they are resized to is known.

A JPEG can be decoded at 1/2, 1/4 or 1/8 of its size for a fraction of the
work (Pillow's ``Image.draft``: libjpeg scales in the DCT domain). When the
training size (an aspect bucket) is known, ``open_image`` picks the largest of
those scales that still leaves the image ``DRAFT_GAP`` times the size that
covers the bucket, so Scale & crop only ever downscales, by at least that
ratio, and its filter removes what the DCT scaling leaves behind. Other
formats, and JPEGs too small for any scale, decode in full as before.
Pillow is imported inside the functions.
"""

from __future__ import annotations

import math

#: smallest ratio between a draft-decoded image and the size that covers its bucket. Measured on
#: photo-like 2-6 MP JPEGs against a full decode + Lanczos resize (benchmarks/bench_data.py): a
#: bicubic resize after a draft decode is >= 38.5 dB from a 1.6x margin, 35-36 dB at 1.0-1.2x (the
#: DCT scaling's block artefacts survive a near 1:1 resize). Pillow's thumbnail uses 2.0.
#: Changing it changes decoded pixels: bump data.load_image's version so caches recompute.
DRAFT_GAP = 1.6
_ORIENTATION = 0x0112
_SWAPS = (5, 6, 7, 8)  # EXIF orientations that turn the stored image by 90 degrees


def bucket_size(bucket) -> tuple[int, int]:
    """``bucket`` as (width, height) of positive ints; ValueError otherwise."""
    try:
        w, h = (int(v) for v in bucket)
    except (TypeError, ValueError):
        raise ValueError(f"a bucket is a (width, height) pair, got {str(bucket)[:40]!r}") from None
    if w < 1 or h < 1:
        raise ValueError(f"bucket sides must be at least 1, got {w}x{h}")
    return w, h


def cover_size(size: tuple[int, int], bucket: tuple[int, int]) -> tuple[int, int]:
    """``size`` scaled, aspect kept, to just cover ``bucket`` (what Scale & crop resizes to), rounded up."""
    w, h = size
    scale = max(bucket[0] / w, bucket[1] / h)
    return math.ceil(w * scale - 1e-9), math.ceil(h * scale - 1e-9)


def draft_request(stored: tuple[int, int], turned: bool, bucket: tuple[int, int]) -> tuple[int, int] | None:
    """The size to pass to ``Image.draft`` for a JPEG stored at ``stored`` (shown turned by 90 degrees
    when ``turned``), or None when not even a 1/2 scale leaves ``DRAFT_GAP`` x the covering size."""
    upright = stored[::-1] if turned else stored
    cw, ch = cover_size(upright, bucket)
    need = (math.ceil(cw * DRAFT_GAP), math.ceil(ch * DRAFT_GAP))
    need = need[::-1] if turned else need
    if stored[0] // need[0] < 2 or stored[1] // need[1] < 2:
        return None
    return need


def _turned(img) -> bool:
    try:
        return img.getexif().get(_ORIENTATION, 1) in _SWAPS
    except Exception:  # a broken EXIF block: exif_transpose will not turn the image either
        return False


def open_image(path: str, bucket=None):
    """A decoded PIL image with its EXIF orientation applied. With ``bucket`` (width, height) a JPEG
    much larger than the bucket decodes at a reduced DCT scale (the module doc says how far)."""
    from PIL import Image as PILImage, ImageOps, JpegImagePlugin

    img = PILImage.open(path)
    if bucket is not None and isinstance(img, JpegImagePlugin.JpegImageFile):  # also MPO, a JPEG subclass
        request = draft_request(img.size, _turned(img), bucket_size(bucket))
        if request is not None:
            img.draft(None, request)  # None: keep the mode, so the pixel rules see what a full decode gives
    img.load()  # decode now, so a truncated file fails here and not in a later stage
    ImageOps.exif_transpose(img, in_place=True)
    return img
