"""Reading a chest X-ray of any mode and size into the grayscale pixels a model sees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cxrcam.errors import CxrcamError

HIGH_BIT_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def to_grayscale_uint8(image: Image.Image) -> Image.Image:
    """L, LA, RGB(A), P, 1-bit, CMYK and 16-bit/float images → 8-bit grayscale.

    High-bit-depth images are stretched from their own min to max: CXRs are often 10–14-bit data
    in a 16-bit container, so dividing by 65535 would leave them nearly black.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode in HIGH_BIT_DEPTH_MODES:
        pixels = np.asarray(image, dtype=np.float32)
        low, high = float(pixels.min()), float(pixels.max())
        scaled = (pixels - low) / (high - low) if high > low else np.zeros_like(pixels)
        return Image.fromarray((scaled * 255).round().astype(np.uint8), mode="L")
    return image.convert("L")


def read_grayscale(path: str | Path) -> np.ndarray:
    """The image at full resolution as a writable uint8 array; an unreadable file is a CxrcamError."""
    try:
        with Image.open(path) as image:
            return np.array(to_grayscale_uint8(image), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise CxrcamError(f"cannot read image {path}: {exc}") from None


def resize_grayscale(pixels: np.ndarray, image_size: int) -> np.ndarray:
    """Square (image_size, image_size), stretched like the seed (no aspect-ratio padding)."""
    resized = Image.fromarray(pixels).resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.array(resized, dtype=np.uint8)  # a writable copy, as torch.from_numpy wants


def load_image(path: str | Path, image_size: int) -> np.ndarray:
    """What a model sees of a file: grayscale, resized to image_size (before normalisation)."""
    return resize_grayscale(read_grayscale(path), image_size)
