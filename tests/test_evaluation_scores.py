"""The evaluation's per-image scores and summaries, the images it loads, the sanity check and the
faithfulness scores, each on hand-made inputs whose answer is computed by hand or by an independent
reference (SciPy's Spearman correlation, a NumPy SSIM, pytorch-grad-cam's ROAD classes)."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
from scipy.stats import spearmanr
from torch import nn

from cxrcam.evaluation.anatomy import ZONES
from cxrcam.evaluation.faithfulness import confidence_change, road_scores
from cxrcam.evaluation.samples import Sample, balanced_subset, load_samples
from cxrcam.evaluation.sanity import cascading_randomisation, randomisation_blocks, rank_correlation, reinitialise, ssim
from cxrcam.evaluation.scores import image_scores, lesion_reference, mean_zone_profiles, summarise
from cxrcam.evaluation.stats import bootstrap_ci
from cxrcam.explanation.methods import make_cam
from cxrcam.models import build_model, get_layer

THRESHOLDS = {"bilateral_min_ratio": 0.3, "unilateral_min_share": 0.75, "diffuse_min_evenness": 0.7}
BOOTSTRAP = {"n_resamples": 200, "level": 0.8, "seed": 3}


def assert_same(actual, expected):
    """Equal dicts/lists of floats and arrays: the same keys in the same order, the same types
    (any float for a float), the same values (floats to 1e-9)."""
    if isinstance(expected, float):  # np.float64 is a float too; a bool or an int is not
        assert isinstance(actual, float), (actual, expected)
        assert actual == pytest.approx(expected, rel=1e-9, abs=1e-12, nan_ok=True)
        return
    assert type(actual) is type(expected), (actual, expected)
    if isinstance(expected, dict):
        assert list(actual) == list(expected)
        for key in expected:
            assert_same(actual[key], expected[key])
    elif isinstance(expected, list | tuple):
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected, strict=True):
            assert_same(a, e)
    elif isinstance(expected, np.ndarray):
        assert actual.dtype == expected.dtype and actual.shape == expected.shape
        np.testing.assert_allclose(actual, expected, rtol=1e-9, atol=1e-12)
    else:
        assert actual == expected


# ---------------------------------------------------------------------------------------------------
# scores.py: one image's scores


def two_lungs() -> np.ndarray:
    """60 x 60: two 30 x 12 lungs, rows 15-44, the patient's right at columns 10-21, left at 38-49.
    With peripheral_from 0.25 the right lung's peripheral part is columns 10-18 (9 of 12 columns:
    lateral = 1 - (c - 10 + 0.5) / 12 >= 0.25), so each lung's zones are 10 x 3 (central) and
    10 x 9 (peripheral) pixels: 30 and 90 of the 720 lung pixels."""
    lungs = np.zeros((60, 60), bool)
    lungs[15:45, 10:22] = True
    lungs[15:45, 38:50] = True
    return lungs


SETTINGS = {"tolerance_px": 1.0, "peripheral_from": 0.25, "thresholds": THRESHOLDS}
AREA_PROFILE = np.array([1 / 24, 1 / 8] * 6)  # central, peripheral for each of the 6 heights x sides
RIGHT_UPPER_PERIPHERAL = ZONES.index("upper-right-peripheral")


def lesion_at(rows: slice, cols: slice) -> np.ndarray:
    lesion = np.zeros((60, 60), bool)
    lesion[rows, cols] = True
    return lesion


def test_zone_layout_the_hand_computed_scores_rely_on():
    assert ZONES[:2] == ("upper-right-central", "upper-right-peripheral") and len(ZONES) == 12


def test_image_scores_of_an_image_with_lungs_lesion_and_marker():
    """CAM 1.0 at (20, 17) (right lung: upper, peripheral, in the lesion) and 0.5 at (50, 30) (below
    the lungs, on the marker). Lesion rows 18-21 x columns 16-18 (12 px), marker rows 50-51 x
    columns 28-31 (8 px)."""
    cam = np.zeros((60, 60), np.float32)
    cam[20, 17], cam[50, 30] = 1.0, 0.5
    marker = lesion_at(slice(50, 52), slice(28, 32))
    sample = Sample("x.png", "COVID", np.zeros((60, 60), np.uint8), two_lungs(),
                    lesion_at(slice(18, 22), slice(16, 19)), marker)
    criteria = ["upper", "peripheral", "unilateral", "bilateral", "diffuse"]
    scores = image_scores(cam, sample, {**SETTINGS, "criteria": criteria})
    profile = np.zeros(12)
    profile[RIGHT_UPPER_PERIPHERAL] = 1.0
    # all mass in one zone of area 1/8: evenness 1 - (7/8 + 7/8) / 2 = 1/8
    expected = {
        "lung_share": 1 / 1.5, "lung_share_flat": 720 / 3600, "zone_profile": profile,
        "area_profile": AREA_PROFILE,
        "pattern:upper": 1.0, "pattern_value:upper": 1.0,
        "pattern:peripheral": 1.0, "pattern_value:peripheral": 1.0,
        "pattern:unilateral": 1.0, "pattern_value:unilateral": 1.0,
        "pattern:bilateral": 0.0, "pattern_value:bilateral": 0.0,
        "pattern:diffuse": 0.0, "pattern_value:diffuse": 1 / 8,
        # the peak is in the lesion; 1 px of tolerance grows the 4 x 3 lesion to 12 + 2 * 4 + 2 * 3 px;
        # Otsu splits the zeros from the two non-zero pixels, 1 of them in the lesion: IoU 1 / 13;
        # the lesion lies in one zone of 90 px
        "pointing": 1.0, "pointing_chance": 12 / 3600,
        "pointing_tolerant": 1.0, "pointing_tolerant_chance": 26 / 3600,
        "energy": 1 / 1.5, "otsu_iou": 1 / 13,
        "zone_hit": 1.0, "zone_hit_chance": 90 / 3600,
        "marker_share": 0.5 / 1.5, "marker_share_flat": 8 / 3600,
        "marker_peak": 0.0, "marker_peak_chance": 8 / 3600,  # the peak is in the lung, not on the marker
    }
    assert_same(scores, expected)


def test_image_scores_judge_patterns_with_the_given_thresholds():
    """A CAM spread evenly over both lungs' peripheral zones: 'diffuse' (evenness 1 - (6/24 + 6 *
    (1/6 - 1/8)) / 2 = 3/4) passes at 0.7 and fails at 0.8; 'bilateral' (ratio 1) passes."""
    lungs = two_lungs()
    cam = np.zeros((60, 60), np.float32)
    cam[15:45, 10:19] = 1.0
    cam[15:45, 41:50] = 1.0
    sample = Sample("x.png", "COVID", np.zeros((60, 60), np.uint8), lungs, None, None)
    strict = {**THRESHOLDS, "diffuse_min_evenness": 0.8, "bilateral_min_ratio": 1.0}
    for thresholds, diffuse in ((THRESHOLDS, 1.0), (strict, 0.0)):
        scores = image_scores(cam, sample, {**SETTINGS, "thresholds": thresholds,
                                            "criteria": ["diffuse", "bilateral"]})
        assert_same({k: v for k, v in scores.items() if k.startswith("pattern")},
                    {"pattern:diffuse": diffuse, "pattern_value:diffuse": 0.75,
                     "pattern:bilateral": 1.0, "pattern_value:bilateral": 1.0})


def test_image_scores_without_lungs_have_no_anatomy_and_no_zone_hit():
    cam = np.zeros((60, 60), np.float32)
    cam[20, 17] = 1.0
    lesion = lesion_at(slice(18, 22), slice(16, 19))
    expected = {"pointing": 1.0, "pointing_chance": 12 / 3600, "pointing_tolerant": 1.0,
                "pointing_tolerant_chance": 26 / 3600, "energy": 1.0, "otsu_iou": 1 / 12}
    for lungs in (None, np.zeros((60, 60), bool)):
        sample = Sample("x.png", "COVID", np.zeros((60, 60), np.uint8), lungs, lesion, None)
        assert_same(image_scores(cam, sample, {**SETTINGS, "criteria": ["upper"]}), expected)


def test_image_scores_without_a_lesion_or_marker_have_only_attribution():
    cam = np.zeros((60, 60), np.float32)
    cam[40, 39] = 2.0  # patient's left lung (columns 38-49), lower third; columns 38-40 are central at 0.25
    profile = np.zeros(12)
    profile[ZONES.index("lower-left-central")] = 1.0
    expected = {"lung_share": 1.0, "lung_share_flat": 0.2, "zone_profile": profile, "area_profile": AREA_PROFILE,
                "pattern:lower": 1.0, "pattern_value:lower": 1.0}
    empty = np.zeros((60, 60), bool)
    for lesion, marker in ((None, None), (empty, empty)):
        sample = Sample("x.png", "Normal", np.zeros((60, 60), np.uint8), two_lungs(), lesion, marker)
        assert_same(image_scores(cam, sample, {**SETTINGS, "criteria": ["lower"]}), expected)


def test_image_scores_cut_the_zones_where_peripheral_from_says():
    """At 0.5 the right lung's peripheral half is columns 10-15, so column 17 is central."""
    cam = np.zeros((60, 60), np.float32)
    cam[20, 17] = 1.0
    sample = Sample("x.png", "COVID", np.zeros((60, 60), np.uint8), two_lungs(), None, None)
    scores = image_scores(cam, sample, {**SETTINGS, "peripheral_from": 0.5, "criteria": []})
    profile = np.zeros(12)
    profile[ZONES.index("upper-right-central")] = 1.0
    assert_same(scores, {"lung_share": 1.0, "lung_share_flat": 0.2, "zone_profile": profile,
                         "area_profile": np.full(12, 1 / 12)})


