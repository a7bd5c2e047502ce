"""The COVID-19 Radiography Database as its archive unpacks, in miniature: phantoms from the
project's own renderer, written with the real set's folder names, sizes and stray files, so that
every stage meets the layout users download rather than the one our generator writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cxrcam.data.synthetic import CLASSES, render_phantom

DATASET_FOLDER = "COVID-19_Radiography_Dataset"
IMAGE_SIZE, MASK_SIZE = 299, 256  # the real set: 299 px images, 256 px lung masks of the same name
RGB_CLASSES = ("COVID",)  # both modes occur among the real images; these classes' are stored as RGB
RGB_MASK_CLASSES = ("Lung_Opacity",)  # and these classes' lung masks, to exercise a mask's conversion


def build_radiography_database(parent: Path, n_per_class: int = 5, seed: int = 0) -> Path:
    """``<parent>/COVID-19_Radiography_Dataset/<class>/{images,masks}/<class>-<i>.png`` for the four
    classes ("Viral Pneumonia" with its space), ``<class>.metadata.xlsx`` and ``README.md.txt`` at
    its root, and no lesion masks (the real set has none); returns the dataset folder."""
    root = parent / DATASET_FOLDER
    for index, label in enumerate(CLASSES):
        for folder in ("images", "masks"):
            (root / label / folder).mkdir(parents=True)
        for i in range(1, n_per_class + 1):
            phantom = render_phantom(label, np.random.default_rng([seed, index, i]), IMAGE_SIZE)
            image = Image.fromarray((phantom.image * 255).round().astype(np.uint8))
            lungs = Image.fromarray(phantom.lungs.astype(np.uint8) * 255).resize((MASK_SIZE, MASK_SIZE),
                                                                                 Image.Resampling.NEAREST)
            name = f"{label}-{i}.png"
            (image.convert("RGB") if label in RGB_CLASSES else image).save(root / label / "images" / name)
            (lungs.convert("RGB") if label in RGB_MASK_CLASSES else lungs).save(root / label / "masks" / name)
        (root / f"{label}.metadata.xlsx").write_bytes(b"PK\x03\x04 not really a workbook")
    (root / "README.md.txt").write_text("COVID-19 Radiography Database (miniature test copy)\n")
    return root
