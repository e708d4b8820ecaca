"""Pixels of any image mode Pillow opens as 8-bit RGB (the image stages' format) or grey, or an error.

The rule (``data.load_image``, ``data.load_mask``, ``data.to_tensor`` and the preview follow it):

- 8-bit modes (1, L, P, RGB, RGBX, CMYK, YCbCr, LAB, HSV) convert with Pillow;
  RGBA, LA, PA, RGBa and a transparent colour or palette entry are composited
  on a background colour;
- 16-bit grey (I;16, I;16B, I;16L, I;16N) is 0..65535;
- I (32-bit integer) is 0..65535 (16-bit PNGs, PGMs and TIFFs open in this
  mode), or 0..2**bits-1 when a TIFF declares fewer bits (signed: 2**(bits-1)-1);
- F (32-bit float) is 0..1 when every value lies in 0..1, else 0..255 when
  every value lies in 0..255.

Pixels outside that range (negative, too large, NaN) and any other mode have
no safe mapping: such an image is skipped with a warning naming the file,
never trained on with wrong values. Pillow is imported inside the functions.
"""

from __future__ import annotations

from .decode import open_image  # noqa: F401  (decoding lives there; kept importable from here)

#: modes Pillow converts to RGB with the right values
COLOUR_MODES = frozenset({"1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"})
#: modes with an alpha channel (composited on the background)
ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa"})
#: high-bit-depth grey modes, scaled by their range (module doc)
WIDE_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
_BITS_PER_SAMPLE, _SAMPLE_FORMAT, _SIGNED = 258, 339, 2


class PixelError(ValueError):
    """An image whose pixel values have no safe mapping to RGB (see the module doc)."""


def white_level(img, arr) -> float:
    """The value that is white in a high-bit-depth grey image ``img`` (pixels ``arr``); raises PixelError."""
    import numpy as np

    if img.mode.startswith("I;16"):
        return 65535.0
    if img.mode == "F":
        if not np.isfinite(arr).all():
            raise PixelError("float pixels that are NaN or infinite")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0 or hi > 255:
            raise PixelError(f"float pixels from {lo:g} to {hi:g}: only 0..1 or 0..255 are known ranges")
        return 1.0 if hi <= 1 else 255.0
    white = 65535
    tags = getattr(img, "tag_v2", None)
    if tags is not None:
        bits = tags.get(_BITS_PER_SAMPLE)
        bits = bits[0] if isinstance(bits, tuple) and bits else bits
        signed = tags.get(_SAMPLE_FORMAT) in (_SIGNED, (_SIGNED,))
        if isinstance(bits, int) and 0 < bits <= 16:
            white = 2 ** (bits - 1) - 1 if signed else 2 ** bits - 1
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi > white:
        raise PixelError(f"integer pixels from {lo} to {hi}, outside 0..{white}: their range is unknown")
    return float(white)


def wide_to_grey(img):
    """An 8-bit grey (L) image of a high-bit-depth one, and its transparency mask (L) or None."""
    import numpy as np
    from PIL import Image as PILImage

    arr = np.asarray(img)
    scale = np.float32(255.0 / white_level(img, arr))
    grey = PILImage.fromarray(np.rint(arr.astype(np.float32) * scale).clip(0, 255).astype(np.uint8))
    key = img.info.get("transparency")
    alpha = None
    if isinstance(key, int) and img.mode != "F":
        alpha = PILImage.fromarray(np.where(arr == key, 0, 255).astype(np.uint8))
    return grey, alpha


def _on_background(rgb, alpha, background):
    from PIL import Image as PILImage

    out = PILImage.new("RGB", rgb.size, background)
    out.paste(rgb, mask=alpha)
    return out


def to_rgb(img, background: tuple[int, int, int]):
    """``img`` as 8-bit RGB with transparency composited on ``background``; raises PixelError."""
    mode = img.mode
    if mode in WIDE_MODES:
        grey, alpha = wide_to_grey(img)
        return _on_background(grey.convert("RGB"), alpha, background) if alpha else grey.convert("RGB")
    if mode not in COLOUR_MODES and mode not in ALPHA_MODES:
        raise PixelError(f"image mode {mode!r} has no known mapping to RGB")
    if mode in ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        return _on_background(rgba.convert("RGB"), rgba.getchannel("A"), background)
    return img if mode == "RGB" else img.convert("RGB")


def to_grey(img):
    """``img`` as an 8-bit mask (mode L): grey values scaled like ``to_rgb``; raises PixelError."""
    if img.mode in WIDE_MODES:
        return wide_to_grey(img)[0]
    if img.mode not in COLOUR_MODES and img.mode not in ALPHA_MODES:
        raise PixelError(f"image mode {img.mode!r} has no known mapping to grey")
    return img if img.mode == "L" else img.convert("L")
