"""python -m cxrcam.segment and evaluate's lungs=: a lung segmenter trained here (seconds) fills in
the lung masks of a dataset that has none."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cxrcam.checkpoint import FORMAT_VERSION
from cxrcam.data.images import read_grayscale
from cxrcam.errors import CxrcamError
from cxrcam.evaluate import evaluate
from cxrcam.config import validate_segment_config
from cxrcam.evaluation.anatomy import read_mask, sibling_mask_path
from cxrcam.evaluation.results import Interval, PredictedLungs
from cxrcam.evaluation.samples import LungPrediction, load_samples, predicted_lungs
from cxrcam.segment import segment
from cxrcam.segmentation.data import lung_mask_pairs
from cxrcam.segmentation.segmenter import dice, load_segmenter, postprocess

from conftest import compose_config, train_tiny

TINY_SEGMENT = ["data=covid_radiography", "data.image_size=32", "data.batch_size=8", "data.val_fraction=0.25",
                "data.test_fraction=0.25", "trainer.epochs=4", "trainer.lr=1e-2", "device=cpu"]
CHEAP_EVALUATE = ["device=cpu", "faithfulness.n_images=4", "faithfulness.percentiles=[50]", "sanity.n_images=4",
                  "bootstrap.n_resamples=100"]


def segment_config(root: Path, *extra: str) -> dict:
    return compose_config("segment", *TINY_SEGMENT, f"data.root={root}", *extra)


def drop_lung_masks(root: Path) -> None:
    for folder in root.glob("*/masks"):
        shutil.rmtree(folder)


@pytest.fixture(scope="module")
def segmenter_run(tiny_synthetic, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("segment")
    segment(segment_config(tiny_synthetic), run_dir)
    return run_dir


def test_segment_writes_a_weights_only_checkpoint_and_metrics(segmenter_run):
    metrics = json.loads((segmenter_run / "metrics.json").read_text())
    assert set(metrics) == {"val_dice", "test_dice", "test_dice_min", "best_epoch", "epochs", "train_wall_s",
                            "image_size", "num_parameters", "device", "training_data", "history"}
    history = metrics["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    assert set(history[0]) == {"epoch", "train_loss", "val_dice", "lr", "epoch_s", "wall_s"}
    dices = [row["val_dice"] for row in history]
    assert metrics["val_dice"] == max(dices) and metrics["best_epoch"] == dices.index(max(dices)) + 1
    assert metrics["training_data"]["n_train"] == 16 and metrics["training_data"]["n_test"] == 8
    assert metrics["num_parameters"] == 121033 and metrics["image_size"] == 32 and metrics["device"] == "cpu"

    payload = torch.load(segmenter_run / "checkpoints" / "best.pt", weights_only=True)
    meta = payload["meta"]
    assert meta["kind"] == "lung_segmenter" and meta["format_version"] == FORMAT_VERSION
    assert meta["architecture"] == {"name": "unet", "base_channels": 8, "depth": 3}
    assert meta["image_size"] == 32 and meta["normalization"] == {"mean": 0.5, "std": 0.25}
    assert meta["val_dice"] == metrics["val_dice"] and meta["test_dice"] == metrics["test_dice"]
    assert meta["epoch"] == metrics["best_epoch"]
    assert meta["training_data"] == {"name": "covid_radiography", "root": metrics["training_data"]["root"],
                                     "classes": ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"],
                                     "n_train": 16, "n_val": 8, "n_test": 8}
    with open(segmenter_run / "split.csv") as f:
        splits = [r["split"] for r in csv.DictReader(f)]
    assert {split: splits.count(split) for split in ("train", "val", "test")} == {"train": 16, "val": 8, "test": 8}


def test_the_same_seed_trains_the_same_segmenter_on_the_same_split(segmenter_run, tiny_synthetic, tmp_path):
    segment(segment_config(tiny_synthetic), tmp_path / "again")
    assert (tmp_path / "again" / "split.csv").read_text() == (segmenter_run / "split.csv").read_text()
    first, again = (torch.load(d / "checkpoints" / "best.pt", weights_only=True)["state_dict"]
                    for d in (segmenter_run, tmp_path / "again"))
    assert all(torch.equal(first[key], again[key]) for key in first)
    segment(segment_config(tiny_synthetic, "seed=1"), tmp_path / "other")
    assert (tmp_path / "other" / "split.csv").read_text() != (segmenter_run / "split.csv").read_text()


def test_the_checkpoint_predicts_masks_of_any_size_and_its_test_dice_is_reproduced(segmenter_run):
    segmenter = load_segmenter(segmenter_run / "checkpoints" / "best.pt", torch.device("cpu"))
    with open(segmenter_run / "split.csv") as f:
        tests = [r["path"] for r in csv.DictReader(f) if r["split"] == "test"]
    mask, own = segmenter.predict(read_grayscale(tests[0]), 48)
    assert mask.shape == (48, 48) and own.shape == (32, 32) and mask.dtype == own.dtype == bool
    scores = [dice(segmenter.predict(read_grayscale(p), 32)[1], read_mask(sibling_mask_path(p, "masks"), 32))
              for p in tests]
    metrics = json.loads((segmenter_run / "metrics.json").read_text())
    assert np.mean(scores) == pytest.approx(metrics["test_dice"], abs=1e-9)
    assert min(scores) == pytest.approx(metrics["test_dice_min"], abs=1e-9)


def test_images_without_a_lung_mask_are_left_out(tiny_dataset_copy, caplog):
    (tiny_dataset_copy / "Normal" / "masks" / "Normal-3.png").unlink()
    pairs = lung_mask_pairs(tiny_dataset_copy, ["COVID", "Normal"])
    assert len(pairs) == 15 and all(mask.parent.name == "masks" and mask.name == image.name
                                    for image, _, mask in pairs)
    assert [label for _, label, _ in pairs].count("Normal") == 7
    assert "1 of 16 images have no lung mask in masks/ and are left out" in caplog.text


def test_postprocess_keeps_the_two_largest_parts_and_fills_their_holes():
    mask = np.zeros((20, 20), bool)
    mask[2:12, 1:6] = mask[2:12, 12:18] = True  # two lungs
    mask[5, 3] = False  # a hole
    mask[17, 9] = True  # a speck
    expected = np.zeros((20, 20), bool)
    expected[2:12, 1:6] = expected[2:12, 12:18] = True
    assert np.array_equal(postprocess(mask), expected)


def test_dice():
    a, b = np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    assert dice(a, b) == 1.0
    a[0, :] = True
    b[0, :2] = True
    assert dice(a, b) == 2 * 2 / 6


def test_load_samples_predicts_lungs_where_the_mode_says(segmenter_run, tiny_dataset_copy):
    segmenter = load_segmenter(segmenter_run / "checkpoints" / "best.pt", torch.device("cpu"))
    images = [(str(tiny_dataset_copy / c / "images" / f"{c}-1.png"), c) for c in ("COVID", "Normal")]
    (tiny_dataset_copy / "Normal" / "masks" / "Normal-1.png").unlink()
    own, _ = load_samples(images, 48)
    assert own[0].lungs is not None and own[1].lungs is None and not any(s.lungs_predicted for s in own)

    missing, _ = load_samples(images, 48, LungPrediction(segmenter, "missing"))
    assert np.array_equal(missing[0].lungs, own[0].lungs) and missing[0].lung_dice is None
    assert [s.lungs_predicted for s in missing] == [False, True]
    assert np.array_equal(missing[1].lungs, segmenter.predict(read_grayscale(images[1][0]), 48)[0])

    every, _ = load_samples(images, 48, LungPrediction(segmenter, "all"))
    mask, at_own_size = segmenter.predict(read_grayscale(images[0][0]), 48)
    assert [s.lungs_predicted for s in every] == [True, True] and np.array_equal(every[0].lungs, mask)
    expected = dice(at_own_size, read_mask(tiny_dataset_copy / "COVID" / "masks" / "COVID-1.png", 32))
    assert every[0].lung_dice == expected and every[1].lung_dice is None

    summary = predicted_lungs(every, LungPrediction(segmenter, "all"), {"n_resamples": 10, "level": 0.9, "seed": 0})
    assert summary == PredictedLungs(str(segmenter.path), "all", 32, "covid_radiography", segmenter.meta["val_dice"],
                                     segmenter.meta["test_dice"], 2, 2, Interval(expected, expected, expected, 1))
    assert predicted_lungs(missing, LungPrediction(segmenter, "missing"),
                           {"n_resamples": 10, "level": 0.9, "seed": 0}).agreement is None


def test_a_degenerate_predicted_lung_mask_is_warned_about(segmenter_run, tiny_synthetic, monkeypatch, caplog):
    segmenter = load_segmenter(segmenter_run / "checkpoints" / "best.pt", torch.device("cpu"))
    monkeypatch.setattr(segmenter, "predict", lambda gray, size: (np.zeros((size, size), bool),
                                                                  np.zeros((32, 32), bool)))
    path = str(tiny_synthetic / "COVID" / "images" / "COVID-2.png")
    (sample,), _ = load_samples([(path, "COVID")], 48, LungPrediction(segmenter, "all"))
    assert sample.lung_dice == 0.0 and not sample.lungs.any()
    assert f"the lung mask predicted for {path} is empty (no lung drawn)" in caplog.text


def test_the_default_configs():
    cfg = compose_config("segment")
    validate_segment_config(cfg)
    assert (cfg["data"]["name"], cfg["data"]["image_size"], cfg["data"]["batch_size"]) == ("synthetic", 64, 16)
    assert cfg["model"] == {"base_channels": 8, "depth": 3}
    assert cfg["trainer"] == {"epochs": 8, "lr": 3e-3, "weight_decay": 1e-4}
    evaluate_cfg = compose_config("evaluate")
    assert (evaluate_cfg["lungs"], evaluate_cfg["lungs_mode"]) == (None, "missing")


@pytest.fixture(scope="module")
def classifier_without_lung_masks(tiny_synthetic, tmp_path_factory) -> Path:
    """A tiny classifier's checkpoint, then the lung masks of its dataset removed."""
    root = Path(shutil.copytree(tiny_synthetic, tmp_path_factory.mktemp("nolungs") / "dataset"))
    checkpoint = train_tiny(root, tmp_path_factory.mktemp("run"))
    drop_lung_masks(root)
    return checkpoint


