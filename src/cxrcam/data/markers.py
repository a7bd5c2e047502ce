"""Finding burned-in markers (laterality letters, positioning words, technologist and scanner
labels) on a chest X-ray without learned weights.

Cues, in the order they are applied, every length a share of the image's longer side so that a
256 px thumbnail and a 3000 px detector image are treated alike:

1. Contrast against the local background. Text is thinner than ``BACKGROUND_SIDE`` of the image,
   so a morphological opening (closing) of that size removes white (black) strokes and keeps the
   anatomy under them; what the top-hat leaves above ``STRONG_CONTRAST`` seeds a stroke, which
   grows over the pixels above ``WEAK_CONTRAST`` and above half the highest residual nearby (its
   half-maximum outline, which keeps a label apart from a bright neighbour). Step edges (the skin
   line, the mediastinum) leave no residue. Both polarities are searched, so an inverted
   (MONOCHROME1) image gives the same mask.
2. Stroke shape: a component must be letter-sized (``MIN_HEIGHT``..``MAX_LENGTH``), drawn with a
   thin stroke (at most ``MAX_STROKE`` and half its length: electrodes, pacemaker cans and other
   solid objects are thicker) and, when longer than ``LONG``, dense in ink along its length as a
   word is, not a single thin curve as a wire or catheter is.
3. Sharp edges: a written pixel jumps to its level within a pixel or so, so along the stroke's
   border the intensity range over ``EDGE_WINDOW`` is about the stroke's contrast; devices in the
   beam are blurred by scatter and geometric unsharpness (``MIN_SHARPNESS``).
4. Constant level: a scanner writes every pixel of a label at one value, where anatomy and devices
   (added density) vary with what lies beneath (``MAX_SPREAD``; up to ``CRISP_SPREAD`` for very
   sharp strokes, as anti-aliased or resized text has a less even core).

Images of ``HALF_FROM`` px and more are searched at half their size too, where a label blurred by
resampling or a lead marker's unsharpness is sharp again; the strokes of both are joined.

Wires, electrodes and implants are therefore not markers: 2-4 refuse them. Metal that is small,
saturated and sharp-edged (a sternal wire loop at low resolution) can pass as a letter 'O'. The
mask returned covers the accepted strokes with the gaps inside a word and the inside of a ring
closed, so that it also covers a box drawn around the label. Measured on held-out phantoms of
256-2048 px stored as 8-bit, 16-bit, inverted, JPEG, halved and blurred images
(scripts/bench_markers.py); the numbers are in the README. A 1 px blur on a 256 px image smears
its letters beyond this detector's reach.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

BACKGROUND_SIDE = 0.05  # opening/closing window: wider than any stroke, narrower than anatomy
STRONG_CONTRAST = 60  # grey levels (of 255) above the background that seed a stroke
WEAK_CONTRAST = 30  # grey levels a stroke grows over
NEIGHBOURHOOD = 0.01  # window (of the side) whose highest residual a stroke pixel must reach half of
MIN_HEIGHT = 0.003  # a component's longer side, of the image side (and at least MIN_PIXELS)
MIN_PIXELS = 4
MAX_LENGTH = 0.3  # a component's longer side, of the image side
MAX_STROKE = 0.015  # stroke width (twice the largest distance to the border), of the image side
LONG = 0.1  # of the side: a longer component must be word-like ...
WORD_INK = 1.6  # ... its stroke length (area / stroke width) this many times its box's longer side
MIN_SHARPNESS = 0.75  # mean intensity range (in EDGE_WINDOW) along the border over the mean contrast
EDGE_WINDOW = 0.002  # of the side, at least 3 px: an edge blurred by a pixel at 2000 px is still sharp
MAX_SPREAD = 0.15  # standard deviation of the core's level over the mean contrast ...
CORE = 0.6  # ... the core: pixels with at least this share of the component's highest contrast
CRISP = 1.05  # a component at least this sharp ...
CRISP_SPREAD = 0.25  # ... may spread this much
HALF_FROM = 512  # px: images this large are searched at half their size too
MIN_SIDE = 128  # px: smaller images are not searched (their letters would be 1-3 px, below legibility, and at
# that scale small bright anatomy passes every cue: 7 of 8 test phantoms of 64 px had false detections)
CLOSE_GAPS = 0.012  # of the side: letters of a word and a ring's inside are joined into one region


def _odd(n: float) -> int:
    return max(3, int(round(n)) // 2 * 2 + 1)


def _per_label_max(label: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Max of ``values`` per label 0..n over the labelled pixels only (scipy's sorts the whole image)."""
    out = np.zeros(n + 1, np.float64)
    np.maximum.at(out, label, values)
    return out


