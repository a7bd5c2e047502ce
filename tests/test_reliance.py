"""The causal test (cxrcam.evaluation.reliance): the edits, the paired changes and their verdicts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cxrcam.data.synthetic import CLASSES, ensure_synthetic
from cxrcam.evaluation.evaluator import causal_test
from cxrcam.evaluation.imputation import linear_system, solve
from cxrcam.evaluation.reliance import (balanced_accuracy, inpaint, lungs_only, model_probabilities,
                                        paired_balanced_accuracy_change, reliance, removal_mask)
from cxrcam.evaluation.results import Alteration, Interval, loss_against
from cxrcam.evaluation.samples import Sample, load_samples
from cxrcam.loaded_run import LoadedRun
from cxrcam.models.simple_cnn import SimpleCNN

BOOTSTRAP = {"n_resamples": 200, "level": 0.95, "seed": 0}
SETTINGS = {"marker_dilation_px": 2, "outside_lungs": "mean"}
BACKGROUND, MARKER = 40, 255


def test_the_removal_mask_grows_by_the_dilation_in_every_direction():
    mask = np.zeros((16, 16), bool)
    mask[8, 8] = True
    grown = removal_mask(mask, 2)
    rows, cols = np.nonzero(grown)
    assert grown.sum() == 25 and (rows.min(), rows.max(), cols.min(), cols.max()) == (6, 10, 6, 10)
    same = removal_mask(mask, 0)
    assert (same == mask).all() and same is not mask


def full_image_fill(gray: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The noise-free imputation solved over the whole image: what the cropped solve must equal."""
    a, b, pixels = linear_system(mask, gray[None].astype(np.float32))
    flat = gray.astype(np.float32).reshape(-1)
    flat[pixels] = solve(a, b)[:, 0]
    return np.clip(np.rint(flat), 0, 255).reshape(gray.shape).astype(np.uint8)


@pytest.mark.parametrize("box", [(slice(3, 10), slice(5, 12)), (slice(0, 5), slice(0, 4)),
                                 (slice(27, 32), slice(20, 32))], ids=["inside", "top-left corner", "bottom edge"])
def test_inpainting_solves_the_marker_crop_as_the_whole_image_and_leaves_the_rest(box):
    gray = np.random.default_rng(0).integers(0, 256, (32, 32)).astype(np.uint8)
    mask = np.zeros(gray.shape, bool)
    mask[box] = True
    filled = inpaint(gray, mask)
    assert (filled[~mask] == gray[~mask]).all()
    assert (filled == full_image_fill(gray, mask)).all() and (filled[mask] != gray[mask]).any()


def test_inpainting_fills_a_marker_with_its_surroundings():
    gray = np.full((32, 32), BACKGROUND, np.uint8)
    gray[2:8, 3:9] = MARKER
    mask = np.zeros(gray.shape, bool)
    mask[2:8, 3:9] = True
    assert (inpaint(gray, mask) == BACKGROUND).all()
    ramp = np.tile(np.arange(0, 64, 2, dtype=np.uint8), (32, 1))  # a linear ramp is continued exactly
    assert (inpaint(np.where(mask, MARKER, ramp).astype(np.uint8), mask) == ramp).all()


def test_inpainting_without_a_mask_or_without_surroundings():
    gray = np.arange(16, dtype=np.uint8).reshape(4, 4)
    assert (inpaint(gray, np.zeros((4, 4), bool)) == gray).all()
    assert (inpaint(gray, np.ones((4, 4), bool)) == 0).all()


def test_lungs_only_keeps_the_lungs_and_fills_the_rest_with_one_value():
    gray = np.arange(36, dtype=np.uint8).reshape(6, 6)
    lungs = np.zeros((6, 6), bool)
    lungs[1:5, 1:3] = lungs[1:5, 4:6] = True
    outside_mean = gray[~lungs].mean()
    for outside, fill in (("mean", int(np.rint(outside_mean))), ("black", 0)):
        kept = lungs_only(gray, lungs, outside)
        assert (kept[lungs] == gray[lungs]).all() and (kept[~lungs] == fill).all()
    assert outside_mean == pytest.approx(17.1) and (lungs_only(gray, lungs, "mean")[~lungs] == 17).all()
    assert (lungs_only(gray, np.ones((6, 6), bool), "black") == gray).all()


