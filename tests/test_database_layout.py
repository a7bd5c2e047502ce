"""Train, explain and evaluate on the COVID-19 Radiography Database as distributed (in miniature:
tests/radiography_layout.py): 299 px images beside 256 px lung masks, RGB and grayscale files, a
class folder with a space, metadata workbooks and a README that are not images, and no lesion masks."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from cxrcam.evaluate import evaluate
from cxrcam.evaluation.samples import load_samples
from cxrcam.explain import explain

from conftest import TINY_CLASSES, compose_config, train_tiny

N_PER_CLASS = 5  # build_radiography_database's default: 3 train, 1 val, 1 test per class at 0.2 / 0.2
EVERY_IMAGE = {f"{label}-{i}.png": label for label in TINY_CLASSES for i in range(1, N_PER_CLASS + 1)}


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def run_dir(radiography_database, tmp_path_factory) -> Path:
    """One tiny run trained on the dataset folder itself."""
    run = tmp_path_factory.mktemp("run")
    train_tiny(radiography_database, run)
    return run


def test_lung_masks_at_256_px_are_found_for_299_px_images_and_stretched_alike(radiography_database, caplog):
    """A mask is scaled to the model's input as its image is, whatever the two files' sizes and modes."""
    caplog.set_level(logging.WARNING)
    images = [(str(radiography_database / label / "images" / f"{label}-1.png"), label) for label in TINY_CLASSES]
    samples, failures = load_samples(images, 64)
    assert failures == []
    for sample in samples:
        assert sample.gray.shape == sample.lungs.shape == (64, 64), sample.path
        assert sample.lungs.any() and not sample.lungs.all(), sample.path
        assert sample.lesion is None and sample.marker is None
    assert caplog.records == []  # no mask looked wrong (inverted, one lung, empty)


@pytest.mark.slow
def test_training_splits_every_image_with_its_class_and_nothing_else(run_dir):
    rows = read_csv(run_dir / "split.csv")
    assert len(rows) == len(EVERY_IMAGE)  # no mask (same file names), workbook or README among them
    assert {Path(r["path"]).name: r["label"] for r in rows} == EVERY_IMAGE
    assert all(Path(r["path"]).parent.name == "images" and Path(r["path"]).parents[1].name == r["label"]
               for r in rows)
    for label in TINY_CLASSES:
        splits = sorted(r["split"] for r in rows if r["label"] == label)
        assert splits == ["test", "train", "train", "train", "val"], label


@pytest.mark.slow
def test_the_parent_of_the_dataset_folder_is_the_same_root(radiography_database, run_dir, tmp_path):
    """conf/data/covid_radiography.yaml: data.root may be the folder the archive unpacks into."""
    train_tiny(radiography_database.parent, tmp_path)
    assert (tmp_path / "split.csv").read_text() == (run_dir / "split.csv").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("folder", [".", "Viral Pneumonia"])
def test_explaining_a_folder_of_the_dataset_labels_every_image_from_its_class_folder(radiography_database, run_dir,
                                                                                   folder, tmp_path):
    """Folder mode on the whole dataset or on one class folder: the true label comes from the layout."""
    explain(compose_config("explain", f"ckpt={run_dir / 'checkpoints' / 'best.pt'}",
                           f"image={radiography_database / folder}", "device=cpu"), tmp_path)
    rows = read_csv(tmp_path / "predictions.csv")
    expected = {name: label for name, label in EVERY_IMAGE.items() if folder in (".", label)}
    assert len(rows) == len(expected)  # the masks, though named alike, are not explained
    assert {Path(r["path"]).name: r["label"] for r in rows} == expected


@pytest.mark.slow
def test_evaluation_uses_every_lung_mask_and_profiles_every_class(run_dir, tmp_path):
    """The real set has lung masks but no lesion masks: the report must not offer a reference row of n/a."""
    cfg = compose_config("evaluate", f"ckpt={run_dir / 'checkpoints' / 'best.pt'}", "device=cpu",
                         "faithfulness.n_images=4", "faithfulness.percentiles=[50]", "sanity.n_images=4",
                         "bootstrap.n_resamples=100")
    assert evaluate(cfg, tmp_path) == []
    (result,) = json.loads((tmp_path / "cam_metrics.json").read_text())["models"]
    assert result["n_images"] == 4
    assert result["masks"] == {"lungs": 4, "lesion": 0, "marker": 0, "one_lung": 0}
    assert set(result["zone_profiles"]) == set(TINY_CLASSES)
    assert result["scores"]["lung_share"]["overall"]["n"] == 4
    assert np.isfinite(result["scores"]["lung_share"]["overall"]["mean"])
    report = (tmp_path / "report.md").read_text()
    assert "No evaluated image has a lesion mask" in report
    assert "lesion masks (reference)" not in report and "The first row scores the lesion masks" not in report