@pytest.mark.slow
def test_evaluate_predicts_lung_masks_where_the_dataset_has_none(classifier_without_lung_masks, segmenter_run,
                                                                tmp_path):
    segmenter = segmenter_run / "checkpoints" / "best.pt"
    evaluate(compose_config("evaluate", *CHEAP_EVALUATE, f"ckpt={classifier_without_lung_masks}"), tmp_path / "a")
    without = json.loads((tmp_path / "a" / "cam_metrics.json").read_text())
    assert "lung_share" not in without["models"][0]["scores"] and "predicted_lungs" not in without
    assert without["models"][0]["masks"]["lungs"] == 0

    evaluate(compose_config("evaluate", *CHEAP_EVALUATE, f"ckpt={classifier_without_lung_masks}",
                            f"lungs={segmenter}"), tmp_path / "b")
    found = json.loads((tmp_path / "b" / "cam_metrics.json").read_text())
    assert found["models"][0]["scores"]["lung_share"]["overall"]["n"] == 8
    assert found["models"][0]["masks"]["lungs"] == 8
    meta = torch.load(segmenter, weights_only=True)["meta"]
    assert found["predicted_lungs"] == {"checkpoint": str(segmenter), "mode": "missing", "image_size": 32,
                                        "trained_on": "covid_radiography", "val_dice": meta["val_dice"],
                                        "test_dice": meta["test_dice"], "n_images": 8, "n_predicted": 8,
                                        "agreement": None}
    report = (tmp_path / "b" / "report.md").read_text()
    assert (f"Lung masks are predicted for 8 of the 8 evaluated images (lungs_mode=missing: the images without a "
            f"lung mask of their own) by the segmenter {segmenter}, a U-Net at 32 px trained from scratch on "
            f"covid_radiography data (Dice on its validation split {meta['val_dice']:.3f}, test "
            f"{meta['test_dice']:.3f})") in report
    assert "Lung masks are predicted" not in (tmp_path / "a" / "report.md").read_text()