# ---------------------------------------------------------------------------------------------------
# scores.py: summaries


def test_summarise_groups_every_scalar_score_by_class_with_bootstrap_intervals():
    records = [{"b": 1.0, "a": 0.0, "zone_profile": np.ones(12)},
               {"b": 0.0, "a": 1.0},
               {"b": 0.5},
               {"b": 0.25, "a": 0.5, "name": np.float64(2.0)},
               {"b": 1.0}]
    labels = ["COVID", "COVID", "Normal", "COVID", "Normal"]
    classes = ["COVID", "Lung_Opacity", "Normal"]

    def ci(values):
        return bootstrap_ci(values, 200, 0.8, 3)

    expected = {
        "a": {"overall": ci([0.0, 1.0, 0.5]), "per_class": {"COVID": ci([0.0, 1.0, 0.5])}},
        "b": {"overall": ci([1.0, 0.0, 0.5, 0.25, 1.0]),
              "per_class": {"COVID": ci([1.0, 0.0, 0.25]), "Normal": ci([0.5, 1.0])}},
        "name": {"overall": ci([2.0]), "per_class": {"COVID": ci([2.0])}},
    }
    summary = summarise(records, labels, classes, BOOTSTRAP)
    assert_same(summary, expected)
    assert summary["b"]["per_class"]["Normal"]["mean"] == 0.75 and summary["a"]["overall"]["n"] == 3
    # the interval follows the bootstrap settings: a wider level widens it
    wide = summarise(records, labels, classes, {**BOOTSTRAP, "level": 0.99})["b"]["overall"]
    assert wide == ci([1.0, 0.0, 0.5, 0.25, 1.0]) | {"low": wide["low"], "high": wide["high"]}
    assert wide["low"] < summary["b"]["overall"]["low"] and wide["high"] > summary["b"]["overall"]["high"]


