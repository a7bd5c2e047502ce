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
    """A mask stretched to the model's square input exactly as its image was (nearest neighbour)."""
    try:
        with Image.open(path) as mask:
            resized = mask.convert("L").resize((size, size), Image.Resampling.NEAREST)
    except (OSError, SyntaxError, ValueError) as exc:
        raise CxrcamError(f"cannot read mask {path}: {exc}") from None
    return np.asarray(resized) > 127


def split_lungs(lungs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(patient's right lung, patient's left lung): the two largest connected parts ordered by
    column, or, when the lungs touch, the mask cut at the middle of its column extent."""
    labels, n = ndimage.label(lungs)
    if n >= 2:
        sizes = ndimage.sum(lungs, labels, index=range(1, n + 1))
        a, b = (np.argsort(sizes)[::-1][:2] + 1).tolist()
        if sizes[b - 1] >= 0.2 * sizes[a - 1]:
            parts = sorted((labels == a, labels == b), key=lambda m: np.flatnonzero(m.any(axis=0)).mean())
            return parts[0], parts[1]
    cols = np.flatnonzero(lungs.any(axis=0))
    if cols.size == 0:
        return lungs.copy(), np.zeros_like(lungs)
    middle = (cols[0] + cols[-1] + 1) / 2
    image_left = np.arange(lungs.shape[1])[None, :] < middle
    return lungs & image_left, lungs & ~image_left


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
