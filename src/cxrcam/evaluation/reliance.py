"""The causal test behind the CAMs: does the model's answer change when a region is taken out of the
image? A CAM only says where the gradient sits; accuracy on edited images says what the decision
needs. Two edits, each applied only to the images that have the mask it needs:

- markers removed: the marker pixels, slightly dilated, inpainted from their surroundings;
- lungs only: everything outside the lung mask replaced by one constant.

Each is scored as a change against the same images unedited (accuracy, balanced accuracy, mean
true-class probability), with a paired bootstrap over images. The masks are parameters: the
dataset's marker masks today, detected ones tomorrow.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy.ndimage import binary_dilation
from tqdm import tqdm

from cxrcam.evaluation.imputation import linear_system, solve
from cxrcam.evaluation.results import Alteration, Interval, Reliance
from cxrcam.evaluation.stats import bootstrap_ci
from cxrcam.loaded_run import LoadedRun

CROP_MARGIN = 1  # kept pixels around the removed ones: every unknown's 8 neighbours lie inside the crop

Predict = Callable[[list[np.ndarray]], np.ndarray]  # uint8 (size, size) images -> (n, classes) probabilities


def removal_mask(mask: np.ndarray, dilation_px: int) -> np.ndarray:
    """``mask`` grown by ``dilation_px`` pixels in every direction, diagonals included (a square
    structuring element, as markers are boxes and letters). The image is resized bilinearly and its
    mask by nearest neighbour, so a marker's bright edge spills a pixel or so past its mask."""
    if dilation_px == 0:
        return mask.copy()
    return binary_dilation(mask, structure=np.ones((3, 3), bool), iterations=dilation_px)