@pytest.mark.parametrize("setting, value", [("n_resamples", 7), ("seed", 4)])
def test_summarise_passes_each_bootstrap_setting_on(setting, value):
    values = [0.0, 1.0, 0.3, 0.9, 0.2]
    records = [{"s": v} for v in values]
    summary = summarise(records, ["A"] * 5, ["A"], {**BOOTSTRAP, setting: value})
    settings = {**BOOTSTRAP, setting: value}
    expected = bootstrap_ci(values, settings["n_resamples"], settings["level"], settings["seed"])
    assert summary == {"s": {"overall": expected, "per_class": {"A": expected}}}
    assert expected != bootstrap_ci(values, BOOTSTRAP["n_resamples"], BOOTSTRAP["level"], BOOTSTRAP["seed"])


def test_summarise_of_no_records_is_empty():
    assert summarise([], [], ["A"], BOOTSTRAP) == {}


def test_summarise_needs_one_label_per_record():
    with pytest.raises(ValueError):
        summarise([{"s": 1.0}, {"s": 0.0}], ["A"], ["A"], BOOTSTRAP)


def test_mean_zone_profiles_average_each_class_rounded_to_five_places():
    def profile(*shares):
        return np.array([*shares, *[0.0] * (12 - len(shares))])

    records = [{"zone_profile": profile(1.0), "area_profile": profile(0.5, 0.5)},
               {"zone_profile": profile(0.0, 1.0), "area_profile": profile(0.5, 0.5)},
               {"zone_profile": profile(0.0, 0.0, 1.0), "area_profile": profile(0.0, 1.0)},
               {"pointing": 1.0},
               {"zone_profile": profile(1 / 3, 2 / 3), "area_profile": profile(1.0)}]
    labels = ["COVID", "COVID", "COVID", "Normal", "Viral"]
    out = mean_zone_profiles(records, labels, ["COVID", "Normal", "Viral", "Lung_Opacity"])
    assert out == {
        "COVID": {"cam": dict(zip(ZONES, [0.33333, 0.33333, 0.33333] + [0.0] * 9, strict=True)),
                  "area": dict(zip(ZONES, [0.33333, 0.66667] + [0.0] * 10, strict=True))},
        "Viral": {"cam": dict(zip(ZONES, [0.33333, 0.66667] + [0.0] * 10, strict=True)),
                  "area": dict(zip(ZONES, [1.0] + [0.0] * 11, strict=True))},
    }
    with pytest.raises(ValueError):
        mean_zone_profiles(records, labels[:-1], ["COVID"])


