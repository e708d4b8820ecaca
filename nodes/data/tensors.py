"""PIL images to torch tensors."""

from __future__ import annotations

from runtime import Choice, Input, Param, node
from runtime.data import PerSampleStage, SkipItem, passthrough
from runtime.data.pixels import PixelError, to_grey, to_rgb
from runtime.port_types import Image, ImageTensor, Mask

DTYPES = ("float32", "float16", "bfloat16")


def image_to_tensor(image, low: float, dtype: str):
    """An RGB PIL image as a contiguous CHW tensor with values in [low, 1]."""
    import numpy as np
    import torch

    t = torch.from_numpy(np.array(image)).permute(2, 0, 1)
    t = t.to(getattr(torch, dtype), memory_format=torch.contiguous_format)
    if low == 0:
        return t.div_(255.0)
    return t.mul_((1.0 - low) / 255.0).add_(low)


def mask_to_tensor(mask, dtype: str):
    """A PIL mask as a 1xHxW tensor in [0, 1] (16-bit and float masks scaled like Load image does)."""
    import numpy as np
    import torch

    return torch.from_numpy(np.array(to_grey(mask))).unsqueeze(0).to(getattr(torch, dtype)).div_(255.0)


@passthrough("mask", image=ImageTensor)
@node("data.to_tensor", title="To tensor", category="Data")
class ToTensor(PerSampleStage):
    """Turn an RGB image into a CHW tensor (and a mask into 1xHxW in [0, 1]).

    An image in another mode is mapped to RGB as Load image maps files
    (16-bit: 0..65535, float: 0..1 or 0..255, transparency on white); one
    without a safe mapping skips its item with a warning.
    """

    image = Input(Image, doc="RGB image (PIL)")
    mask = Input(Mask, optional=True, doc="mask (PIL)")
    range = Param(Choice("-1..1", "0..1"), "-1..1", doc="value range of the image tensor")
    dtype = Param(Choice(*DTYPES), "float32", doc="tensor dtype")
    random = False

    def process(self, item, image, mask):
        if not type(image).__module__.startswith("PIL."):
            raise TypeError(f"expects a PIL image, got {type(image).__name__}")
        low = -1.0 if self.range == "-1..1" else 0.0
        try:
            rgb = to_rgb(image, (255, 255, 255))
            m = mask_to_tensor(mask, self.dtype) if mask is not None else None
        except PixelError as e:
            raise SkipItem(f"unsupported pixels: {e}") from None
        return {"image": image_to_tensor(rgb, low, self.dtype), "mask": m}
