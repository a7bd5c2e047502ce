"""Radiologists' bounding boxes as localisation ground truth, for datasets that have boxes but no
lesion masks (RSNA Pneumonia, NIH ChestX-ray14's BBox list, VinDr-CXR).

A box file is a CSV of one box per row: an image path and four coordinates in pixels of the
ORIGINAL image. A row's path (plus ``boxes.path_suffix``) names an evaluated image when it equals
the last components of the image's path: ``00000001_000.png`` is ``.../images_001/images/00000001_000.png``.
Coordinates are pixel edges: original pixel (r, c) spans [c, c+1) x [r, r+1), and a box covers it
when its centre (c + 0.5, r + 0.5) lies inside the box, left and top edges included, right and
bottom excluded (a rectangle of mask pixels c0..c1 is the box x_min = c0, x_max = c1 + 1). That
region of the original image is stretched to the model's square input exactly as a lesion mask is
(:func:`cxrcam.evaluation.anatomy.read_mask`: PIL's nearest neighbour), so a box drawn around a
rectangular mask lands on the very pixels the mask does.

Several boxes of an image (several findings, several readers) form one region, their union. An
image listed only with empty rows (RSNA's and VinDr's negatives) has no finding: an empty region,
scored like a Normal image. An image not listed has no box ground truth.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from cxrcam.data.synthetic import LESION_BOXES, MANIFEST, write_lesion_boxes
from cxrcam.data.table import csv_rows
from cxrcam.errors import CxrcamError
from cxrcam.evaluation.results import BoxTruth
from cxrcam.evaluation.samples import Sample

log = logging.getLogger(__name__)
# each format's default columns: the image path, then its four coordinates in the format's order
BOX_COLUMNS = {"xyxy": ("path", "x_min", "y_min", "x_max", "y_max"), "xywh": ("path", "x", "y", "w", "h")}

Box = tuple[float, float, float, float]  # x_min, y_min, x_max, y_max in the original image's pixels


@dataclass(frozen=True)
class BoxFile:
    file: str
    n_rows: int
    boxes: dict[str, list[tuple[str | None, Box | None]]]  # row path + suffix: (label, box or None: empty row)


def read_boxes(settings: dict) -> BoxFile:
    """The box file ``settings`` (the boxes config group) names, each row checked: every problem is a
    one-line error that names the row."""
    path = Path(settings["file"])
    if not path.is_file() and path.name == LESION_BOXES and (path.parent / MANIFEST).is_file():
        write_lesion_boxes(path.parent)  # a synthetic set generated before it wrote its boxes
    if not path.is_file():
        raise CxrcamError(f"boxes.file={path} does not exist; pass the box CSV, e.g. boxes=rsna "
                          "boxes.file=<path to stage_2_train_labels.csv>")
    fmt = settings["format"]
    columns = list(settings["columns"] or BOX_COLUMNS[fmt])
    label_column = settings["label_column"]
    header, rows = csv_rows(path, "boxes.file", "box (or image without a finding)")
    missing = [c for c in columns + ([label_column] if label_column else []) if c not in header]
    if missing:
        raise CxrcamError(f"boxes.file={path} has no column(s) {missing} (boxes.columns / boxes.label_column); "
                          f"its columns: {header}")
    boxes: dict[str, list] = {}
    for line, row in rows:
        image = (row[columns[0]] or "").strip()
        if not image:
            raise CxrcamError(f"boxes.file={path} line {line}: empty {columns[0]!r}; every row needs an image path")
        label = (row[label_column] or "").strip() if label_column else None
        box = _box(path, line, fmt, columns[1:], [(row[c] or "").strip() for c in columns[1:]])
        boxes.setdefault(image + settings["path_suffix"], []).append((label, box))
    return BoxFile(str(path), len(rows), boxes)


def _box(path: Path, line: int, fmt: str, names: list[str], fields: list[str]) -> Box | None:
    """One row's box as (x_min, y_min, x_max, y_max); None for a row whose coordinates are all empty."""
    if not any(fields):
        return None
    try:
        values = [float(v) for v in fields]
    except ValueError:
        values = []
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise CxrcamError(f"boxes.file={path} line {line}: coordinates {dict(zip(names, fields, strict=True))} are not "
                          "four numbers (leave all four empty for an image without a finding)")
    a, b, c, d = values
    if fmt == "xywh":
        if c < 0 or d < 0:
            raise CxrcamError(f"boxes.file={path} line {line}: negative width or height "
                              f"{dict(zip(names[2:], fields[2:], strict=True))}")
        return a, b, a + c, b + d
    if c < a or d < b:
        raise CxrcamError(f"boxes.file={path} line {line}: a negative width or height ({names[2]} < {names[0]} or "
                          f"{names[3]} < {names[1]}: {dict(zip(names, fields, strict=True))}); "
                          "is it boxes.format=xywh?")
    return a, b, c, d