def test_lesion_reference_scores_the_lesion_masks_themselves():
    """Two COVID lesions, one in the right upper zone and one in the left lower zone (both
    peripheral at 0.25); Normal has no expected pattern, and images without both masks are left out."""
    gray = np.zeros((60, 60), np.uint8)
    upper_right = lesion_at(slice(18, 22), slice(11, 15))
    lower_left = lesion_at(slice(38, 42), slice(46, 50))
    samples = [Sample("a.png", "COVID", gray, two_lungs(), upper_right, None),
               Sample("b.png", "COVID", gray, two_lungs(), lower_left, None),
               Sample("c.png", "COVID", gray, None, upper_right, None),
               Sample("d.png", "COVID", gray, np.zeros((60, 60), bool), upper_right, None),
               Sample("e.png", "COVID", gray, two_lungs(), None, None),
               Sample("f.png", "COVID", gray, two_lungs(), np.zeros((60, 60), bool), None),
               Sample("g.png", "Normal", gray, two_lungs(), upper_right, None)]
    patterns = {"COVID": ["upper", "peripheral", "bilateral"]}
    out = lesion_reference(samples, {**SETTINGS, "peripheral_from": 0.25}, patterns, ["COVID", "Normal"], BOOTSTRAP)

    def ci(values):
        return bootstrap_ci(values, 200, 0.8, 3)

    expected = {key: {"overall": ci(values), "per_class": {"COVID": ci(values)}} for key, values in [
        ("pattern:bilateral", [0.0, 0.0]), ("pattern:peripheral", [1.0, 1.0]), ("pattern:upper", [1.0, 0.0]),
        ("pattern_value:bilateral", [0.0, 0.0]), ("pattern_value:peripheral", [1.0, 1.0]),
        ("pattern_value:upper", [1.0, 0.0])]}
    assert_same(out, expected)


def test_lesion_reference_judges_with_the_given_settings():
    """Columns 16-18 of the right lung are peripheral at 0.25 and central at 0.5."""
    gray = np.zeros((60, 60), np.uint8)
    samples = [Sample("a.png", "COVID", gray, two_lungs(), lesion_at(slice(18, 22), slice(16, 19)), None)]
    for peripheral_from, agrees in ((0.25, 1.0), (0.5, 0.0)):
        out = lesion_reference(samples, {**SETTINGS, "peripheral_from": peripheral_from},
                               {"COVID": ["peripheral"]}, ["COVID"], BOOTSTRAP)
        assert out["pattern:peripheral"]["overall"] == {"mean": agrees, "low": agrees, "high": agrees, "n": 1}


# ---------------------------------------------------------------------------------------------------
# samples.py