def test_balanced_accuracy_is_the_mean_recall_of_the_classes_present():
    predicted, targets = np.array([0, 0, 0, 1, 2, 2]), np.array([0, 0, 1, 1, 1, 1])
    assert balanced_accuracy(predicted, targets) == (2 / 2 + 1 / 4) / 2  # class 2 is predicted, never true


def marked_images(n: int, label: int) -> list[tuple[np.ndarray, np.ndarray, int]]:
    out = []
    for _ in range(n):
        gray = np.full((16, 16), BACKGROUND, np.uint8)
        gray[1:4, 1:4] = MARKER
        mask = np.zeros(gray.shape, bool)
        mask[1:4, 1:4] = True
        out.append((gray, mask, label))
    return out


def marker_reader(grays: list[np.ndarray]) -> np.ndarray:
    """A model that reads the marker only: class 0's probability is the corner's brightness."""
    p0 = np.array([g[1:4, 1:4].mean() / 255 for g in grays])
    return np.stack([p0, 1 - p0], axis=1)


def test_removing_the_marker_a_model_reads_changes_its_scores_by_known_amounts():
    images = marked_images(4, 0) + marked_images(2, 1)
    grays, markers, targets = (list(x) for x in zip(*images, strict=True))
    plain_image = np.full((16, 16), BACKGROUND, np.uint8)
    grays += [plain_image, plain_image]
    markers += [None, np.zeros((16, 16), bool)]  # no mask, an empty mask: neither enters
    targets += [0, 0]
    lungs = [None] * 5 + [np.ones((16, 16), bool)] * 3
    result = reliance(marker_reader, marker_reader(grays), grays, targets, markers, lungs, SETTINGS, BOOTSTRAP)
    removed = result.markers_removed
    assert removed.n_images == 6 and (removed.accuracy, removed.edited_accuracy) == (4 / 6, 2 / 6)
    assert (removed.balanced_accuracy, removed.edited_balanced_accuracy) == (0.5, 0.5)
    assert removed.accuracy_change.mean == pytest.approx(-1 / 3, abs=1e-12)
    assert removed.true_class_probability == pytest.approx(4 / 6, abs=1e-12)
    change = (4 * (BACKGROUND / 255 - 1) + 2 * (1 - BACKGROUND / 255)) / 6
    assert removed.true_class_probability_change.mean == pytest.approx(change, abs=1e-12)
    assert removed.accuracy_change.n == removed.balanced_accuracy_change.n == 6
    # the per-image differences, resampled: bootstrap_ci over -1 (class 0) and +1 (class 1)
    differences = np.array([-1.0] * 4 + [1.0] * 2)
    draws = np.random.default_rng(0).integers(0, 6, size=(200, 6))
    low, high = np.percentile(differences[draws].mean(axis=1), [2.5, 97.5])
    assert (removed.accuracy_change.low, removed.accuracy_change.high) == (low, high)
    assert removed.verdict == "shows no measurable reliance on the markers"  # the interval holds 0
    # lungs only: 3 images with a lung mask covering everything: nothing changes
    kept = result.lungs_only
    assert kept.n_images == 3 and kept.accuracy_change == Interval(0.0, 0.0, 0.0, 3)
    assert result.alterations == [removed, kept]


def test_an_edit_no_image_has_a_mask_for_is_none():
    grays = [np.zeros((4, 4), np.uint8)]
    result = reliance(marker_reader, marker_reader(grays), grays, [0], [None], [np.zeros((4, 4), bool)], SETTINGS,
                      BOOTSTRAP)
    assert result.markers_removed is None and result.lungs_only is None and result.alterations == []


