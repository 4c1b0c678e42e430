"""Decoding any image file pillow reads into 8-bit RGB, scaling deep images instead of clipping them.

`Image.convert("RGB")` clips a 16-bit greyscale image (mode I;16 or I) to 255 instead of scaling it, so
94 % of a full-range ramp would turn white, and it drops alpha onto whatever RGB the transparent
pixels happen to hold. Here 16-bit data is scaled by 255/65535, float data in [0, 1] by 255, and
transparent images are composited onto BACKGROUND.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

BACKGROUND = (255, 255, 255)  # what transparent pixels show: white, as an image viewer would
_DEEP_INT = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # "I" is how PNG/TIFF 16-bit greyscale often loads


def to_rgb(im: Image.Image) -> Image.Image:
    """Any pillow image -> 8-bit RGB, scaling 16-bit/float data and compositing alpha onto BACKGROUND."""
    if im.mode in _DEEP_INT:
        arr = np.asarray(im).astype(np.float64) * (255.0 / 65535.0)
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L").convert("RGB")
    if im.mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        scale = 255.0 if np.nanmax(arr, initial=0.0) <= 1.0 else 1.0  # [0, 1] floats, else already 0..255
        return Image.fromarray(np.clip(np.rint(np.nan_to_num(arr) * scale), 0, 255).astype(np.uint8), "L").convert("RGB")
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        base = Image.new("RGBA", im.size, (*BACKGROUND, 255))
        return Image.alpha_composite(base, rgba).convert("RGB")
    return im.convert("RGB")