def write_png(path, pixels: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return str(path)


def test_load_samples_reads_each_image_with_the_masks_beside_it(tmp_path, caplog, capsys):
    """16 px files loaded at 8 px: a mask drawn in 2 x 2 blocks shrinks (nearest) to known pixels."""
    image = (np.arange(256).reshape(16, 16)).astype(np.uint8)
    lungs16 = np.zeros((16, 16), np.uint8)
    lungs16[4:12, 2:6] = lungs16[4:12, 10:14] = 255
    lesion16 = np.zeros((16, 16), np.uint8)
    lesion16[4:6, 2:4] = 255
    a = write_png(tmp_path / "COVID" / "images" / "a.png", image)
    write_png(tmp_path / "COVID" / "masks" / "a.png", lungs16)
    write_png(tmp_path / "COVID" / "lesion_masks" / "a.png", lesion16)
    write_png(tmp_path / "COVID" / "marker_masks" / "a.png", np.zeros((16, 16), np.uint8))
    b = write_png(tmp_path / "Normal" / "images" / "b.png", 255 - image)  # no masks at all
    c = write_png(tmp_path / "loose" / "c.png", image)  # not in the database layout

    with caplog.at_level(logging.WARNING, logger="cxrcam.evaluation.samples"):
        samples, failures = load_samples([(a, "COVID"), (b, "Normal"), (c, "Normal")], 8)

    assert failures == []
    assert [(s.path, s.label) for s in samples] == [(a, "COVID"), (b, "Normal"), (c, "Normal")]
    lungs = np.zeros((8, 8), bool)
    lungs[2:6, 1:3] = lungs[2:6, 5:7] = True
    lesion = np.zeros((8, 8), bool)
    lesion[2, 1] = True
    first = samples[0]
    assert first.gray.dtype == np.uint8 and first.gray.shape == (8, 8)
    np.testing.assert_array_equal(first.gray, np.asarray(Image.fromarray(image).resize((8, 8), Image.BILINEAR)))
    np.testing.assert_array_equal(first.lungs, lungs)
    np.testing.assert_array_equal(first.lesion, lesion)
    np.testing.assert_array_equal(first.marker, np.zeros((8, 8), bool))
    assert all(s.lungs is None and s.lesion is None and s.marker is None for s in samples[1:])
    np.testing.assert_array_equal(samples[2].gray, first.gray)
    # a lung mask of 32 of 64 pixels, an empty marker mask: nothing to warn about
    assert caplog.records == []
    err = capsys.readouterr().err
    assert "loading images and masks: 100%" in err and "3/3" in err and "img/s" in err


def test_load_samples_warns_about_each_suspicious_mask(tmp_path, caplog):
    a = write_png(tmp_path / "COVID" / "images" / "a.png", np.zeros((8, 8), np.uint8))
    lungs = write_png(tmp_path / "COVID" / "masks" / "a.png", np.zeros((8, 8), np.uint8))
    lesion = write_png(tmp_path / "COVID" / "lesion_masks" / "a.png", np.full((8, 8), 255, np.uint8))
    marker = write_png(tmp_path / "COVID" / "marker_masks" / "a.png", np.full((8, 8), 255, np.uint8))
    with caplog.at_level(logging.WARNING, logger="cxrcam.evaluation.samples"):
        samples, failures = load_samples([(a, "COVID")], 8)
    assert failures == [] and len(samples) == 1
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("cxrcam.evaluation.samples", logging.WARNING, f"lung mask {lungs} is empty (no lung drawn)"),
        ("cxrcam.evaluation.samples", logging.WARNING,
         f"lesion mask {lesion} covers 100% of the image (all white: inverted, or not a lesion mask?)"),
        ("cxrcam.evaluation.samples", logging.WARNING,
         f"marker mask {marker} covers 100% of the image (all white: inverted, or not a marker mask?)"),
    ]


def test_load_samples_leaves_out_unreadable_files_and_names_them(tmp_path, caplog):
    good = write_png(tmp_path / "COVID" / "images" / "good.png", np.full((8, 8), 7, np.uint8))
    broken = tmp_path / "COVID" / "images" / "broken.png"
    broken.write_bytes(b"not a png")
    bad_mask = write_png(tmp_path / "COVID" / "images" / "bad_mask.png", np.zeros((8, 8), np.uint8))
    (tmp_path / "COVID" / "lesion_masks").mkdir()
    (tmp_path / "COVID" / "lesion_masks" / "bad_mask.png").write_bytes(b"garbage")
    last = write_png(tmp_path / "Normal" / "images" / "last.png", np.full((8, 8), 9, np.uint8))
    with caplog.at_level(logging.ERROR, logger="cxrcam.evaluation.samples"):
        samples, failures = load_samples([(good, "COVID"), (str(broken), "COVID"), (bad_mask, "COVID"),
                                          (last, "Normal")], 8)
    assert [s.path for s in samples] == [good, last] and failures == [str(broken), bad_mask]
    assert samples[1].gray.tolist() == [[9] * 8] * 8
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert len(messages) == 2 and all(level == logging.ERROR for level, _ in messages)
    assert messages[0][1].startswith(f"cannot read image {broken}: ")
    assert messages[1][1].startswith(f"cannot read mask {tmp_path / 'COVID' / 'lesion_masks' / 'bad_mask.png'}: ")


def reference_subset(labels, n, seed):
    """Round robin over the classes in order of first appearance, each in its seeded permuted order."""
    rng = np.random.default_rng(seed)
    order = {c: list(rng.permutation([i for i, lab in enumerate(labels) if lab == c])) for c in dict.fromkeys(labels)}
    chosen = []
    for k in range(max(len(q) for q in order.values())):
        chosen += [int(q[k]) for q in order.values() if k < len(q)]
    return sorted(chosen[:n])