@pytest.mark.slow
def test_lungs_mode_all_scores_the_dataset_masks_against_the_predictions(tiny_synthetic, segmenter_run, tmp_path):
    checkpoint = train_tiny(tiny_synthetic, tmp_path / "run")
    segmenter_path = segmenter_run / "checkpoints" / "best.pt"
    evaluate(compose_config("evaluate", *CHEAP_EVALUATE, f"ckpt={checkpoint}", f"lungs={segmenter_path}",
                            "lungs_mode=all"), tmp_path / "eval")
    found = json.loads((tmp_path / "eval" / "cam_metrics.json").read_text())["predicted_lungs"]
    segmenter = load_segmenter(segmenter_path, torch.device("cpu"))
    with open(tmp_path / "run" / "split.csv") as f:
        tests = [r["path"] for r in csv.DictReader(f) if r["split"] == "test"]
    scores = [dice(segmenter.predict(read_grayscale(p), 32)[1], read_mask(sibling_mask_path(p, "masks"), 32))
              for p in tests]
    assert found["mode"] == "all" and found["n_predicted"] == 8 and found["agreement"]["n"] == 8
    assert found["agreement"]["mean"] == pytest.approx(np.mean(scores), abs=1e-12)
    assert found["agreement"]["low"] <= found["agreement"]["mean"] <= found["agreement"]["high"]
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "(lungs_mode=all: every image, in place of the dataset's own lung masks)" in report
    assert f"the predictions reach a mean Dice of {found['agreement']['mean']:.2f} [" in report


