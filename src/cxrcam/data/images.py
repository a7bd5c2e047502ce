"""Reading a chest X-ray of any mode and size into the grayscale pixels a model sees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cxrcam.errors import CxrcamError

HIGH_BIT_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
MAX_PIXELS = 64_000_000  # 8000 x 8000; the largest detector panels are about 4300 x 4300
DICOM_EXTENSIONS = (".dcm", ".dicom")


def to_grayscale_uint8(image: Image.Image) -> Image.Image:
    """L, LA, RGB(A), P, 1-bit, CMYK and 16-bit/float images → 8-bit grayscale.

    High-bit-depth images are stretched from their own min to max: CXRs are often 10–14-bit data
    in a 16-bit container, so dividing by 65535 would leave them nearly black.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode in HIGH_BIT_DEPTH_MODES:
        return Image.fromarray(_stretch_to_uint8(np.asarray(image)), mode="L")
    return image.convert("L")


def _stretch_to_uint8(pixels: np.ndarray) -> np.ndarray:
    pixels = pixels.astype(np.float64)  # float32 rounds some levels of a 32-bit or LUT-mapped range wrong
    low, high = float(pixels.min()), float(pixels.max())
    scaled = (pixels - low) / (high - low) if high > low else np.zeros_like(pixels)
    return (scaled * 255).round().astype(np.uint8)


def _check_size(path: str | Path, width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise CxrcamError(f"refusing image {path}: {width} x {height} pixels is over the {MAX_PIXELS:,}-pixel limit "
                          "(a decompression bomb or not a radiograph); downscale it first")


def read_dicom(path: str | Path) -> np.ndarray:
    """A single-frame DICOM radiograph as displayed: modality and VOI LUT (or window) applied, and
    MONOCHROME1 (bright air) inverted to the MONOCHROME2 look every other image has."""
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:
        raise CxrcamError(f"cannot read {path}: DICOM needs pydicom; pip install 'cxrcam[dicom]'") from None
    try:
        ds = pydicom.dcmread(path)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames > 1:
            raise CxrcamError(f"refusing DICOM {path}: it has {frames} frames; export the radiograph's single "
                              "frame (a CXR is one image)")
        _check_size(path, int(ds.Columns), int(ds.Rows))
        pixels = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)
    except CxrcamError:
        raise
    except Exception as exc:  # pydicom raises many types for truncated or foreign files
        raise CxrcamError(f"cannot read DICOM {path}: {type(exc).__name__}: {exc}") from None
    if pixels.ndim != 2:
        raise CxrcamError(f"refusing DICOM {path}: pixel data of shape {pixels.shape} is not one grayscale image")
    image = _stretch_to_uint8(pixels)
    return 255 - image if ds.get("PhotometricInterpretation") == "MONOCHROME1" else image


def read_grayscale(path: str | Path) -> np.ndarray:
    """The image at full resolution as a writable uint8 array; an unreadable file, or one too large
    to decode safely, is a CxrcamError. DICOM files go through :func:`read_dicom`."""
    if not Path(path).exists():  # said plainly: a CSV may name files that were never downloaded
        raise CxrcamError(f"cannot read image {path}: no such file")
    if Path(path).suffix.lower() in DICOM_EXTENSIONS:
        return read_dicom(path)
    try:
        with Image.open(path) as image:
            _check_size(path, *image.size)  # from the header, before any pixel is decoded
            return np.array(to_grayscale_uint8(image), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise CxrcamError(f"cannot read image {path}: {exc}") from None


def resize_grayscale(pixels: np.ndarray, image_size: int) -> np.ndarray:
    """Square (image_size, image_size), stretched like the seed (no aspect-ratio padding)."""
    resized = Image.fromarray(pixels).resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.array(resized, dtype=np.uint8)  # a writable copy, as torch.from_numpy wants


def load_image(path: str | Path, image_size: int) -> np.ndarray:
    """What a model sees of a file: grayscale, resized to image_size (before normalisation)."""
    return resize_grayscale(read_grayscale(path), image_size)
