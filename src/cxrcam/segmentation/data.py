"""Image and lung-mask pairs of a dataset in the COVID-19 Radiography Database layout
(``<class>/masks/<name>`` beside ``<class>/images/<name>``), read once into memory at the
segmenter's input size."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cxrcam.data.images import load_image
from cxrcam.data.layout import MASK_FOLDERS, discover_images, find_dataset_dir
from cxrcam.errors import CxrcamError
from cxrcam.evaluation.anatomy import read_mask, sibling_mask_path

log = logging.getLogger(__name__)
LUNG_MASKS = MASK_FOLDERS[0]


def lung_mask_pairs(root: str | Path, classes: list[str]) -> list[tuple[Path, str, Path]]:
    """(image, class, lung mask) of every image that has a lung mask; images without one are left
    out with a warning, a dataset with none at all is an error naming the folder expected."""
    items = discover_images(root, classes)
    pairs = [(path, label, mask) for path, label in items
             if (mask := sibling_mask_path(path, LUNG_MASKS)) is not None]
    if not pairs:
        dataset_dir = find_dataset_dir(root, classes)
        raise CxrcamError(f"no lung masks in {dataset_dir}: a segmenter trains on <class>/{LUNG_MASKS}/<name> beside "
                          f"<class>/images/<name> (e.g. {dataset_dir / classes[0] / LUNG_MASKS}); use a dataset "
                          "that has them, such as the COVID-19 Radiography Database or data=synthetic")
    if len(pairs) < len(items):
        log.warning("%d of %d images have no lung mask in %s/ and are left out", len(items) - len(pairs), len(items),
                    LUNG_MASKS)
    return pairs


def load_pairs(pairs: list[tuple[str, str]], size: int, desc: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (n, size, size), masks bool (n, size, size)) of (image path, mask path) pairs,
    each resized from full resolution as a model sees it."""
    images = np.zeros((len(pairs), size, size), np.uint8)
    masks = np.zeros((len(pairs), size, size), bool)
    for i, (image, mask) in enumerate(tqdm(pairs, desc=desc, unit="img")):
        images[i], masks[i] = load_image(image, size), read_mask(mask, size)
    return images, masks
