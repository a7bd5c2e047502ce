"""The images an evaluation scores, each with the masks that exist for it, at the model's size."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from PIL import Image
from tqdm import tqdm

from cxrcam.data.images import read_grayscale, resize_grayscale
from cxrcam.data.layout import MASK_FOLDERS
from cxrcam.data.markers import detect_markers
from cxrcam.errors import CxrcamError
from cxrcam.evaluation.anatomy import mask_problem, read_mask, sibling_mask_path
from cxrcam.evaluation.results import Interval, PredictedLungs
from cxrcam.evaluation.stats import bootstrap_ci
from cxrcam.segmentation.segmenter import LungSegmenter, dice

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
    boxes: np.ndarray | None = None  # the union of radiologists' boxes (boxes.file); None: the image is not listed
    shape: tuple[int, int] | None = None  # the original image's height and width, which box coordinates refer to
    lungs_predicted: bool = False  # the lung mask comes from a segmenter (evaluate lungs=), not the dataset
    lung_dice: float | None = None  # lungs_mode=all: the dataset's own lung mask against the prediction
    detected_marker: np.ndarray | None = None  # burned-in markers cxrcam.data.markers finds on the full-size image


@dataclass(frozen=True)
class LungPrediction:
    """Where evaluate's lung masks come from besides the dataset: a segmenter, for the images
    without a mask (mode missing) or for every image (all), whose own masks it is then scored on."""
    segmenter: LungSegmenter
    mode: str


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


def _lungs(path: str, full: np.ndarray, size: int,
           prediction: LungPrediction | None) -> tuple[np.ndarray | None, bool, float | None]:
    """(lung mask, whether it is predicted, Dice of the dataset's own mask against the prediction).
    The segmenter sees the full-resolution image at its own input size; the Dice is taken there too,
    so that it does not depend on the evaluated model's size."""
    own = sibling_mask_path(path, LUNG_MASKS)
    if prediction is None or (own is not None and prediction.mode == "missing"):
        return _optional_mask(path, LUNG_MASKS, size), False, None
    segmenter = prediction.segmenter
    mask, at_own_size = segmenter.predict(full, size)
    if (problem := mask_problem(mask, "lung")) is not None:  # the segmenter failed on this image: say so
        log.warning("the lung mask predicted for %s %s", path, problem)
    return mask, True, None if own is None else dice(at_own_size, read_mask(own, segmenter.image_size))


def detected_mask(original: np.ndarray, size: int) -> np.ndarray:
    """The markers found at the image's own resolution, stretched to the model's input as masks are."""
    found = Image.fromarray(detect_markers(original).astype(np.uint8) * 255)
    return np.asarray(found.resize((size, size), Image.Resampling.NEAREST)) > 0


def load_samples(images: list[tuple[str, str]], size: int,
                 lungs: LungPrediction | None = None) -> tuple[list[Sample], list[str]]:
    """The readable samples, and the files (image or mask) that could not be read: each is logged
    and its image left out, so one bad file never stops the evaluation. With ``lungs``, lung masks
    are predicted where it says."""
    samples, failures = [], []
    for path, label in tqdm(images, desc="loading images and masks", unit="img"):
        try:
            full = read_grayscale(path)
            lung_mask, predicted, lung_dice = _lungs(path, full, size, lungs)
            samples.append(Sample(path, label, resize_grayscale(full, size), lung_mask,
                                  _optional_mask(path, LESION_MASKS, size), _optional_mask(path, MARKER_MASKS, size),
                                  shape=full.shape, lungs_predicted=predicted, lung_dice=lung_dice,
                                  detected_marker=detected_mask(full, size)))
        except CxrcamError as exc:
            log.error("%s", exc)
            failures.append(path)
    return samples, failures


def predicted_lungs(samples: list[Sample], prediction: LungPrediction, bootstrap: dict) -> PredictedLungs:
    """What the report says about predicted lung masks: how many, and how good (``bootstrap``:
    n_resamples, level, seed for the interval of the Dice against the dataset's masks)."""
    meta = prediction.segmenter.meta
    scores = [s.lung_dice for s in samples if s.lung_dice is not None]
    agreement = (Interval(**bootstrap_ci(scores, bootstrap["n_resamples"], bootstrap["level"], bootstrap["seed"]))
                 if scores else None)
    return PredictedLungs(str(prediction.segmenter.path), prediction.mode, meta["image_size"],
                          meta["training_data"]["name"], meta["val_dice"], meta.get("test_dice"), len(samples),
                          sum(s.lungs_predicted for s in samples), agreement)


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
