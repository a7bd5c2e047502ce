"""The predictions table that training (test split) and explain both write."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

import numpy as np


def write_predictions(path: Path, records: Iterable[tuple[str, str | None, np.ndarray]], classes: list[str]) -> None:
    """One row per (image path, true label or None, class probabilities)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "predicted", *[f"p_{c}" for c in classes]])
        for image_path, label, probs in records:
            writer.writerow([image_path, label or "", classes[int(np.argmax(probs))], *[f"{p:.6f}" for p in probs]])
