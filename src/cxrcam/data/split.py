"""Deterministic stratified train/val/test split, stored as ``split.csv`` (path, label, split).

Later stages read the same file, so they explain exactly the test images the model never saw.
Each class is shuffled by a generator seeded from (seed, class name): adding a class or images of
another class does not move the images of this one.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import zlib
from pathlib import Path

import numpy as np

from cxrcam.errors import CxrcamError

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
SPLIT_FIELDS = ("path", "label", "split")


def stratified_split(items: list[tuple[Path, str]], val_fraction: float, test_fraction: float,
                     seed: int) -> list[dict]:
    if not (val_fraction >= 0 and test_fraction > 0 and val_fraction + test_fraction < 1):  # so each is below 1
        raise CxrcamError(f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} "
                          "must be fractions in [0, 1) with test > 0 and a sum below 1")
    by_class: dict[str, list[str]] = {}
    for path, label in items:
        by_class.setdefault(label, []).append(str(path))
    rows = []
    for label, paths in sorted(by_class.items()):
        n = len(paths)
        n_test = max(1, round(n * test_fraction))
        n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
        if n - n_test - n_val < 1:
            raise CxrcamError(f"class {label!r} has {n} image(s), too few for a train/val/test split; "
                              "add images or drop the class from data.classes")
        order = np.random.default_rng([seed, zlib.crc32(label.encode())]).permutation(n)
        shuffled = [sorted(paths)[i] for i in order]
        assignment = ["test"] * n_test + ["val"] * n_val + ["train"] * (n - n_test - n_val)
        rows.extend({"path": p, "label": label, "split": s} for p, s in zip(shuffled, assignment, strict=True))
    return rows


def write_split(rows: list[dict], path: str | Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SPLIT_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def read_split(path: str | Path, classes: list[str], key: str = "split_file") -> list[dict]:
    """``key`` is the option through which the user names a split file, for the error message."""
    path = Path(path)
    if not path.is_file():
        raise CxrcamError(f"split file {path} does not exist; set {key} to a split.csv written by cxrcam.train")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or set(rows[0]) != set(SPLIT_FIELDS):
        raise CxrcamError(f"split file {path} must have the columns {', '.join(SPLIT_FIELDS)}")
    unknown = sorted({r["label"] for r in rows} - set(classes))
    bad_split = sorted({r["split"] for r in rows} - set(SPLITS))
    if unknown or bad_split:
        raise CxrcamError(f"split file {path} has labels {unknown} not in data.classes={list(classes)}"
                          f" or splits {bad_split} not in {list(SPLITS)}")
    return rows


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def checkpoint_split_file(meta: dict, checkpoint_path: str | Path, key: str) -> Path:
    """The split.csv a checkpoint was trained on, recognised by its sha256: at the path the
    checkpoint recorded or, for a run dir that was moved, beside the checkpoint (<run>/split.csv).
    Another file at the recorded path (a new run in the old place) is never taken for it."""
    expected = meta["split"]["sha256"]
    recorded = Path(meta["split"]["path"])
    beside = Path(checkpoint_path).absolute().parent.parent / "split.csv"
    for candidate in (recorded, beside):
        if candidate.is_file() and file_sha256(candidate) == expected:
            return candidate
    looked = "; ".join(f"{c} {'holds another split' if c.is_file() else 'does not exist'}"
                       for c in dict.fromkeys((recorded, beside)))
    raise CxrcamError(f"the split.csv that {checkpoint_path} was trained on (sha256 {expected[:12]}) is not found "
                      f"({looked}); pass {key}=<that run's split.csv>")


def split_file_for(meta: dict, checkpoint_path: str | Path, split_file: str | None = None) -> Path:
    """The split explain and evaluate read for a checkpoint: its own (verified), or the one the user
    named with split_file=, which may be another split (e.g. a shared test set) but is said to be,
    since its test images may be this model's training images."""
    if not split_file:
        return checkpoint_split_file(meta, checkpoint_path, "split_file")
    path = Path(split_file)
    if not path.is_file():
        raise CxrcamError(f"split_file={path} does not exist; pass a split.csv written by cxrcam.train")
    if file_sha256(path) != meta["split"]["sha256"]:
        log.warning("split_file=%s is not the split %s was trained on: its images may include that model's "
                    "training images", path, checkpoint_path)
    return path


def split_images(split_file: str, classes: list[str], split: str, max_per_class: int | None,
                 seed: int = 0) -> list[tuple[str, str]]:
    """(path, label) of one split of a split.csv; with ``max_per_class``, a seeded choice per class."""
    rows = [r for r in read_split(split_file, classes) if r["split"] == split]
    if not rows:
        raise CxrcamError(f"split file {split_file} has no {split!r} images; use split=test, val or train")
    chosen = []
    for label in classes:
        paths = sorted(r["path"] for r in rows if r["label"] == label)
        if max_per_class is not None and len(paths) > max_per_class:
            keep = np.random.default_rng([seed, classes.index(label)]).choice(len(paths), max_per_class, replace=False)
            paths = [paths[i] for i in sorted(keep)]
        chosen += [(p, label) for p in paths]
    return chosen