LABELS = ["B", "A", "A", "B", "C", "A", "A", "B", "A", "A"]  # A: 1 2 5 6 8 9, B: 0 3 7, C: 4


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 7, 9, 10, 11, 50])
@pytest.mark.parametrize("seed", [0, 1, 5])
def test_balanced_subset_takes_the_classes_in_turn(n, seed):
    assert balanced_subset(LABELS, n, seed) == reference_subset(LABELS, n, seed)


def test_balanced_subset_by_hand():
    """The classes in order of first appearance (B, A, C), each shuffled by one seeded generator:
    3 images take the first of each; 10 or more take all."""
    rng = np.random.default_rng(0)
    b, a = rng.permutation([0, 3, 7]).tolist(), rng.permutation([1, 2, 5, 6, 8, 9]).tolist()
    assert balanced_subset(LABELS, 3) == sorted([b[0], a[0], 4])
    assert balanced_subset(LABELS, 5) == sorted([b[0], a[0], 4, b[1], a[1]])
    assert balanced_subset(LABELS, 10) == list(range(10)) == balanced_subset(LABELS, 11)
    assert balanced_subset(LABELS, 3) == balanced_subset(LABELS, 3, 0) != balanced_subset(LABELS, 3, 1)
    assert balanced_subset([], 4) == [] and balanced_subset(["A"], 3, 0) == [0]
    assert all(type(i) is int for i in balanced_subset(LABELS, 5))


# ---------------------------------------------------------------------------------------------------
# sanity.py


def reference_ssim(a: np.ndarray, b: np.ndarray, sigma: float = 1.5, data_range: float = 1.0) -> float:
    """SSIM with a truncated (4 sigma) Gaussian window applied by explicit separable convolution over
    symmetric padding, population (co)variances: Wang et al. 2004's mean SSIM."""
    radius = int(4 * sigma + 0.5)
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-x**2 / (2 * sigma**2))
    kernel /= kernel.sum()

    def blur(img):
        padded = np.pad(img, radius, mode="symmetric")
        rows = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="valid"), 1, padded)
        return np.apply_along_axis(lambda c: np.convolve(c, kernel, mode="valid"), 0, rows)

    a, b = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b, cov = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2, blur(a * b) - mu_a * mu_b
    return float(np.mean((2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))))


def test_ssim_of_two_constant_maps_by_hand():
    """No variance anywhere: SSIM = (2 x y + c1) / (x^2 + y^2 + c1), c1 = (0.01 * data_range)^2."""
    ones, zeros = np.ones((9, 9), np.float32), np.zeros((9, 9), np.float32)
    assert ssim(ones, zeros) == pytest.approx(1e-4 / 1.0001, rel=1e-9)
    assert ssim(ones, zeros, data_range=2.0) == pytest.approx(4e-4 / 1.0004, rel=1e-9)
    assert ssim(ones, np.full((9, 9), 0.5)) == pytest.approx((1 + 1e-4) / (1.25 + 1e-4), rel=1e-9)


@pytest.mark.parametrize("kwargs", [{}, {"sigma": 1.0}, {"data_range": 2.0}, {"sigma": 0.7, "data_range": 0.5}])
def test_ssim_matches_a_reference_implementation(kwargs):
    rng = np.random.default_rng(1)
    a = rng.random((20, 17)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.3, a.shape), 0, 1)
    assert ssim(a, b, **kwargs) == pytest.approx(reference_ssim(a, b, **kwargs), rel=1e-9)
    assert ssim(a, 1 - a, **kwargs) == pytest.approx(reference_ssim(a, 1 - a, **kwargs), rel=1e-9)


def test_rank_correlation_is_spearmans_rho_with_ties():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 4, (10, 10)).astype(np.float32)  # many ties
    b = a + rng.integers(0, 3, (10, 10))
    assert rank_correlation(a, b) == pytest.approx(spearmanr(a.ravel(), b.ravel())[0], rel=1e-12)
    assert rank_correlation(a, -b) == pytest.approx(-spearmanr(a.ravel(), b.ravel())[0], rel=1e-12)


def test_rank_correlation_of_maps_whose_ranks_have_unit_spread():
    """Ranks (1.5, 1.5, 3.5, 3.5) have standard deviation exactly 1; they still rank something:
    rho = corr((-1, -1, 1, 1), (-1.5, -0.5, 0.5, 1.5)) = 4 / sqrt(4 * 5) = 2 / sqrt(5)."""
    halves, ramp = np.array([[0.0, 0.0], [1.0, 1.0]]), np.array([[0.0, 1.0], [2.0, 3.0]])
    assert rank_correlation(halves, ramp) == pytest.approx(2 / np.sqrt(5), rel=1e-12)
    assert rank_correlation(ramp, halves) == pytest.approx(2 / np.sqrt(5), rel=1e-12)


