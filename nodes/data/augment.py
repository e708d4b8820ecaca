"""Random image augmentations. Each draws from the item's generator, so an epoch gets fresh choices."""

from __future__ import annotations

from runtime import Input, Param, node
from runtime.data import PerSampleStage, passthrough
from runtime.port_types import Image, Mask


def _is_pil(x) -> bool:
    return type(x).__module__.startswith("PIL.")


def _need_pil(image, what: str):
    if not _is_pil(image):
        raise TypeError(f"{what} works on PIL images (place it before To tensor), got {type(image).__name__}")


@passthrough("image", "mask")
@node("data.random_flip", title="Random flip", category="Data")
class RandomFlip(PerSampleStage):
    """Mirror the image (and mask) left-right with a probability. Works before or after To tensor."""

    image = Input(Image, doc="image (PIL or CHW tensor)")
    mask = Input(Mask, optional=True, doc="mask flipped with the image")
    probability = Param(float, 0.5, min=0, max=1, doc="chance of flipping")

    def process(self, item, image, mask):
        if item.rng.random() < self.probability:
            image = _flip(image)
            mask = _flip(mask) if mask is not None else None
        return {"image": image, "mask": mask}


def _flip(x):
    if _is_pil(x):
        from PIL import Image as PILImage

        return x.transpose(PILImage.Transpose.FLIP_LEFT_RIGHT)
    return x.flip(-1)


@passthrough("image", "mask")
@node("data.random_rotate", title="Random rotate", category="Data")
class RandomRotate(PerSampleStage):
    """Rotate the image (and mask) by a random angle up to 'max_angle' degrees, keeping its size.
    Corners outside the source become 'fill' in the image and 0 in the mask."""

    image = Input(Image, doc="image (PIL)")
    mask = Input(Mask, optional=True, doc="mask rotated with the image")
    probability = Param(float, 0.5, min=0, max=1, doc="chance of rotating")
    max_angle = Param(float, 10.0, min=0, max=180, doc="largest rotation in degrees, either way")
    fill = Param(str, "black", doc="colour of uncovered corners")

    def setup(self, ctx, **values):
        from .loading import parse_colour

        try:
            self._fill = parse_colour(self.fill)
        except ValueError as e:
            raise ValueError(f"param 'fill': {e}") from None

    def process(self, item, image, mask):
        rng = item.rng
        if rng.random() < self.probability:
            _need_pil(image, "Random rotate")
            from PIL import Image as PILImage

            angle = rng.uniform(-self.max_angle, self.max_angle)
            image = image.rotate(angle, PILImage.Resampling.BICUBIC, fillcolor=self._fill)
            if mask is not None:
                mask = mask.rotate(angle, PILImage.Resampling.BILINEAR, fillcolor=0)
        return {"image": image, "mask": mask}


class _Enhance(PerSampleStage):
    """Scale one property of the image by 1 + u, u uniform in [-strength, strength]."""

    image = Input(Image, doc="image (PIL)")
    probability = Param(float, 0.5, min=0, max=1, doc="chance of applying")
    strength = Param(float, 0.2, min=0, max=1, doc="largest relative change")
    enhancer = ""

    def process(self, item, image):
        rng = item.rng
        if rng.random() < self.probability:
            _need_pil(image, self.__node_spec__.title)
            from PIL import ImageEnhance

            factor = 1.0 + rng.uniform(-self.strength, self.strength)
            image = getattr(ImageEnhance, self.enhancer)(image).enhance(factor)
        return {"image": image}


@passthrough("image")
@node("data.random_brightness", title="Random brightness", category="Data")
class RandomBrightness(_Enhance):
    """Brighten or darken the image by a random factor."""

    enhancer = "Brightness"


@passthrough("image")
@node("data.random_contrast", title="Random contrast", category="Data")
class RandomContrast(_Enhance):
    """Raise or lower the contrast by a random factor."""

    enhancer = "Contrast"


@passthrough("image")
@node("data.random_saturation", title="Random saturation", category="Data")
class RandomSaturation(_Enhance):
    """Raise or lower the colour saturation by a random factor."""

    enhancer = "Color"


@passthrough("image")
@node("data.random_hue", title="Random hue", category="Data")
class RandomHue(PerSampleStage):
    """Rotate the hue by a random amount up to 'strength' of the colour wheel."""

    image = Input(Image, doc="image (PIL)")
    probability = Param(float, 0.5, min=0, max=1, doc="chance of applying")
    strength = Param(float, 0.05, min=0, max=0.5, doc="largest hue shift, as a fraction of the colour wheel")

    def process(self, item, image):
        rng = item.rng
        if rng.random() < self.probability:
            _need_pil(image, "Random hue")
            shift = rng.uniform(-self.strength, self.strength)
            image = shift_hue(image, shift)
        return {"image": image}


def shift_hue(image, shift: float):
    import numpy as np
    from PIL import Image as PILImage

    hsv = np.array(image.convert("HSV"))
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + round(shift * 256)) % 256
    return PILImage.frombytes("HSV", image.size, hsv.tobytes()).convert("RGB")