def _components(residual: np.ndarray, side: int) -> tuple[np.ndarray, int]:
    """Labelled strokes: pixels above WEAK_CONTRAST and half their neighbourhood's highest residual
    (a stroke's half-maximum outline, which also cuts it from brighter or fainter neighbours),
    connected to one above STRONG_CONTRAST."""
    nearby = cv2.dilate(residual, cv2.getStructuringElement(cv2.MORPH_RECT, (_odd(NEIGHBOURHOOD * side),) * 2))
    candidates = (residual > WEAK_CONTRAST) & (residual >= nearby // 2)
    count, labels = cv2.connectedComponents(candidates.astype(np.uint8), connectivity=8)
    inside = labels > 0
    keep = _per_label_max(labels[inside], residual[inside], count - 1) > STRONG_CONTRAST
    relabelled = (np.cumsum(keep) * keep).astype(np.int32)
    return relabelled[labels], int(keep.sum())


def _features(pixels: np.ndarray, residual: np.ndarray, labels: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """Per component (label 1..n): longer box side, area, stroke width, perimeter, contrast,
    sharpness of its border and spread of its level; computed over the labelled pixels only."""
    inside = labels > 0
    label = labels[inside]
    value, contrast_px = pixels[inside].astype(np.float64), residual[inside].astype(np.float64)

    def total(weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(label, weights, minlength=n + 1)[1:]

    boxes = ndimage.find_objects(labels, n)
    length = np.array([max(b[0].stop - b[0].start, b[1].stop - b[1].start) for b in boxes], float)
    area = total()
    distance = cv2.distanceTransform(inside.astype(np.uint8), cv2.DIST_L2, 3)[inside]
    stroke = 2 * _per_label_max(label, distance, n)[1:]
    border = (inside & ~cv2.erode(inside.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool))[inside]
    perimeter = total(border.astype(np.float64))
    contrast = total(contrast_px) / area
    edge_window = np.ones((_odd(EDGE_WINDOW * max(pixels.shape)),) * 2, np.uint8)
    gradient = cv2.morphologyEx(pixels, cv2.MORPH_GRADIENT, edge_window)[inside].astype(np.float64)
    edge = total(gradient * border) / np.maximum(perimeter, 1)
    peak = _per_label_max(label, contrast_px, n)[label]
    core = (contrast_px >= CORE * peak).astype(np.float64)  # the stroke's middle, not its anti-aliased rim
    n_core = np.maximum(total(core), 1)
    level = np.sqrt(np.maximum(total(core * value**2) / n_core - (total(core * value) / n_core) ** 2, 0))
    return {"length": length, "area": area, "stroke": stroke,
            "perimeter": perimeter, "sharpness": edge / np.maximum(contrast, 1),
            "spread": level / np.maximum(contrast, 1)}


def _accepted(f: dict[str, np.ndarray], side: int) -> np.ndarray:
    ink = f["area"] / np.maximum(f["stroke"], 2) / np.maximum(f["length"], 1)
    return ((f["length"] >= max(MIN_PIXELS, MIN_HEIGHT * side)) & (f["length"] <= MAX_LENGTH * side)
            & (f["stroke"] <= max(3, MAX_STROKE * side)) & (f["stroke"] <= f["length"] / 2)
            & ((f["length"] <= LONG * side) | (ink >= WORD_INK))
            & (f["sharpness"] >= MIN_SHARPNESS)
            & ((f["spread"] <= MAX_SPREAD) | ((f["sharpness"] >= CRISP) & (f["spread"] <= CRISP_SPREAD))))


def _strokes(pixels: np.ndarray) -> np.ndarray:
    """The accepted strokes of both polarities, at this image's resolution."""
    side = max(pixels.shape)
    window = cv2.getStructuringElement(cv2.MORPH_RECT, (_odd(BACKGROUND_SIDE * side),) * 2)
    found = np.zeros(pixels.shape, bool)
    for operation in (cv2.MORPH_TOPHAT, cv2.MORPH_BLACKHAT):  # white text, then black text
        residual = cv2.morphologyEx(pixels, operation, window)
        labels, n = _components(residual, side)
        if n:
            keep = np.concatenate([[False], _accepted(_features(pixels, residual, labels, n), side)])
            found |= keep[labels]
    return found


def detect_markers(pixels: np.ndarray) -> np.ndarray:
    """bool mask (H, W) of the burned-in markers on a uint8 grayscale image (H, W), at its own
    resolution; empty for an image under ``MIN_SIDE`` px."""
    if pixels.ndim != 2 or pixels.dtype != np.uint8:
        raise ValueError(f"detect_markers takes a uint8 (H, W) image, not {pixels.dtype} {pixels.shape}")
    side = max(pixels.shape)
    if side < MIN_SIDE:
        return np.zeros(pixels.shape, bool)
    found = _strokes(pixels)
    if side >= HALF_FROM:  # a blurred label (a resampled image, a lead marker) is sharp at half the size
        height, width = pixels.shape
        half = _strokes(cv2.resize(pixels, (width // 2, height // 2), interpolation=cv2.INTER_AREA))
        found |= cv2.resize(half.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
    if not found.any():
        return found
    close = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (_odd(CLOSE_GAPS * side),) * 2)
    return ndimage.binary_fill_holes(cv2.morphologyEx(found.astype(np.uint8), cv2.MORPH_CLOSE, close).astype(bool))