def test_the_balanced_accuracy_change_recomputes_both_sides_on_each_resample():
    targets = np.array([0, 0, 0, 1, 1])
    before, after = np.array([0, 0, 0, 0, 0]), np.array([0, 1, 1, 1, 1])
    change = paired_balanced_accuracy_change(before, after, targets, BOOTSTRAP)
    assert change.mean == pytest.approx((1 / 3 + 1) / 2 - 0.5, abs=1e-12) and change.n == 5
    draws = np.random.default_rng(0).integers(0, 5, size=(200, 5))
    by_hand = [balanced_accuracy(after[d], targets[d]) - balanced_accuracy(before[d], targets[d]) for d in draws]
    assert (change.low, change.high) == tuple(np.percentile(by_hand, [2.5, 97.5]))
    one = paired_balanced_accuracy_change(before[:1], after[:1], targets[:1], BOOTSTRAP)
    assert one == Interval(0.0, 0.0, 0.0, 1)


def alteration(edit: str, low: float, high: float) -> Alteration:
    change = Interval((low + high) / 2, low, high, 10)
    return Alteration(edit, 10, 0.9, 0.5, 0.9, 0.5, 0.8, 0.4, change, change, change)


def test_the_verdict_follows_the_accuracy_change_against_zero():
    assert alteration("markers_removed", -0.5, -0.1).verdict == "relies on the markers"
    assert alteration("markers_removed", 0.1, 0.3).verdict == "does better without the markers"
    assert alteration("lungs_only", -0.2, 0.0).verdict == "shows no measurable reliance on what lies outside the lungs"
    assert alteration("lungs_only", -0.3, -0.01).verdict == "relies on what lies outside the lungs"
    big, small = alteration("markers_removed", -0.8, -0.5), alteration("markers_removed", -0.2, 0.0)
    assert loss_against(big, small) == "a clearly larger loss" and loss_against(small, big) == "a clearly smaller loss"
    assert loss_against(big, alteration("markers_removed", -0.5, 0.0)) == "no clearly different loss"


