"""Lung anatomy from a lung mask: the two lungs, their zones, and a lung-aligned frame.

Zones follow each lung's own extent, not the image grid: a CAM in the lower third of a short lung
counts as lower even when the image holds a lot of abdomen. Sides are the patient's, as a
radiologist reads them: the patient's right lung is on the image left.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from cxrcam.errors import CxrcamError

MAX_LABELS = 8  # more distinct values than this: a gray-level mask (anti-aliased, JPEG), not labels
SIDES = ("right", "left")  # patient's right = image left
HEIGHTS = ("upper", "middle", "lower")
DEPTHS = ("central", "peripheral")
ZONES = tuple(f"{h}-{s}-{d}" for s in SIDES for h in HEIGHTS for d in DEPTHS)  # index = zone id


def sibling_mask_path(image_path: str | Path, folder: str) -> Path | None:
    """``<class>/<folder>/<name>`` beside ``<class>/images/<name>`` (the database layout), or None."""
    image_path = Path(image_path)
    if image_path.parent.name != "images":
        return None
    candidate = image_path.parent.parent / folder / image_path.name
    return candidate if candidate.is_file() else None


def read_mask(path: str | Path, size: int) -> np.ndarray:
    """A binary mask stretched to the model's square input exactly as its image was (nearest
    neighbour). A mask of a few levels (0/1, 0/255, 0/65535, bool, palette, a label map with one
    value per lung) is inside wherever it is not 0; one of many gray levels (anti-aliased or JPEG)
    is inside above half its maximum. A palette's colours are taken as gray levels."""
    try:
        with Image.open(path) as mask:
            if mask.mode in ("P", "PA", "RGB", "RGBA", "LA", "CMYK", "YCbCr", "1"):
                mask = mask.convert("L")
            values = np.asarray(mask.resize((size, size), Image.Resampling.NEAREST), dtype=np.float64)
    except (OSError, SyntaxError, ValueError) as exc:
        raise CxrcamError(f"cannot read mask {path}: {exc}") from None
    if values.ndim != 2:
        raise CxrcamError(f"cannot read mask {path}: it has shape {values.shape}, not one channel")
    if len(np.unique(values)) <= MAX_LABELS:
        return values > 0
    return values > values.max() / 2


def _column_centre(part: np.ndarray) -> float:
    return float(np.flatnonzero(part.any(axis=0)).mean())


def _two_parts(lungs: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The two largest connected parts ordered by column when both are lungs: of similar size, or a
    small one (a collapsed lung's remnant) on the other side of the image's midline; not a speck."""
    labels, n = ndimage.label(lungs)
    if n < 2:
        return None
    sizes = ndimage.sum(lungs, labels, index=range(1, n + 1))
    a, b = (np.argsort(sizes)[::-1][:2] + 1).tolist()
    parts = sorted((labels == a, labels == b), key=_column_centre)
    middle = lungs.shape[1] / 2
    opposite = _column_centre(parts[0]) < middle <= _column_centre(parts[1])
    ratio = sizes[b - 1] / sizes[a - 1]
    return (parts[0], parts[1]) if ratio >= 0.2 or (opposite and ratio >= 0.02) else None


def _side_of_one_part(lungs: np.ndarray) -> int | None:
    """0 or 1 when (nearly) all of the mask lies on one side of the image's midline, else None:
    one part spanning the midline is two lungs that touch."""
    total = lungs.sum()
    if total == 0:
        return None
    image_left = lungs[:, : lungs.shape[1] // 2].sum() / total
    return 0 if image_left >= 0.9 else 1 if image_left <= 0.1 else None


def single_lung_side(lungs: np.ndarray) -> int | None:
    """0 (patient's right, image left) or 1 when the mask holds one lung only (pneumonectomy, a
    collapsed or fully opaque lung), else None."""
    return None if _two_parts(lungs) is not None else _side_of_one_part(lungs)


def split_lungs(lungs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(patient's right lung, patient's left lung): two separate lungs; one lung on its own side
    with the other empty (specks centred on the other side dropped, so they do not stretch the
    lung's zones); or, when the lungs touch, the mask cut at the middle of its column extent."""
    parts = _two_parts(lungs)
    if parts is not None:
        return parts
    side = _side_of_one_part(lungs)
    if side is not None:
        labels, n = ndimage.label(lungs)
        middle = lungs.shape[1] / 2
        lung = np.isin(labels, [k for k in range(1, n + 1) if (_column_centre(labels == k) < middle) == (side == 0)])
        empty = np.zeros_like(lungs)
        return (lung, empty) if side == 0 else (empty, lung)
    cols = np.flatnonzero(lungs.any(axis=0))
    if cols.size == 0:
        return lungs.copy(), np.zeros_like(lungs)
    middle = (cols[0] + cols[-1] + 1) / 2
    image_left = np.arange(lungs.shape[1])[None, :] < middle
    return lungs & image_left, lungs & ~image_left


def mask_problem(mask: np.ndarray, kind: str) -> str | None:
    """Why a mask looks wrong (its encoding, or a degenerate drawing), for a warning; None if fine."""
    share = float(mask.mean())
    if share >= 0.98:
        return f"covers {share:.0%} of the image (all white: inverted, or not a {kind} mask?)"
    if kind == "lung":
        if share == 0:
            return "is empty (no lung drawn)"
        if share < 0.01:
            return f"covers only {share:.2%} of the image"
        if share > 0.8:
            return f"covers {share:.0%} of the image (inverted? white must be the lungs)"
        if single_lung_side(mask) is not None:
            return "holds one lung only: scored as one lung, the other side empty"
    return None


def zone_map(lungs: np.ndarray, peripheral_from: float = 0.5) -> np.ndarray:
    """int array: the zone id (index into ZONES) of every lung pixel, -1 outside the lungs.

    Height thirds and the central/peripheral cut (``peripheral_from`` of the way from the lung's
    medial to its lateral border) are measured on each lung's own bounding box.
    """
    zones = np.full(lungs.shape, -1, dtype=np.int8)
    rows, cols = np.mgrid[:lungs.shape[0], :lungs.shape[1]]
    for side, lung in enumerate(split_lungs(lungs)):
        if not lung.any():
            continue
        r, c = np.flatnonzero(lung.any(axis=1)), np.flatnonzero(lung.any(axis=0))
        height = (rows - r[0] + 0.5) / (r[-1] + 1 - r[0])
        across = (cols - c[0] + 0.5) / (c[-1] + 1 - c[0])
        lateral = 1 - across if side == 0 else across  # the right lung's lateral border is on the image left
        h = np.clip((height * 3).astype(int), 0, 2)
        d = (lateral >= peripheral_from).astype(int)
        zones[lung] = (side * 6 + h * 2 + d)[lung]
    return zones


def lung_aligned(values: np.ndarray, lungs: np.ndarray, size: int = 64) -> np.ndarray:
    """``values`` cropped to the lungs' bounding box and stretched to size x size, so that maps of
    differently shaped chests can be averaged: the frame every per-class mean heatmap uses."""
    r, c = np.flatnonzero(lungs.any(axis=1)), np.flatnonzero(lungs.any(axis=0))
    if r.size == 0:
        raise ValueError("an empty lung mask has no lung-aligned frame")
    crop = values[r[0]:r[-1] + 1, c[0]:c[-1] + 1].astype(np.float32)
    return np.asarray(Image.fromarray(crop, mode="F").resize((size, size), Image.Resampling.BILINEAR))
