"""Does the CAM point at the lesion? Per-image scores against a lesion mask of the CAM's shape.

Every score treats a map with several equal maxima (a flat map in the limit) as pointing at all of
them at once, so a uniform CAM scores exactly its chance level instead of whatever pixel argmax
happens to return first.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def peak_pixels(cam: np.ndarray) -> np.ndarray:
    """bool mask of the CAM's maximal pixels."""
    return cam >= cam.max()


def mass_share(cam: np.ndarray, region: np.ndarray) -> float:
    """Share of the CAM's mass inside ``region``; a map with no mass counts as uniform."""
    total = float(cam.sum())
    return float(cam[region].sum()) / total if total > 0 else float(region.mean())


def within(region: np.ndarray, tolerance_px: float) -> np.ndarray:
    """``region`` grown by ``tolerance_px`` (Euclidean): where a tolerant pointing game scores a hit."""
    if tolerance_px <= 0 or not region.any():
        return region
    return ndimage.distance_transform_edt(~region) <= tolerance_px


def pointing_hit(cam: np.ndarray, lesion: np.ndarray, tolerance_px: float = 0) -> float:
    """1 when the CAM's peak lies in the lesion (or within ``tolerance_px`` of it), else 0; the
    share of the peak pixels that do when there are several."""
    return mass_share(peak_pixels(cam).astype(np.float32), within(lesion, tolerance_px))


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold on [0, 1] values (CAMs are scaled to it); -inf for a constant map."""
    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    if np.count_nonzero(hist) < 2:
        return float("-inf")
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(hist)[:-1]
    weight_high = hist.sum() - weight_low
    mean_low = np.cumsum(hist * centres)[:-1] / np.maximum(weight_low, 1)
    mean_high = (np.sum(hist * centres) - np.cumsum(hist * centres)[:-1]) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(edges[1:-1][np.argmax(between)])


def otsu_iou(cam: np.ndarray, lesion: np.ndarray) -> float:
    """IoU of the Otsu-thresholded CAM with the lesion (CheXlocalize's segmentation protocol).
    A constant map segments the whole image."""
    segmented = cam >= otsu_threshold(cam)  # the threshold is the high class's lowest bin edge: it belongs to it
    union = np.count_nonzero(segmented | lesion)
    return np.count_nonzero(segmented & lesion) / union if union else 0.0


def lesion_zones(lesion: np.ndarray, zones: np.ndarray, min_share: float = 0.1) -> np.ndarray:
    """bool mask of the lung zones that hold at least ``min_share`` of the lesion's lung pixels."""
    ids = zones[lesion & (zones >= 0)]
    if ids.size == 0:
        return np.zeros_like(lesion)
    counts = np.bincount(ids, minlength=int(zones.max()) + 1)
    return np.isin(zones, np.flatnonzero(counts >= min_share * ids.size))


def localisation_scores(cam: np.ndarray, lesion: np.ndarray, zones: np.ndarray | None,
                        tolerance_px: float) -> dict:
    """Every localisation score of one image, with the chance level of each hit rate: the share of
    the image where a random point scores a hit."""
    tolerant = within(lesion, tolerance_px)
    scores = {"pointing": pointing_hit(cam, lesion), "pointing_chance": float(lesion.mean()),
              "pointing_tolerant": mass_share(peak_pixels(cam).astype(np.float32), tolerant),
              "pointing_tolerant_chance": float(tolerant.mean()),
              "energy": mass_share(cam, lesion), "otsu_iou": otsu_iou(cam, lesion)}
    if zones is not None:
        target = lesion_zones(lesion, zones)
        scores.update(zone_hit=mass_share(peak_pixels(cam).astype(np.float32), target),
                      zone_hit_chance=float(target.mean()))
    return scores