def test_model_probabilities_batch_the_images_as_one_pass_would():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3)).eval()
    run = LoadedRun(Path("run/checkpoints/best.pt"), {"normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}, model)
    grays = [np.random.default_rng(i).integers(0, 256, (8, 8)).astype(np.uint8) for i in range(5)]
    expected = model(run.batch(grays)).softmax(1).detach().numpy()
    assert np.allclose(model_probabilities(run, 2)(grays), expected, atol=1e-6)


@pytest.fixture()
def one_thread():
    """Small convolutions on a shared machine: one thread is several times faster than two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def as_input(grays: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(grays)).float()[:, None].repeat(1, 3, 1, 1) / 255


def train_simple_cnn(samples, steps: int = 100) -> nn.Module:
    """A SimpleCNN (global pooling, no dropout) fitted for ``steps`` Adam steps of 16 images."""
    torch.manual_seed(0)
    model = SimpleCNN(len(CLASSES), dropout=0.0, pooled_size=1)
    optimiser = torch.optim.Adam(model.parameters(), 1e-3)
    x = as_input([s.gray for s in samples])
    y = torch.tensor([CLASSES.index(s.label) for s in samples])
    draws = torch.Generator().manual_seed(0)
    for _ in range(steps):
        batch = torch.randint(0, len(y), (16,), generator=draws)
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


def phantoms(root: Path) -> list:
    return load_samples([(str(p), c) for c in CLASSES for p in sorted((root / c / "images").glob("*.png"))], 32)[0]


@pytest.mark.slow
def test_a_confounded_model_loses_more_than_its_control_when_the_markers_are_removed(tmp_path, one_thread):
    """A SimpleCNN trained where the marker comes with every COVID phantom and no other, against its
    control trained on the same phantoms with the marker on half of every class, both on the
    confounded set's held-out marked images (4 COVID): removing the markers costs the first its
    accuracy and leaves the second's as it was."""
    confounded = phantoms(ensure_synthetic(tmp_path / "confounded", 8, 64, 1, marker={"COVID": 1.0}))
    control = phantoms(ensure_synthetic(tmp_path / "control", 8, 64, 1, marker={c: 0.5 for c in CLASSES}))
    held_out = [s for s in confounded[0::2] if s.marker.any()]
    results = {}
    for name, training in (("confounded", confounded[1::2]), ("control", control[1::2])):
        model = train_simple_cnn(training)

        def predict(grays, model=model):
            with torch.no_grad():
                return model(as_input(grays)).softmax(1).numpy()

        grays = [s.gray for s in held_out]
        results[name] = reliance(predict, predict(grays), grays, [CLASSES.index(s.label) for s in held_out],
                                 [s.marker for s in held_out], [s.lungs for s in held_out], SETTINGS,
                                 BOOTSTRAP).markers_removed
    confounded, control = results["confounded"], results["control"]
    assert confounded.n_images == control.n_images == 4
    assert confounded.accuracy_change.mean < control.accuracy_change.mean
    assert confounded.verdict == "relies on the markers"
    assert control.verdict == "shows no measurable reliance on the markers"
    assert loss_against(confounded, control) == "a clearly larger loss"


def test_reporting_words_and_files_the_causal_test():
    from test_results import evaluation

    from cxrcam.evaluation.results import AuditRow, Reliance, ShortcutAudit, plain
    from cxrcam.reporting.evaluation_report import conclusions
    from cxrcam.reporting.metrics_files import csv_rows

    tested = evaluation(reliance=Reliance(alteration("markers_removed", -0.6, -0.2),
                                          alteration("lungs_only", -0.1, 0.1)))
    lines = conclusions([tested], None)
    assert lines[-2:] == [
        "Causal test, resnet50, markers removed (10 images): accuracy 0.900 -> 0.500, change -0.40 [-0.60, -0.20]: "
        "relies on the markers.",
        "Causal test, resnet50, lungs only (10 images): accuracy 0.900 -> 0.500, change 0.00 [-0.10, 0.10]: "
        "shows no measurable reliance on what lies outside the lungs."]
    assert [r[5:9] for r in csv_rows(tested)[-6:-3]] == [
        ["accuracy_change:markers_removed", "all", "-0.4000", "-0.6000"],
        ["balanced_accuracy_change:markers_removed", "all", "-0.4000", "-0.6000"],
        ["true_class_probability_change:markers_removed", "all", "-0.4000", "-0.6000"]]
    data = plain(tested)["reliance"]
    assert data["markers_removed"]["verdict"] == "relies on the markers" and data["lungs_only"]["n_images"] == 10
    assert plain(evaluation())["reliance"] is None

    clean = evaluation(model="simple_cnn", reliance=Reliance(alteration("markers_removed", -0.1, 0.0), None))
    audit = ShortcutAudit(6, 8, [AuditRow("confounded", tested), AuditRow("clean", clean)], [])
    assert conclusions([], audit)[-1] == (
        "Causal test, shortcut audit: with the markers removed the confounded resnet50's accuracy changes by -0.40 "
        "[-0.60, -0.20], a clearly larger loss than the clean simple_cnn's -0.05 [-0.10, 0.00]: the confounded model "
        "relies on the markers.")


class CornerReader(nn.Module):
    """marker_reader as a network: class 0 when the top-left corner is bright, else class 1."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))  # a run's device is its parameters'

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        corner = x[:, 0, 1:4, 1:4].mean(dim=(1, 2))
        return self.scale * torch.stack([corner, -corner], dim=1)


def test_the_causal_test_removes_the_datasets_markers_where_it_has_them_else_the_detected_ones():
    meta = {"normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}, "class_names": ["A", "B"]}
    run = LoadedRun(Path("run/checkpoints/best.pt"), meta, CornerReader().eval())
    (gray, corner, _), = marked_images(1, 0)
    empty = np.zeros_like(corner)
    samples = [Sample("a.png", "A", gray, None, None, None, detected_marker=corner),  # no marker masks: detected
               Sample("b.png", "A", gray, None, None, None, detected_marker=corner),
               Sample("c.png", "A", gray, None, None, empty, detected_marker=corner),  # the dataset's mask: none
               Sample("d.png", "A", gray, None, None, corner, detected_marker=empty)]  # the dataset's mask wins
    cfg = {"causal": {"enabled": True, **SETTINGS}, "batch_size": 2,
           "bootstrap": {"n_resamples": 50, "level": 0.95}, "seed": 0}
    probs = model_probabilities(run, 2)([s.gray for s in samples])
    removed = causal_test(run, samples, probs, cfg).markers_removed
    assert (removed.n_images, removed.accuracy, removed.edited_accuracy) == (3, 1.0, 0.0)
    assert causal_test(run, samples, probs, {**cfg, "causal": {**cfg["causal"], "enabled": False}}) is None
