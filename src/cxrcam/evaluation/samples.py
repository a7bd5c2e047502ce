"""The images an evaluation scores, each with the masks that exist for it, at the model's size."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from PIL import Image
from tqdm import tqdm

from cxrcam.data.images import read_grayscale, resize_grayscale
from cxrcam.data.markers import detect_markers
from cxrcam.data.layout import MASK_FOLDERS
from cxrcam.errors import CxrcamError
from cxrcam.evaluation.anatomy import mask_problem, read_mask, sibling_mask_path

log = logging.getLogger(__name__)
LUNG_MASKS, LESION_MASKS, MARKER_MASKS = MASK_FOLDERS


@dataclass
class Sample:
    path: str
    label: str
    gray: np.ndarray  # uint8 (size, size): what the model sees before normalisation
    lungs: np.ndarray | None  # bool masks of the same shape, None where the dataset has none
    lesion: np.ndarray | None  # all False for an image without a finding (Normal)
    marker: np.ndarray | None  # a burned-in marker (synthetic confounder)
    detected_marker: np.ndarray | None = None  # burned-in markers cxrcam.data.markers finds on the full-size image


MASK_KINDS = {LUNG_MASKS: "lung", LESION_MASKS: "lesion", MARKER_MASKS: "marker"}


def _optional_mask(path: str, folder: str, size: int) -> np.ndarray | None:
    """The mask beside an image, or None; a mask that looks wrong is read but warned about."""
    mask_path = sibling_mask_path(path, folder)
    if mask_path is None:
        return None
    mask = read_mask(mask_path, size)
    if (problem := mask_problem(mask, MASK_KINDS[folder])) is not None:
        log.warning("%s mask %s %s", MASK_KINDS[folder], mask_path, problem)
    return mask


def detected_mask(original: np.ndarray, size: int) -> np.ndarray:
    """The markers found at the image's own resolution, stretched to the model's input as masks are."""
    found = Image.fromarray(detect_markers(original).astype(np.uint8) * 255)
    return np.asarray(found.resize((size, size), Image.Resampling.NEAREST)) > 0


def load_samples(images: list[tuple[str, str]], size: int) -> tuple[list[Sample], list[str]]:
    """The readable samples, and the files (image or mask) that could not be read: each is logged
    and its image left out, so one bad file never stops the evaluation."""
    samples, failures = [], []
    for path, label in tqdm(images, desc="loading images and masks", unit="img"):
        try:
            original = read_grayscale(path)
            samples.append(Sample(path, label, resize_grayscale(original, size), _optional_mask(path, LUNG_MASKS, size),
                                  _optional_mask(path, LESION_MASKS, size), _optional_mask(path, MARKER_MASKS, size),
                                  detected_mask(original, size)))
        except CxrcamError as exc:
            log.error("%s", exc)
            failures.append(path)
    return samples, failures


def balanced_subset(labels: list[str], n: int, seed: int = 0) -> list[int]:
    """Up to ``n`` indices taken in turn from each class (seeded order), for the costly checks."""
    rng = np.random.default_rng(seed)
    queues = [list(rng.permutation([i for i, lab in enumerate(labels) if lab == c])) for c in dict.fromkeys(labels)]
    chosen = []
    while len(chosen) < min(n, len(labels)):
        for queue in queues:
            if queue and len(chosen) < n:
                chosen.append(int(queue.pop(0)))
    return sorted(chosen)