@pytest.mark.parametrize("first_constant", [True, False])
def test_rank_correlation_with_a_constant_map_is_zero(first_constant):
    a, constant = np.random.default_rng(0).random((6, 6)), np.full((6, 6), 0.3)
    pair = (constant, a) if first_constant else (a, constant)
    assert rank_correlation(*pair) == 0.0


class Stages(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 2, 3)
        self.act = nn.ReLU()
        self.body = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)))
        self.head = nn.Linear(2, 1)


def test_randomisation_blocks_are_the_parameter_holding_stages_output_end_first():
    assert randomisation_blocks(Stages()) == ["head", "body.2", "body.0", "stem"]
    assert randomisation_blocks(build_model("simple_cnn", 4, 32)) == [
        "classifier.4", "classifier.1", "features.3", "features.2", "features.1", "features.0"]


def test_reinitialise_draws_what_a_fresh_block_would_and_resets_batchnorm_statistics():
    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Sequential(nn.Linear(3, 2)))
    with torch.no_grad():
        for p in block.parameters():
            p.fill_(7.0)
    block[1].running_mean.fill_(3.0)
    block[1].running_var.fill_(5.0)
    block[1].num_batches_tracked.fill_(9)
    torch.manual_seed(4)
    reinitialise(block)
    torch.manual_seed(4)
    fresh = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Sequential(nn.Linear(3, 2)))
    assert list(block.state_dict()) == list(fresh.state_dict())
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in block.state_dict().items())
    assert block[1].running_var.tolist() == [1.0, 1.0] and int(block[1].num_batches_tracked) == 0


class TinyCNN(nn.Module):
    """SimpleCNN's layout (features and classifier Sequentials of stages) at a fraction of its cost."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()),
                                      nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(8, 6), nn.ReLU(), nn.Dropout(), nn.Linear(6, 3))

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)))


TINY_BLOCKS = ["classifier.4", "classifier.1", "features.1", "features.0"]


def reference_cascade(model, images, targets, seed):
    """The cascade done by hand: re-initialise the stages from the output end in turn (seeded), and
    compare each Grad-CAM with the trained model's by Spearman's rho and SSIM."""
    reference = make_cam("gradcam", model, model.features[1])(images, targets)[0].numpy()
    randomised = copy.deepcopy(model)
    rows = [{"block": "trained", "rank_correlation": 1.0, "ssim": 1.0}]
    torch.manual_seed(seed)
    for block in TINY_BLOCKS:
        for layer in randomised.get_submodule(block).modules():
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters()
        cams = make_cam("gradcam", randomised, randomised.features[1])(images, targets)[0].numpy()
        rhos = [0.0 if np.ptp(r) == 0 or np.ptp(c) == 0 else spearmanr(r.ravel(), c.ravel())[0]
                for r, c in zip(reference, cams, strict=True)]
        rows.append({"block": block, "rank_correlation": float(np.mean(rhos)),
                     "ssim": float(np.mean([reference_ssim(r, c) for r, c in zip(reference, cams, strict=True)]))})
    return rows


def assert_rows_close(rows, expected):
    assert [r["block"] for r in rows] == [e["block"] for e in expected]
    for row, exp in zip(rows, expected, strict=True):
        assert list(row) == ["block", "rank_correlation", "ssim"]
        assert type(row["rank_correlation"]) is float and type(row["ssim"]) is float
        assert row["rank_correlation"] == pytest.approx(exp["rank_correlation"], rel=1e-6, abs=1e-9)
        assert row["ssim"] == pytest.approx(exp["ssim"], rel=1e-6, abs=1e-9)


@pytest.fixture(scope="module")
def cascade_setup():
    torch.manual_seed(0)
    model = TinyCNN()
    model(torch.randn(8, 3, 16, 16))  # running statistics that a re-initialisation resets
    model.eval()
    assert randomisation_blocks(model) == TINY_BLOCKS
    return model, torch.randn(3, 3, 16, 16), [0, 1, 2]


def make_gradcam(model):
    return make_cam("gradcam", model, get_layer(model, "features.1"))


def test_cascading_randomisation_matches_the_cascade_done_by_hand(cascade_setup):
    model, images, targets = cascade_setup
    before = copy.deepcopy(model.state_dict())
    torch.manual_seed(11)
    untouched = torch.rand(4)
    torch.manual_seed(11)
    rows = cascading_randomisation(model, make_gradcam, images, targets)  # seed omitted: 0
    assert torch.equal(torch.rand(4), untouched)  # the caller's random stream is left alone
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the model too
    assert_rows_close(rows, reference_cascade(model, images, targets, seed=0))
    assert rows[0] == {"block": "trained", "rank_correlation": 1.0, "ssim": 1.0}


def test_cascading_randomisation_draws_from_the_given_seed(cascade_setup):
    model, images, targets = cascade_setup
    rows = cascading_randomisation(model, make_gradcam, images, targets, seed=5)
    expected = reference_cascade(model, images, targets, seed=5)
    assert_rows_close(rows, expected)
    assert expected[-1] != reference_cascade(model, images, targets, seed=0)[-1]


# ---------------------------------------------------------------------------------------------------
# faithfulness.py


@pytest.fixture(scope="module")
def small_net():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                          nn.Linear(16, 3)).eval()
    images = torch.randn(3, 3, 10, 10)
    cams = np.random.default_rng(0).random((3, 10, 10)).astype(np.float32)
    return model, images, cams, [2, 0, 1]


def reference_road(model, images, cams, targets, percentiles, seed):
    """pytorch-grad-cam's ROAD classes called directly, in the same order from the same seed."""
    outputs = [ClassifierOutputSoftmaxTarget(t) for t in targets]
    torch.manual_seed(seed)
    morf, lerf = [], []
    for p in percentiles:
        morf.append(ROADMostRelevantFirst(percentile=p)(images, cams, outputs, model))
        lerf.append(ROADLeastRelevantFirst(percentile=p)(images, cams, outputs, model))
    return np.array(morf).T, np.array(lerf).T  # (images, percentiles)


