"""Each evaluation measure on hand-made arrays whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxrcam.data.synthetic import render_phantom
from cxrcam.evaluation.anatomy import ZONES, lung_aligned, split_lungs, zone_map
from cxrcam.evaluation.attribution import marginals, pattern_agreement, zone_profile
from cxrcam.evaluation.localisation import lesion_zones, localisation_scores, mass_share, otsu_iou, pointing_hit
from cxrcam.evaluation.sanity import cascading_randomisation, randomisation_blocks, rank_correlation, ssim
from cxrcam.evaluation.stats import bootstrap_ci
from cxrcam.explanation.methods import make_cam
from cxrcam.models import build_model, get_layer

THRESHOLDS = {"bilateral_min_ratio": 0.3, "unilateral_min_share": 0.75, "diffuse_min_evenness": 0.7}


@pytest.fixture()
def lesion() -> np.ndarray:
    mask = np.zeros((32, 32), bool)
    mask[8:16, 8:16] = True  # 64 of 1024 pixels
    return mask


def delta(at: tuple[int, int], shape=(32, 32)) -> np.ndarray:
    cam = np.zeros(shape, np.float32)
    cam[at] = 1.0
    return cam


def two_lungs(shape=(60, 60)) -> np.ndarray:
    """Two 30x12 rectangles: image-left (patient's right) at columns 10-21, image-right at 38-49."""
    lungs = np.zeros(shape, bool)
    lungs[15:45, 10:22] = True
    lungs[15:45, 38:50] = True
    return lungs


def test_pointing_energy_and_iou_of_delta_inside_outside_and_uniform_maps(lesion):
    inside, outside, uniform = delta((10, 10)), delta((25, 25)), np.ones((32, 32), np.float32)
    assert pointing_hit(inside, lesion) == 1.0 and mass_share(inside, lesion) == 1.0
    assert pointing_hit(outside, lesion) == 0.0 and mass_share(outside, lesion) == 0.0
    # a flat map points everywhere at once: it scores exactly the chance level, the lesion's area share
    assert pointing_hit(uniform, lesion) == pytest.approx(64 / 1024)
    assert mass_share(uniform, lesion) == pytest.approx(64 / 1024)
    assert mass_share(np.zeros((32, 32)), lesion) == pytest.approx(64 / 1024)  # no mass counts as flat
    assert otsu_iou(lesion.astype(np.float32), lesion) == 1.0
    assert otsu_iou(uniform, lesion) == pytest.approx(64 / 1024)
    half = np.where(lesion, 0.9, 0.1).astype(np.float32)
    half[8:16, 12:16] = 0.1  # the map covers the lesion's left half only
    assert otsu_iou(half, lesion) == pytest.approx(0.5)


def test_tolerant_pointing_and_its_chance_level(lesion):
    near = delta((10, 18))  # 3 px right of the lesion's last column (15)
    assert pointing_hit(near, lesion, tolerance_px=2) == 0.0
    assert pointing_hit(near, lesion, tolerance_px=3) == 1.0
    scores = localisation_scores(near, lesion, None, tolerance_px=3)
    assert scores["pointing"] == 0.0 and scores["pointing_tolerant"] == 1.0
    assert scores["pointing_chance"] == pytest.approx(64 / 1024)
    assert scores["pointing_tolerant_chance"] > scores["pointing_chance"]
    assert "zone_hit" not in scores  # no lung mask, no zones


def test_zone_map_follows_each_lungs_own_extent_and_patient_sides():
    zones = zone_map(two_lungs())
    assert (zones[:15] == -1).all() and (zones[:, 25:35] == -1).all()
    name = lambda r, c: ZONES[zones[r, c]]  # noqa: E731
    # image-left lung is the patient's right; its lateral (peripheral) border is on the image left
    assert name(16, 10) == "upper-right-peripheral" and name(16, 21) == "upper-right-central"
    assert name(30, 38) == "middle-left-central" and name(44, 49) == "lower-left-peripheral"
    assert sorted(np.unique(zones[zones >= 0]).tolist()) == list(range(12))
    # a shorter lung gets its own thirds
    short = two_lungs()
    short[35:45, 38:50] = False
    assert ZONES[zone_map(short)[33, 45]] == "lower-left-peripheral"


def test_zone_profile_of_a_cam_confined_to_one_zone():
    lungs = two_lungs()
    zones = zone_map(lungs)
    cam = np.zeros(lungs.shape, np.float32)
    cam[zones == ZONES.index("lower-left-peripheral")] = 1.0
    profile = zone_profile(cam, zones)
    assert profile[ZONES.index("lower-left-peripheral")] == pytest.approx(1.0) and profile.sum() == pytest.approx(1)
    share = marginals(profile)
    assert share["lower"] == pytest.approx(1) and share["left"] == pytest.approx(1) and share["upper"] == 0
    area = zone_profile(lungs.astype(np.float32), zones)
    assert area.sum() == pytest.approx(1) and np.allclose(area, 1 / 12)
    assert zone_profile(np.zeros(lungs.shape), zones) == pytest.approx(area)  # no lung mass counts as flat


def test_pattern_agreement_on_known_maps():
    lungs = two_lungs()
    zones = zone_map(lungs)
    area = zone_profile(lungs.astype(np.float32), zones)
    both_lower = np.isin(zones, [ZONES.index(z) for z in ZONES if z.startswith("lower")]).astype(np.float32)
    result = pattern_agreement(zone_profile(both_lower, zones), area,
                               ["lower", "upper", "bilateral", "unilateral", "diffuse"], THRESHOLDS)
    assert result["lower"] == (True, pytest.approx(1.0)) and result["upper"][0] is False
    assert result["bilateral"] == (True, pytest.approx(1.0)) and result["unilateral"][0] is False
    assert result["diffuse"][0] is False
    one_lung = (zones >= 0) & (zones < 6)
    result = pattern_agreement(zone_profile(one_lung.astype(np.float32), zones), area,
                               ["bilateral", "unilateral", "diffuse", "upper_or_diffuse"], THRESHOLDS)
    assert result["unilateral"] == (True, pytest.approx(1.0)) and result["bilateral"] == (False, 0.0)
    flat = pattern_agreement(area, area, ["diffuse", "upper_or_diffuse", "lower"], THRESHOLDS)
    assert flat["diffuse"] == (True, pytest.approx(1.0)) and flat["upper_or_diffuse"][0] is True
    assert flat["lower"][0] is False  # a flat map favours no zone
    with pytest.raises(ValueError, match="unknown pattern criterion"):
        pattern_agreement(area, area, ["basal"], THRESHOLDS)


def test_zone_hit_counts_the_lesions_zones():
    lungs = two_lungs()
    zones = zone_map(lungs)
    lesion = np.zeros(lungs.shape, bool)
    lesion[40:44, 40:44] = True  # lower zone of the patient's left lung, central half
    target = lesion_zones(lesion, zones)
    assert set(np.unique(zones[target])) == {ZONES.index("lower-left-central")}
    same_zone_miss = delta((36, 39), lungs.shape)  # same zone, outside the lesion
    scores = localisation_scores(same_zone_miss, lesion, zones, tolerance_px=0)
    assert scores["pointing"] == 0 and scores["zone_hit"] == 1
    assert scores["zone_hit_chance"] == pytest.approx(target.mean())
    assert localisation_scores(delta((16, 11), lungs.shape), lesion, zones, 0)["zone_hit"] == 0


def test_split_lungs_cuts_touching_lungs_at_their_middle():
    lungs = np.zeros((20, 40), bool)
    lungs[5:15, 8:32] = True  # one blob
    right, left = split_lungs(lungs)
    assert right[:, :20].sum() == right.sum() and left[:, 20:].sum() == left.sum()
    assert right.sum() == left.sum() == 120


def test_lung_aligned_frame_maps_the_lung_box_to_the_square():
    lungs = np.zeros((40, 40), bool)
    lungs[10:30, 5:25] = True
    cam = np.zeros((40, 40), np.float32)
    cam[10:20, 5:25] = 1.0  # upper half of the lung box
    aligned = lung_aligned(cam, lungs, size=16)
    assert aligned.shape == (16, 16)
    assert aligned[:7].mean() > 0.95 and aligned[9:].mean() < 0.05


def test_bootstrap_ci_is_deterministic_and_brackets_the_mean():
    values = np.random.default_rng(1).random(50)
    a, b = bootstrap_ci(values, seed=3), bootstrap_ci(values, seed=3)
    assert a == b and a["low"] < a["mean"] < a["high"] and a["n"] == 50 and a["mean"] == pytest.approx(values.mean())
    assert bootstrap_ci(values, seed=4) != a
    assert bootstrap_ci([0.5] * 10) == {"mean": 0.5, "low": 0.5, "high": 0.5, "n": 10}
    assert bootstrap_ci([np.nan, 1.0])["n"] == 1
    assert bootstrap_ci([])["n"] == 0


@pytest.mark.parametrize("level, z", [(0.95, 1.960), (0.5, 0.674)])
def test_bootstrap_ci_of_a_mean_matches_the_normal_theory_interval(level, z):
    """400 values: the percentile bootstrap of a mean is mean +- z * sd / sqrt(n), to within 10 %."""
    values = np.random.default_rng(2).normal(0.5, 0.1, 400)
    half_width = z * values.std() / np.sqrt(values.size)
    ci = bootstrap_ci(np.append(values, np.nan), n_resamples=4000, level=level, seed=0)
    assert ci["n"] == 400 and ci["mean"] == pytest.approx(values.mean())
    assert ci["low"] == pytest.approx(values.mean() - half_width, abs=0.1 * half_width)
    assert ci["high"] == pytest.approx(values.mean() + half_width, abs=0.1 * half_width)


def test_similarity_measures():
    a = np.random.default_rng(0).random((16, 16))
    assert rank_correlation(a, a) == pytest.approx(1) and rank_correlation(a, -a) == pytest.approx(-1)
    assert rank_correlation(a, np.zeros_like(a)) == 0.0  # a constant map ranks nothing
    assert ssim(a, a) == pytest.approx(1) and ssim(a, 1 - a) < 0.2


def test_cascading_randomisation_leaves_the_model_alone_and_decorrelates():
    torch.manual_seed(0)
    model = build_model("simple_cnn", 4, 32).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.randn(4, 3, 32, 32)
    rows = cascading_randomisation(model, lambda m: make_cam("gradcam", m, get_layer(m, "features.3")), images,
                                   [0, 1, 2, 3])
    assert [r["block"] for r in rows] == ["trained", *randomisation_blocks(model)]
    assert randomisation_blocks(model)[0] == "classifier.4" and randomisation_blocks(model)[-1] == "features.0"
    assert rows[0]["rank_correlation"] == 1.0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert rows[-1]["rank_correlation"] < 0.9
    assert rows == cascading_randomisation(model, lambda m: make_cam("gradcam", m, get_layer(m, "features.3")),
                                           images, [0, 1, 2, 3])  # seeded


def test_resnet_and_densenet_blocks_run_output_end_first():
    assert randomisation_blocks(build_model("resnet50", 4, 32))[:3] == ["fc.1", "layer4.2", "layer4.1"]
    assert randomisation_blocks(build_model("resnet50", 4, 32))[-1] == "conv1"
    blocks = randomisation_blocks(build_model("densenet121", 4, 32))
    assert blocks[:3] == ["classifier.1", "features.norm5", "features.denseblock4"] and blocks[-1] == "features.conv0"


def test_marker_is_burned_in_without_touching_the_rest_of_the_phantom():
    from cxrcam.data.synthetic import burn_in_marker

    phantom = render_phantom("Normal", np.random.default_rng(0), 128)
    marked = phantom.image.copy()
    mask = burn_in_marker(marked, np.random.default_rng(1))
    assert 0.005 < mask.mean() < 0.02 and not (mask & phantom.lungs).any()
    rows, cols = np.nonzero(mask)
    assert rows.max() < 32 and cols.max() < 32  # upper image-left corner
    assert (marked[~mask] == phantom.image[~mask]).all()
    assert (marked[mask] == 1.0).mean() > 0.4  # white box outline and letter