def test_segment_refuses_a_dataset_without_lung_masks(tiny_dataset_copy, tmp_path):
    drop_lung_masks(tiny_dataset_copy)
    with pytest.raises(CxrcamError) as error:
        segment(segment_config(tiny_dataset_copy), tmp_path / "run")
    assert str(error.value) == (
        f"no lung masks in {tiny_dataset_copy}: a segmenter trains on <class>/masks/<name> beside "
        f"<class>/images/<name> (e.g. {tiny_dataset_copy / 'COVID' / 'masks'}); use a dataset that has them, such "
        "as the COVID-19 Radiography Database or data=synthetic")


@pytest.mark.parametrize(("override", "message"), [
    ("data.image_size=36", "data.image_size=36 must be a multiple of 8 (2**model.depth): the U-Net halves it 3 "
                           "times and joins the halves again"),
    ("model.depth=0", "model.depth=0 must be a whole number >= 1"),
    ("trainer.epochs=0", "trainer.epochs=0 must be a whole number >= 1"),
    ("trainer.lr=0", "trainer.lr=0 must be a number > 0"),
])
def test_segment_config_errors(tiny_synthetic, tmp_path, override, message):
    with pytest.raises(CxrcamError, match=f"^{message.replace('*', '[*]').replace('(', '[(]').replace(')', '[)]')}$"):
        segment(segment_config(tiny_synthetic, override), tmp_path / "run")


def test_evaluate_lungs_errors(segmenter_run, classifier_without_lung_masks, tmp_path):
    def error(*overrides: str) -> str:
        with pytest.raises(CxrcamError) as raised:
            evaluate(compose_config("evaluate", *CHEAP_EVALUATE, f"ckpt={classifier_without_lung_masks}", *overrides),
                     tmp_path / "eval")
        return str(raised.value)

    missing = tmp_path / "nothing.pt"
    assert error(f"lungs={missing}") == (f"lungs={missing} is not a file; pass the checkpoints/best.pt that "
                                         "python -m cxrcam.segment wrote")
    assert error(f"lungs={classifier_without_lung_masks}") == (
        f"lungs={classifier_without_lung_masks} is a simple_cnn classifier's checkpoint; pass the checkpoints/best.pt "
        "that python -m cxrcam.segment wrote")
    segmenter = segmenter_run / "checkpoints" / "best.pt"
    assert error(f"lungs={segmenter}", "lungs_mode=some") == "lungs_mode='some' is not one of ['missing', 'all']"
    assert error("lungs_mode=all") == ("lungs_mode=all needs a segmenter: add lungs=<segment run>/checkpoints/best.pt")
    assert not (tmp_path / "eval" / "cam_metrics.json").exists()


def test_the_command_line_gives_one_line_for_a_dataset_without_masks(tiny_dataset_copy, tmp_path):
    drop_lung_masks(tiny_dataset_copy)
    done = subprocess.run([sys.executable, "-m", "cxrcam.segment", *TINY_SEGMENT, f"data.root={tiny_dataset_copy}",
                           f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1].startswith(f"cxrcam.segment: error: no lung masks in {tiny_dataset_copy}: ")
    assert not (tmp_path / "run" / ".hydra").exists()  # a run that wrote nothing gives its dir back


@pytest.mark.parametrize("data", ["csv", "rsna_pneumonia"])
def test_segment_refuses_a_csv_described_dataset_in_one_line(tmp_path, data):
    cfg = compose_config("segment", *TINY_SEGMENT, f"data={data}", f"data.root={tmp_path}", f"data.csv={tmp_path}/l.csv",
                         "data.classes=[Normal,Lung_Opacity]")
    with pytest.raises(CxrcamError) as raised:
        segment(cfg, tmp_path / "run")
    assert str(raised.value) == (f"data={data} lists images in a CSV, without lung masks; cxrcam.segment trains on "
                                 "<class>/masks/ beside <class>/images/: use data=covid_radiography, data=folder or "
                                 "data=synthetic")
    assert not (tmp_path / "run").exists()