def match_images(box_paths, image_paths: list[str]) -> dict[str, list[str]]:
    """{image path: the box paths that name it}: a box path names an image when it equals the image
    path's last components (as many as the box path has). One box path naming two evaluated images
    is an error: which one its box belongs to cannot be told."""
    tails: dict[int, dict[tuple, list[str]]] = {}
    found: dict[str, list[str]] = {}
    for box_path in box_paths:
        parts = PurePosixPath(box_path.replace("\\", "/")).parts
        if len(parts) not in tails:
            tails[len(parts)] = {}
            for image in image_paths:
                tails[len(parts)].setdefault(Path(image).parts[-len(parts):], []).append(image)
        images = tails[len(parts)].get(parts, [])
        if len(images) > 1:
            raise CxrcamError(f"box path {box_path!r} names {len(images)} evaluated images, {images[0]} and "
                              f"{images[1]}; give the box file's paths with their folders so that each names one")
        if images:
            found.setdefault(images[0], []).append(box_path)
    return found


@lru_cache(maxsize=64)
def _sampled_centres(side: int, size: int) -> np.ndarray:
    """The centre of the original pixel each of ``size`` resized pixels takes its value from, along
    one axis of ``side`` pixels: PIL's own nearest-neighbour resize (as read_mask's) of an index ramp."""
    ramp = Image.fromarray(np.arange(side, dtype=np.int32)[None, :])
    return np.asarray(ramp.resize((size, 1), Image.Resampling.NEAREST))[0] + 0.5


def box_region(boxes: list[Box], shape: tuple[int, int], size: int) -> tuple[np.ndarray, int]:
    """The union of ``boxes`` (pixels of an original image of ``shape``, height x width) on the model's
    (size, size) input, and how many boxes reached outside the image (clipped to it)."""
    height, width = shape
    x, y = _sampled_centres(width, size), _sampled_centres(height, size)
    region = np.zeros((size, size), bool)
    clipped = 0
    for x0, y0, x1, y1 in boxes:
        clipped += x0 < 0 or y0 < 0 or x1 > width or y1 > height  # no centre lies outside: clipped as drawn
        region |= ((y >= y0) & (y < y1))[:, None] & ((x >= x0) & (x < x1))[None, :]
    return region, clipped


def add_boxes(samples: list[Sample], box_file: BoxFile) -> None:
    """Set each sample's ``boxes``: the union of its boxes (of its true class, where the file has a
    label column) at the model's input size; an empty region where it is listed without one; left
    None where it is not listed."""
    matched = match_images(box_file.boxes, [s.path for s in samples])
    if not matched:
        example = next(iter(box_file.boxes))
        raise CxrcamError(f"boxes.file={box_file.file}: none of its {box_file.n_rows} rows names an evaluated image "
                          f"(e.g. row path {example!r}, image {samples[0].path}); its paths (+ boxes.path_suffix) "
                          "must be the images' file names or their last folders and file names")
    clipped = 0
    for s in samples:
        if s.path in matched:
            boxes = [box for key in matched[s.path] for label, box in box_file.boxes[key]
                     if box is not None and label in (None, s.label)]
            s.boxes, n = box_region(boxes, s.shape or s.gray.shape, s.gray.shape[0])
            clipped += n
    if clipped:
        log.warning("%d box(es) of %s reach outside their image: clipped to it", clipped, box_file.file)


def box_truth(samples: list[Sample], file: str | None) -> BoxTruth | None:
    """How many evaluated images the box file gives a region, lists without a finding, or leaves out."""
    if file is None:
        return None
    listed = [s.boxes for s in samples if s.boxes is not None]
    with_boxes = sum(bool(b.any()) for b in listed)
    return BoxTruth(str(file), with_boxes, len(listed) - with_boxes, len(samples) - len(listed))
