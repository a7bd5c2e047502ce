"""README promises that a one-line bug would break without any other test noticing: the test split
is scored with the best checkpoint, the split is checked on resume, macro-F1 is macro, ROAD's
sign, an infinite loss stops training, and no horizontal flip by default."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

import cxrcam.train

from cxrcam.data.batches import ModelInput, draw_augmentation, to_batch
from cxrcam.data.images import load_image
from cxrcam.data.layout import discover_images
from cxrcam.data.split import stratified_split, write_split
from cxrcam.errors import CxrcamError
from cxrcam.evaluation.faithfulness import road_scores
from cxrcam.models import model_from_checkpoint
from cxrcam.train import make_split, train
from cxrcam.training import metrics
from cxrcam.checkpoint import load_checkpoint
from cxrcam.training.metrics import quick_metrics

from conftest import compose_config, run_tiny, tiny_config, train_tiny


def probabilities(checkpoint: Path, paths: list[str]) -> np.ndarray:
    """What a checkpoint predicts for images, computed here from its weights and metadata alone."""
    payload = load_checkpoint(checkpoint)
    meta = payload["meta"]
    images = to_batch([load_image(p, meta["image_size"]) for p in paths], meta["normalization"])
    with torch.no_grad():
        return model_from_checkpoint(payload)(images).softmax(1).numpy()


@pytest.mark.slow
def test_the_test_split_is_scored_with_the_best_checkpoint_not_the_last(tiny_synthetic, tmp_path, monkeypatch):
    scores = iter([0.9, 0.2, 0.1])  # validation macro-F1 per epoch: epoch 1 is the best

    def first_epoch_best(y_true, probs):
        return {**quick_metrics(y_true, probs), "macro_f1": next(scores)}

    monkeypatch.setattr("cxrcam.train.quick_metrics", first_epoch_best)
    report = run_tiny(tiny_synthetic, tmp_path, "trainer.epochs=3")
    assert report["best_epoch"] == 1 and report["best_val_macro_f1"] == 0.9
    assert load_checkpoint(tmp_path / "checkpoints" / "best.pt")["meta"]["epoch"] == 1
    with open(tmp_path / "test_predictions.csv") as f:
        rows = list(csv.DictReader(f))
    written = np.array([[float(r[k]) for k in r if k.startswith("p_")] for r in rows])
    paths = [r["path"] for r in rows]
    best, last = (probabilities(tmp_path / "checkpoints" / name, paths) for name in ("best.pt", "last.pt"))
    assert np.abs(last - best).max() > 1e-3  # the two checkpoints do predict differently
    np.testing.assert_allclose(written, best, atol=1e-5)
    assert report["accuracy"] == pytest.approx(float(np.mean(best.argmax(1) == [
        report["class_names"].index(r["label"]) for r in rows])))


@pytest.mark.slow
def test_resume_refuses_a_split_other_than_its_own(tiny_synthetic, tmp_path):
    first = tmp_path / "a"
    train_tiny(tiny_synthetic, first, "trainer.epochs=1")
    other = tmp_path / "b"
    train_tiny(tiny_synthetic, other, "seed=5")
    assert (first / "split.csv").read_bytes() != (other / "split.csv").read_bytes()
    cfg = tiny_config(tiny_synthetic, "trainer.epochs=2", f"resume={first / 'checkpoints/last.pt'}",
                      f"data.split_file={other / 'split.csv'}")
    with pytest.raises(CxrcamError, match=f"data.split_file={other / 'split.csv'} is not the split the resumed "
                                          "checkpoint was trained on"):
        train(cfg, tmp_path / "resumed")
    assert not (tmp_path / "resumed").exists()


@pytest.mark.slow
def test_resume_refuses_when_images_of_its_split_became_unreadable(tiny_dataset_copy, tmp_path):
    train_tiny(tiny_dataset_copy, tmp_path / "a", "trainer.epochs=1")
    broken = sorted((tiny_dataset_copy / "Normal" / "images").glob("*.png"))[0]
    broken.write_bytes(b"")
    cfg = tiny_config(tiny_dataset_copy, "trainer.epochs=2", f"resume={tmp_path / 'a/checkpoints/last.pt'}")
    with pytest.raises(CxrcamError, match="without the 1 unreadable image\\(s\\) the split differs from the one "
                                          "the resumed checkpoint was trained on; restore those files"):
        train(cfg, tmp_path / "resumed")
    assert not (tmp_path / "resumed" / "checkpoints").exists()


def test_macro_f1_weighs_every_class_alike():
    """8 Normal, 2 COVID, always 'Normal': F1 0.889 for Normal and 0 for COVID, so macro-F1 0.444
    (weighted F1 would be 0.711, accuracy 0.8)."""
    y_true = np.array([1] * 8 + [0] * 2)
    probs = np.tile([0.3, 0.7], (10, 1))
    result = quick_metrics(y_true, probs)
    assert result["macro_f1"] == pytest.approx((2 * 0.8 / 1.8 + 0) / 2)
    assert result["accuracy"] == pytest.approx(0.8) and result["balanced_accuracy"] == pytest.approx(0.5)
    assert metrics.classification_report(y_true, probs, ["COVID", "Normal"])["macro_f1"] == result["macro_f1"]


class QuadrantModel(nn.Module):
    """Class 0's logit is the brightness of the image's top-left quadrant: all it looks at."""

    def forward(self, x):
        evidence = x[:, :, : x.shape[2] // 2, : x.shape[3] // 2].mean(dim=(1, 2, 3))
        return torch.stack([8 * evidence, torch.zeros_like(evidence)], dim=1)


def test_road_is_positive_for_a_cam_on_the_evidence_and_negative_for_its_inverse():
    images = torch.zeros(2, 3, 24, 24)
    images[:, :, :12, :12] = 1.0  # the evidence
    on_evidence = np.zeros((2, 24, 24), np.float32)
    on_evidence[:, :12, :12] = 1.0
    on_evidence += np.linspace(0, 0.01, 24 * 24, dtype=np.float32).reshape(24, 24)  # distinct ranks
    faithful = road_scores(QuadrantModel(), images, on_evidence, [0, 0], [50, 75], seed=0)
    inverted = road_scores(QuadrantModel(), images, 1 - on_evidence, [0, 0], [50, 75], seed=0)
    assert (faithful["morf"] < -0.1).all() and (np.abs(faithful["lerf"]) < 0.05).all()  # removing it hurts
    assert (faithful["combined"] > 0.05).all() and (inverted["combined"] < -0.05).all()
    np.testing.assert_allclose(faithful["combined"], ((faithful["lerf"] - faithful["morf"]) / 2).mean(axis=1))


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_non_finite_loss_stops_training_and_names_epoch_and_step(tiny_synthetic, tmp_path, monkeypatch, value):
    class BreaksInEpochTwo(nn.CrossEntropyLoss):
        calls = 0

        def forward(self, logits, labels):
            BreaksInEpochTwo.calls += 1
            loss = super().forward(logits, labels)
            return loss + float(value) if BreaksInEpochTwo.calls == 4 else loss  # 2 steps per epoch here

    monkeypatch.setattr("cxrcam.train.nn.CrossEntropyLoss", BreaksInEpochTwo)
    with pytest.raises(CxrcamError, match=f"loss became {float(value)} at epoch 2, step 1;"):
        run_tiny(tiny_synthetic, tmp_path, "trainer.epochs=3")
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["training"]["epoch"] == 1


@pytest.mark.parametrize("choice", ["data=synthetic", "data=covid_radiography", "data=folder", "data=csv",
                                    "experiment=demo", "experiment=seed", "experiment=shortcut",
                                    "experiment=shortcut_control"])
def test_no_horizontal_flip_in_any_shipped_config(choice):
    assert compose_config("train", choice)["data"]["augment"]["hflip"] is False


def test_the_training_augmentation_never_flips_unless_asked():
    images = torch.zeros(30, 1, 16, 16, dtype=torch.uint8)
    images[:, :, :, :4] = 255  # bright on the image left only
    still = {"rotation": 0, "translate": 0, "scale": 0, "brightness": 0, "contrast": 0}
    model_input = ModelInput([0.5] * 3, [0.5] * 3)
    plain = model_input(images[:1])
    generator = torch.Generator().manual_seed(0)
    unflipped = model_input(images, draw_augmentation(30, {**still, "hflip": False}, generator))
    same = lambda x, y: torch.allclose(x, y, atol=1e-5)  # noqa: E731  (resampling at identity is exact to float)
    assert all(same(x, plain[0]) for x in unflipped)
    flipped = model_input(images, draw_augmentation(30, {**still, "hflip": True}, generator))
    assert any(same(x, plain[0].flip(-1)) for x in flipped) and any(same(x, plain[0]) for x in flipped)


def test_a_sweeper_is_given_the_validation_score_never_the_test_score(monkeypatch):
    """A sweeper that optimised the test score would select on the test set."""
    report = {"best_val_macro_f1": 0.71, "macro_f1": 0.93, "accuracy": 0.95, "balanced_accuracy": 0.9}
    monkeypatch.setattr("cxrcam.train.run_stage", lambda *args: report)
    assert cxrcam.train.main(OmegaConf.create({})) == 0.71


def test_a_split_without_every_class_in_train_val_and_test_is_refused(tiny_synthetic, tmp_path):
    """Validation without a class cannot pick a checkpoint for it; a test split without one cannot score it."""
    data = tiny_config(tiny_synthetic)["data"]
    rows = stratified_split(discover_images(tiny_synthetic, data["classes"]), 0.2, 0.2, seed=0)
    write_split([r for r in rows if not (r["split"] == "val" and r["label"] == "Normal")], tmp_path / "given.csv")
    (tmp_path / "run").mkdir()
    with pytest.raises(CxrcamError, match=re.escape("the val split has no image of class(es) ['Normal']; add "
                                                    "images or change data.val_fraction / data.test_fraction")):
        make_split(data, 0, tmp_path / "run", tmp_path / "given.csv", None)
    rows_made, skipped = make_split(data, 0, tmp_path / "run", None, None)  # the stratified split keeps them all
    assert skipped == [] and {(r["split"], r["label"]) for r in rows_made} == {
        (s, c) for s in ("train", "val", "test") for c in data["classes"]}
