"""Loading stages: image files to RGB images, mask files to masks, text files to captions.

Pixel values map to 8-bit RGB by the rule in ``runtime.data.pixels``: 16-bit
grey is 0..65535, float 0..1 (or 0..255), transparency composites on a
background colour; an image without a safe mapping is skipped with a warning
naming the file, never trained on with wrong values.
"""

from __future__ import annotations

from runtime import Choice, Input, Output, Param, node
from runtime.data import PerSampleStage, SkipItem
from runtime.data.decode import bucket_size, open_image
from runtime.data.pixels import PixelError, to_grey, to_rgb
from runtime.port_types import Caption, Image, ImagePath, Mask, Resolution, TextPath

__all__ = ["LoadImage", "LoadMask", "LoadText", "PixelError", "open_rgb", "parse_colour", "to_grey", "to_rgb"]


def parse_colour(text: str) -> tuple[int, int, int]:
    from PIL import ImageColor

    try:
        return ImageColor.getrgb(text)[:3]
    except ValueError:
        raise ValueError(f"not a colour: {text!r} (use a name like 'white' or '#rrggbb')") from None


def open_rgb(path: str, background: tuple[int, int, int], bucket=None):
    """An RGB PIL image with EXIF orientation applied and transparency composited on ``background``
    (a large JPEG at a reduced scale when ``bucket`` is given: ``runtime.data.decode``);
    raises PixelError for pixels without a safe mapping (``runtime.data.pixels``)."""
    return to_rgb(open_image(path, bucket), background)


def load_or_skip(path: str, convert, what: str, bucket=None):
    """``convert(open_image(path, bucket))``, or SkipItem naming the file when it cannot be read or mapped."""
    try:
        img = open_image(path, bucket)
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

    With 'bucket' connected (Aspect bucketing's), a JPEG much larger than its
    bucket is decoded at 1/2, 1/4 or 1/8 scale (the JPEG's DCT scaling: less
    work), never below 1.6x the size that covers the bucket, so Scale & crop
    still downscales it with its filter. Other formats decode in full.
    """

    path = Input(ImagePath, doc="image file")
    bucket = Input(Resolution, optional=True,
                   doc="the item's bucket: decode large JPEGs at a reduced scale that still covers it")
    image = Output(Image, doc="the RGB image (PIL), smaller than the file when reduced for 'bucket'")
    background = Param(str, "white", doc="colour under transparent pixels (a name or #rrggbb)")
    random = False

    def setup(self, ctx, **values):
        try:
            self._bg = parse_colour(self.background)
        except ValueError as e:
            raise ValueError(f"param 'background': {e}") from None

    def process(self, item, path, bucket):
        if path is None:
            raise SkipItem("no image path")
        if bucket is not None:
            try:
                bucket = bucket_size(bucket)
            except ValueError as e:
                raise ValueError(f"input 'bucket': {e}") from None
        bg = self._bg
        return {"image": load_or_skip(path, lambda img: to_rgb(img, bg), "image", bucket)}


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