def inpaint(gray: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``gray`` (uint8) with the pixels where ``mask`` is True replaced by ROAD's linear imputation
    without noise: each becomes the weighted mean of its neighbours, so the fill continues the
    surroundings smoothly and a constant surrounding is filled with that constant. Solved on the
    mask's bounding box grown by one pixel only: every removed pixel's neighbours lie inside it, so
    the solution is the whole image's, for a system of the marker's size."""
    out = gray.copy()
    if not mask.any():
        return out
    rows, cols = np.nonzero(mask)
    top, left = max(rows.min() - CROP_MARGIN, 0), max(cols.min() - CROP_MARGIN, 0)
    bottom, right = rows.max() + CROP_MARGIN + 1, cols.max() + CROP_MARGIN + 1
    removed, crop = mask[top:bottom, left:right], gray[top:bottom, left:right].astype(np.float32)
    if removed.all():  # nothing left to fill from (a mask over the whole image): its mean is unknown
        out[mask] = 0
        return out
    a, b, pixels = linear_system(removed, crop[None])
    filled = crop.reshape(-1)
    filled[pixels] = solve(a, b)[:, 0]
    out[top:bottom, left:right] = np.clip(np.rint(filled), 0, 255).reshape(removed.shape).astype(np.uint8)
    return out


def lungs_only(gray: np.ndarray, lungs: np.ndarray, outside: str) -> np.ndarray:
    """``gray`` with everything outside the lungs set to one value. ``mean``: the image's own mean
    intensity there, so the image keeps its mean brightness and the model sees a flat, plausible gray
    rather than a region darker than any X-ray holds; ``black``: 0, as Maguolo & Nanni (2021) cropped
    the lungs, for comparison with them. Either way no structure outside the lungs is left to read."""
    out = gray.copy()
    outside_pixels = ~lungs
    if outside_pixels.any():
        out[outside_pixels] = 0 if outside == "black" else int(np.rint(gray[outside_pixels].mean()))
    return out


def balanced_accuracy(predicted: np.ndarray, targets: np.ndarray) -> float:
    """The mean recall of the classes present in ``targets``."""
    return float(np.mean([np.mean(predicted[targets == c] == c) for c in np.unique(targets)]))


def paired_balanced_accuracy_change(before: np.ndarray, after: np.ndarray, targets: np.ndarray,
                                    bootstrap: dict) -> Interval:
    """Balanced accuracy after less before on the same images, with a percentile-bootstrap interval
    whose every resample recomputes both (over the classes that resample holds); the resamples are
    bootstrap_ci's, so the three changes of an edit share them."""
    n = len(targets)
    mean = balanced_accuracy(after, targets) - balanced_accuracy(before, targets)
    if n < 2:
        return Interval(mean, mean, mean, n)
    draws = np.random.default_rng(bootstrap["seed"]).integers(0, n, size=(bootstrap["n_resamples"], n))
    changes = [balanced_accuracy(after[d], targets[d]) - balanced_accuracy(before[d], targets[d]) for d in draws]
    tail = (1 - bootstrap["level"]) / 2 * 100
    low, high = np.percentile(changes, [tail, 100 - tail])
    return Interval(mean, float(low), float(high), n)


def alteration(edit: str, before: np.ndarray, after: np.ndarray, targets: np.ndarray, bootstrap: dict) -> Alteration:
    """One edit's changes from the (n, classes) probabilities of the same images before and after."""
    def paired(values: np.ndarray) -> Interval:
        return Interval(**bootstrap_ci(values, bootstrap["n_resamples"], bootstrap["level"], bootstrap["seed"]))

    rows = np.arange(len(targets))
    predicted_before, predicted_after = before.argmax(1), after.argmax(1)
    correct_before, correct_after = predicted_before == targets, predicted_after == targets
    return Alteration(edit, len(targets), float(correct_before.mean()), float(correct_after.mean()),
                      balanced_accuracy(predicted_before, targets), balanced_accuracy(predicted_after, targets),
                      float(before[rows, targets].mean()), float(after[rows, targets].mean()),
                      paired(correct_after.astype(float) - correct_before),
                      paired_balanced_accuracy_change(predicted_before, predicted_after, targets, bootstrap),
                      paired(after[rows, targets] - before[rows, targets]))


def reliance(predict: Predict, before: np.ndarray, grays: list[np.ndarray], targets: list[int],
             markers: list[np.ndarray | None], lungs: list[np.ndarray | None], settings: dict,
             bootstrap: dict) -> Reliance:
    """The causal test of one model on images (uint8, model size) whose probabilities ``before`` (n,
    classes) the caller has (evaluate from its CAM pass: only edited images are predicted here), with
    their target classes and, per image, its marker and lung mask (None where there is none; an empty
    mask counts as none).
    ``settings``: conf/evaluate.yaml's ``causal`` (marker_dilation_px, outside_lungs); ``bootstrap``:
    n_resamples, level, seed. An edit no image has a mask for is None."""
    targets = np.asarray(targets)
    edits = {"markers_removed": (markers, lambda g, m: inpaint(g, removal_mask(m, settings["marker_dilation_px"]))),
             "lungs_only": (lungs, lambda g, m: lungs_only(g, m, settings["outside_lungs"]))}
    having = {edit: [i for i, m in enumerate(masks) if m is not None and m.any()] for edit, (masks, _) in edits.items()}
    out = {}
    for edit, (masks, apply) in edits.items():
        chosen = having[edit]
        if not chosen:
            out[edit] = None
            continue
        after = predict([apply(grays[i], masks[i]) for i in tqdm(chosen, desc=f"causal test: {edit}", unit="img")])
        out[edit] = alteration(edit, before[chosen], after, targets[chosen], bootstrap)
    return Reliance(**out)


def model_probabilities(run: LoadedRun, batch_size: int) -> Predict:
    """A run's class probabilities of uint8 images, in batches."""
    def predict(grays: list[np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            return np.concatenate([run.model(run.batch(grays[start:start + batch_size])).float().softmax(1).cpu()
                                   .numpy() for start in range(0, len(grays), batch_size)])

    return predict
