"""Loading stages: image files to RGB images, mask files to masks, text files to captions."""

from __future__ import annotations

from runtime import Choice, Input, Output, Param, node
from runtime.data import PerSampleStage, SkipItem
from runtime.port_types import Caption, Image, ImagePath, Mask, TextPath


def parse_colour(text: str) -> tuple[int, int, int]:
    from PIL import ImageColor

    try:
        return ImageColor.getrgb(text)[:3]
    except ValueError:
        raise ValueError(f"not a colour: {text!r} (use a name like 'white' or '#rrggbb')") from None


def open_rgb(path: str, background: tuple[int, int, int]):
    """An RGB PIL image with EXIF orientation applied and transparency composited on ``background``."""
    from PIL import Image as PILImage, ImageOps

    img = PILImage.open(path)
    img.load()  # decode now, so a truncated file fails here and not in a later stage
    ImageOps.exif_transpose(img, in_place=True)
    if img.mode == "RGB":
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        out = PILImage.new("RGB", rgba.size, background)
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    return img.convert("RGB")


@node("data.load_image", title="Load image", category="Data")
class LoadImage(PerSampleStage):
    """Read an image file as RGB: EXIF orientation applied, transparency composited on a colour.

    A file that cannot be decoded is skipped (bad data), with a warning naming it.
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
        try:
            img = open_rgb(path, self._bg)
        except Exception as e:  # any decoder failure means the file is bad data
            raise SkipItem(f"unreadable image: {type(e).__name__}: {e}", path) from None
        return {"image": img}


@node("data.load_mask", title="Load mask", category="Data")
class LoadMask(PerSampleStage):
    """Read a mask file as a grayscale image the size of its image (white = train here).

    Items without a mask file get an all-white mask (or the 'default' value).
    """

    path = Input(ImagePath, doc="mask file, or None")
    image = Input(Image, doc="the image the mask belongs to (for its size)")
    mask = Output(Mask, doc="the mask (PIL, mode L)")
    default = Param(int, 255, min=0, max=255, doc="mask value where no mask file exists")
    random = False

    def process(self, item, path, image):
        from PIL import Image as PILImage, ImageOps

        size = image.size
        if path is None:
            return {"mask": PILImage.new("L", size, self.default)}
        try:
            m = PILImage.open(path)
            ImageOps.exif_transpose(m, in_place=True)
            m = m.convert("L")
        except Exception as e:
            raise SkipItem(f"unreadable mask: {type(e).__name__}: {e}", path) from None
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
