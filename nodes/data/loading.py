"""Loading stages: image files to RGB images, mask files to masks, text files to captions.

How pixel values map to 8-bit RGB (the image stages work on 8-bit RGB):

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
never trained on with wrong values.
"""

from __future__ import annotations

from runtime import Choice, Input, Output, Param, node
from runtime.data import PerSampleStage, SkipItem
from runtime.port_types import Caption, Image, ImagePath, Mask, TextPath

#: modes Pillow converts to RGB with the right values
COLOUR_MODES = frozenset({"1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"})
#: modes with an alpha channel (composited on the background)
ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa"})
#: high-bit-depth grey modes, scaled by their range (module doc)
WIDE_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
_BITS_PER_SAMPLE, _SAMPLE_FORMAT, _SIGNED = 258, 339, 2


class PixelError(ValueError):
    """An image whose pixel values have no safe mapping to RGB (see the module doc)."""


def parse_colour(text: str) -> tuple[int, int, int]:
    from PIL import ImageColor

    try:
        return ImageColor.getrgb(text)[:3]
    except ValueError:
        raise ValueError(f"not a colour: {text!r} (use a name like 'white' or '#rrggbb')") from None


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


def open_image(path: str):
    """A decoded PIL image with its EXIF orientation applied."""
    from PIL import Image as PILImage, ImageOps

    img = PILImage.open(path)
    img.load()  # decode now, so a truncated file fails here and not in a later stage
    ImageOps.exif_transpose(img, in_place=True)
    return img


def open_rgb(path: str, background: tuple[int, int, int]):
    """An RGB PIL image with EXIF orientation applied and transparency composited on ``background``;
    raises PixelError for pixels without a safe mapping (module doc)."""
    return to_rgb(open_image(path), background)


def load_or_skip(path: str, convert, what: str):
    """``convert(open_image(path))``, or SkipItem naming the file when it cannot be read or mapped."""
    try:
        img = open_image(path)
    except Exception as e:  # any decoder failure means the file is bad data
        raise SkipItem(f"unreadable {what}: {type(e).__name__}: {e}", path) from None
    try:
        return convert(img)
    except PixelError as e:
        raise SkipItem(f"unsupported pixels: {e} (mode {img.mode})", path) from None


@node("data.load_image", title="Load image", category="Data")
class LoadImage(PerSampleStage):
    """Read an image file as 8-bit RGB: EXIF orientation applied, transparency composited on a colour.

    16-bit and float images are scaled by their range (16-bit: 0..65535; float:
    0..1, or 0..255 when values exceed 1). A file that cannot be decoded, or
    whose pixels have no safe mapping to RGB (negative or out-of-range values,
    an unknown mode), is skipped with a warning naming it.
    """

    path = Input(ImagePath, doc="image file")
    image = Output(Image, doc="the RGB image (PIL)")
    background = Param(str, "white", doc="colour under transparent pixels (a name or #rrggbb)")
    random = False

    def setup(self, ctx, **values):
        try:
            self._bg = parse_colour(self.background)
        except ValueError as e:
            raise ValueError(f"param 'background': {e}") from None

    def process(self, item, path):
        if path is None:
            raise SkipItem("no image path")
        bg = self._bg
        return {"image": load_or_skip(path, lambda img: to_rgb(img, bg), "image")}


@node("data.load_mask", title="Load mask", category="Data")
class LoadMask(PerSampleStage):
    """Read a mask file as a grayscale image the size of its image (white = train here).

    Items without a mask file get an all-white mask (or the 'default' value).
    16-bit and float masks are scaled like Load image scales images; a mask
    whose values cannot be mapped skips its item with a warning.
    """

    path = Input(ImagePath, doc="mask file, or None")
    image = Input(Image, doc="the image the mask belongs to (for its size)")
    mask = Output(Mask, doc="the mask (PIL, mode L)")
    default = Param(int, 255, min=0, max=255, doc="mask value where no mask file exists")
    random = False

    def process(self, item, path, image):
        from PIL import Image as PILImage

        size = image.size
        if path is None:
            return {"mask": PILImage.new("L", size, self.default)}
        m = load_or_skip(path, to_grey, "mask")
        if m.size != size:
            m = m.resize(size, PILImage.Resampling.BILINEAR)
        return {"mask": m}


@node("data.load_text", title="Load text", category="Data")
class LoadText(PerSampleStage):
    """Read a caption from a text file: all of it, its first line, or a random line per epoch."""

    path = Input(TextPath, doc="text file")
    caption = Output(Caption, doc="the text, stripped")
    lines = Param(Choice("all", "first", "random"), "all", doc="which part of the file to use")

    @property
    def random(self):
        return self.lines == "random"

    def process(self, item, path):
        if path is None:
            raise SkipItem("no caption: no text file")
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise SkipItem(f"no caption: cannot read {path}: {e}") from None
        if self.lines != "all":
            rows = [r.strip() for r in text.splitlines() if r.strip()]
            text = (rows[0] if self.lines == "first" else item.rng.choice(rows)) if rows else ""
        return {"caption": text.strip()}