def test_road_scores_are_pytorch_grad_cams_road_per_image_and_percentile(small_net):
    model, images, cams, targets = small_net
    torch.manual_seed(11)
    untouched = torch.rand(4)
    torch.manual_seed(11)
    scores = road_scores(model, images, cams, targets, [20, 50, 90])  # seed omitted: 0
    assert torch.equal(torch.rand(4), untouched)  # the caller's random stream is left alone
    morf, lerf = reference_road(model, images, cams, targets, [20, 50, 90], seed=0)
    assert list(scores) == ["morf", "lerf", "combined"]
    assert scores["morf"].shape == scores["lerf"].shape == (3, 3) and scores["combined"].shape == (3,)
    np.testing.assert_array_equal(scores["morf"], morf)
    np.testing.assert_array_equal(scores["lerf"], lerf)
    np.testing.assert_allclose(scores["combined"], [np.mean((lerf[i] - morf[i]) / 2) for i in range(3)], rtol=1e-6)


def test_road_scores_draw_the_imputation_noise_from_the_given_seed(small_net):
    model, images, cams, targets = small_net
    scores = road_scores(model, images, cams, targets, [40], seed=3)
    morf, lerf = reference_road(model, images, cams, targets, [40], seed=3)
    np.testing.assert_array_equal(scores["morf"], morf)
    np.testing.assert_array_equal(scores["lerf"], lerf)
    assert not np.array_equal(morf, reference_road(model, images, cams, targets, [40], seed=0)[0])


class MeanModel(nn.Module):
    """Logits (k * mean brightness, 0): class 0's probability is sigmoid(k * mean), class 1's the rest."""

    def __init__(self, k: float):
        super().__init__()
        self.k = k

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([self.k * m, torch.zeros_like(m)], dim=1)


def test_confidence_change_by_hand():
    """Images of ones, CAMs of 0.5: the logit k * 1 becomes k * 0.5. k = 2: class 0's probability
    falls from sigmoid(2) to sigmoid(1) (a relative drop), class 1's rises (an increase, no drop).
    k = -400: class 0's probability is 0 before and after, a drop of 0, not 0/0."""
    images, cams = torch.ones(2, 3, 4, 4), np.full((2, 4, 4), 0.5, np.float32)

    def sigmoid(z):
        return 1 / (1 + np.exp(-z))

    out = confidence_change(MeanModel(2.0), images, cams, [0, 1])
    assert list(out) == ["confidence_drop", "confidence_increase"]
    assert out["confidence_increase"].dtype == np.float32 and out["confidence_increase"].tolist() == [0.0, 1.0]
    np.testing.assert_allclose(out["confidence_drop"], [(sigmoid(2) - sigmoid(1)) / sigmoid(2), 0.0], rtol=1e-5)

    out = confidence_change(MeanModel(-400.0), images[:1], cams[:1], [0])
    assert out["confidence_drop"].tolist() == [0.0] and out["confidence_increase"].tolist() == [0.0]
