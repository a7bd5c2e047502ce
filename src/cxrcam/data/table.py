"""Finding the images of each class from a CSV file (``data=csv``): one row per image, or several
that agree (the RSNA Pneumonia Detection Challenge has one row per box).

Gives the same (image path, class) items as :func:`cxrcam.data.layout.discover_images`, so the
scan for unreadable files and the split work alike for both, plus the official split of each image
when the CSV has one. Single-label only: a multi-label value (NIH's ``Effusion|Infiltration``) is
refused rather than guessed at.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from pathlib import Path

from cxrcam.data.split import SPLITS
from cxrcam.errors import CxrcamError

log = logging.getLogger(__name__)
MULTI_LABEL_SEPARATOR = "|"


def _read_rows(csv_path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    if not csv_path.is_file():
        raise CxrcamError(f"data.csv={csv_path} does not exist or is not a file; point it at the CSV that lists "
                          "the images")
    return csv_rows(csv_path, "data.csv", "image")


def csv_rows(csv_path: Path, key: str, row_is: str) -> tuple[list[str], list[tuple[int, dict]]]:
    """The header and each row with its line number (for the messages), or one line saying why not;
    ``key`` is the setting that named the file, ``row_is`` what one row describes."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:  # -sig: a spreadsheet's byte-order mark
            reader = csv.DictReader(f)
            rows = [(reader.line_num, row) for row in reader]
            columns = reader.fieldnames
    except (UnicodeDecodeError, csv.Error) as exc:
        raise CxrcamError(f"{key}={csv_path} is not a UTF-8 CSV file ({exc}); export it as CSV") from None
    if not columns:
        raise CxrcamError(f"{key}={csv_path} is empty; it needs a header row naming its columns, then one row "
                          f"per {row_is}")
    if not rows:
        raise CxrcamError(f"{key}={csv_path} has a header but no rows; it needs one row per {row_is}")
    return list(columns), rows


def _field(row: dict, column: str) -> str:
    return (row.get(column) or "").strip()  # None: a short row


def table_images(csv_path: str | Path, image_dir: str | Path | None, classes: list[str], path_column: str = "path",
                 label_column: str = "label", path_suffix: str = "", split_column: str | None = None,
                 label_map: dict | None = None) -> tuple[list[tuple[Path, str]], dict[Path, str] | None]:
    """(image path, class name) for every image of ``classes`` the CSV lists, in the order of its
    first row, and with ``split_column`` the official split of each image ({path: train|val|test}).

    Paths are ``image_dir / (value + path_suffix)`` (``image_dir`` None: the CSV's folder; an
    absolute value stays as it is). ``label_map`` ({raw: class}, compared as strings so 0 and "0"
    match) maps each raw label first. Rows of one image must agree on its label and split; images
    whose label is not one of ``classes`` are left out with one warning line."""
    csv_path = Path(csv_path)
    image_dir = csv_path.parent if image_dir is None else Path(image_dir)
    columns, rows = _read_rows(csv_path)
    for key, column in (("data.path_column", path_column), ("data.label_column", label_column),
                        ("data.split_column", split_column)):
        if column is not None and column not in columns:
            raise CxrcamError(f"{key}={column!r} is not a column of {csv_path}; its columns: {columns}")
    raw_to_class = {str(raw): str(name) for raw, name in (label_map or {}).items()}
    labels: dict[Path, tuple[str, int]] = {}  # image: (class, the line that first named it)
    splits: dict[Path, str] = {}
    for line, row in rows:
        value = _field(row, path_column)
        if not value:
            raise CxrcamError(f"line {line} of {csv_path} has no image in column {path_column!r}; fill it in or "
                              "delete the row")
        path = (image_dir / f"{value}{path_suffix}").resolve()
        raw = _field(row, label_column)
        label = raw_to_class.get(raw, raw)
        if MULTI_LABEL_SEPARATOR in label:
            raise CxrcamError(f"line {line} of {csv_path} gives image {path} the multi-label value {label!r} in "
                              f"column {label_column!r}; cxrcam trains single-label classifiers: keep one label per "
                              "image (or map such values with data.label_map)")
        first_label, first_line = labels.setdefault(path, (label, line))
        if label != first_label:
            raise CxrcamError(f"image {path} has conflicting labels {first_label!r} (line {first_line}) and "
                              f"{label!r} (line {line}) in {csv_path}; give each image one label")
        if split_column is None:
            continue
        split = _field(row, split_column)
        if split not in SPLITS:
            raise CxrcamError(f"line {line} of {csv_path} puts image {path} in split {split!r} (column "
                              f"{split_column!r}); use {', '.join(SPLITS)}")
        if splits.setdefault(path, split) != split:
            raise CxrcamError(f"image {path} is in split {splits[path]!r} (line {first_line}) and {split!r} "
                              f"(line {line}) of {csv_path}; give each image one split")
    counts = Counter(label for label, _ in labels.values())
    other = {label: n for label, n in sorted(counts.items()) if label not in classes}
    if other:
        log.warning("left out %d image(s) of %s whose label is not in data.classes=%s: %s", sum(other.values()),
                    csv_path, list(classes), other)
    unused = [c for c in classes if c not in counts]
    if unused:
        raise CxrcamError(f"no image in {csv_path} has the label(s) {unused} of data.classes; its labels (images): "
                          f"{dict(sorted(counts.items()))}. Set data.classes, data.label_column or data.label_map")
    items = [(path, label) for path, (label, _) in labels.items() if label in classes]
    if not any(path.is_file() for path, _ in items):
        raise CxrcamError(f"none of the {len(items)} images {csv_path} lists exists (the first would be "
                          f"{items[0][0]}); check data.root (or data.image_dir, the folder its paths are relative "
                          "to) and data.path_suffix")
    return items, ({path: splits[path] for path, _ in items} if split_column is not None else None)
