"""Each evaluation measure on hand-made arrays whose answer is known."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from PIL import Image

from cxrcam.data.synthetic import render_phantom
from cxrcam.errors import CxrcamError
from cxrcam.evaluation.anatomy import (
    ZONES,
    lung_aligned,
    mask_problem,
    read_mask,
    sibling_mask_path,
    single_lung_side,
    split_lungs,
    zone_map,
)
from cxrcam.evaluation.attribution import (
    CRITERIA,
    attribution_scores,
    evenness,
    marginals,
    marker_scores,
    pattern_agreement,
    zone_profile,
)
from cxrcam.evaluation.localisation import (
    lesion_zones,
    localisation_scores,
    mass_share,
    otsu_iou,
    otsu_threshold,
    peak_pixels,
    pointing_hit,
    within,
)
from cxrcam.evaluation.sanity import (
    cascading_randomisation,
    randomisation_blocks,
    rank_correlation,
    ssim,
)
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


# --- localisation: pointing game, energy, Otsu IoU, lesion zones


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


def test_peak_pixels_are_all_the_maxima_and_a_split_peak_scores_its_share(lesion):
    cam = delta((10, 10))
    cam[25, 25] = 1.0  # a second, equal maximum outside the lesion
    cam[12, 12] = 0.5
    expected = np.zeros((32, 32), bool)
    expected[10, 10] = expected[25, 25] = True
    np.testing.assert_array_equal(peak_pixels(cam), expected)
    assert pointing_hit(cam, lesion) == 0.5


def test_mass_share_of_a_map_without_positive_mass_is_the_regions_area(lesion):
    cam = np.zeros((32, 32))
    cam[10, 10], cam[20, 20] = 1.0, 3.0
    assert mass_share(cam, lesion) == 0.25
    assert mass_share(-np.ones((32, 32)), lesion) == 64 / 1024  # negative total: counted as flat


def test_within_grows_a_region_by_euclidean_distance():
    point = np.zeros((5, 5), bool)
    point[2, 2] = True
    plus = np.zeros((5, 5), bool)
    plus[2, 1:4] = plus[1:4, 2] = True
    square = np.zeros((5, 5), bool)
    square[1:4, 1:4] = True
    np.testing.assert_array_equal(within(point, 1), plus)  # distance exactly 1 is within
    np.testing.assert_array_equal(within(point, 1.4), plus)  # the diagonal neighbours are sqrt(2) away
    np.testing.assert_array_equal(within(point, math.sqrt(2)), square)
    np.testing.assert_array_equal(within(point, 0), point)
    np.testing.assert_array_equal(within(point, -1), point)
    np.testing.assert_array_equal(within(np.zeros((5, 5), bool), 3), np.zeros((5, 5), bool))  # no lesion, no hit


def _otsu_reference(values: np.ndarray, bins: int) -> float:
    """Otsu from its definition: the first histogram edge that maximises w0 * w1 * (mu0 - mu1)^2, each
    class's pixels taken at their bin's centre."""
    index = np.minimum((values.ravel() * bins).astype(int), bins - 1)
    centre = (index + 0.5) / bins
    best, threshold = -1.0, None
    for k in range(1, bins):
        low, high = centre[index < k], centre[index >= k]
        between = low.size * high.size * (low.mean() - high.mean()) ** 2 if low.size and high.size else 0.0
        if between > best + 1e-12:
            best, threshold = between, k / bins
    return threshold


def test_otsu_threshold_on_hand_made_histograms():
    two_levels = np.array([0.1] * 3 + [0.9] * 5)
    assert otsu_threshold(two_levels) == 26 / 256  # default 256 bins: 0.1 is in bin 25, the cut at its upper edge
    assert otsu_threshold(two_levels, bins=4) == 0.25
    assert otsu_threshold(np.full(8, 0.3)) == -math.inf  # a constant map has nothing to separate
    # three levels in 4 bins (centres 1/8, 5/8, 7/8): w0 w1 (mu0 - mu1)^2 is 1*2*(5/8)^2 cutting at 1/4 or 1/2
    # (a tie: the first wins), 2*1*(1/2)^2 cutting at 3/4
    three = np.array([0.1, 0.6, 0.9])
    assert otsu_threshold(three, bins=4) == 0.25
    # classes of one pixel (4 bins, values at centres 1/8 ... 7/8): cutting at 1/2 scores 2*1*(5/8)^2 against
    # 1*2*(1/2)^2 at 1/4; cutting at 3/4 scores 2*2*(3/8)^2 against 1*3*(5/12)^2 at 1/2
    assert otsu_threshold(np.array([0.125, 0.375, 0.875]), bins=4) == 0.5
    assert otsu_threshold(np.array([0.375, 0.625, 0.875, 0.875]), bins=4) == 0.75
    assert otsu_threshold(np.array([0.7, 0.9]), bins=4) == 0.75  # the last possible cut


@pytest.mark.parametrize("seed", range(4))
def test_otsu_threshold_matches_the_definition_on_random_maps(seed):
    rng = np.random.default_rng(seed)
    cam = rng.beta(0.5, 2.0, (12, 12))
    cam[0, 0] = 0.99  # a one-pixel class at the top
    assert otsu_threshold(cam) == _otsu_reference(cam, 256)
    assert otsu_threshold(cam, bins=16) == _otsu_reference(cam, 16)


def test_otsu_segments_the_pixels_on_its_threshold():
    """Otsu's threshold is the lowest edge of the high class's first bin: a pixel on it is high."""
    lesion = np.zeros((8, 8), bool)
    lesion[2:4, 2:4] = True
    cam = np.where(lesion, 1 / 256, 0.0)
    assert otsu_threshold(cam) == 1 / 256 and otsu_iou(cam, lesion) == 1.0


def test_otsu_iou_of_an_empty_map_is_zero():
    assert otsu_iou(np.zeros((0, 0)), np.zeros((0, 0), bool)) == 0.0


def test_lesion_zones_hold_at_least_a_tenth_of_the_lesions_lung_pixels():
    zones = np.array([[0, 0, 1, 1, -1]] * 4)
    lesion = np.zeros((4, 5), bool)
    lesion[:, 0:2] = True  # 8 lung pixels in zone 0
    lesion[0:2, 4] = True  # outside the lungs: not counted
    np.testing.assert_array_equal(lesion_zones(lesion, zones), zones == 0)
    lesion[0, 2] = True  # 1 of 9 lung pixels in zone 1: over a tenth
    np.testing.assert_array_equal(lesion_zones(lesion, zones), zones >= 0)
    np.testing.assert_array_equal(lesion_zones(lesion, zones, min_share=0.2), zones == 0)
    only_zone_0 = lesion & (zones == 0)
    np.testing.assert_array_equal(lesion_zones(only_zone_0, zones, min_share=0), zones >= 0)  # every lung zone
    one_pixel = np.zeros((4, 5), bool)
    one_pixel[3, 3] = True
    np.testing.assert_array_equal(lesion_zones(one_pixel, zones), zones == 1)
    tenth = np.ones((1, 10), bool)  # zone 2 holds 1 of the 10 pixels: exactly the default tenth
    np.testing.assert_array_equal(lesion_zones(tenth, np.array([[0] * 9 + [2]])), tenth)
    nothing = lesion_zones(lesion & (zones < 0), zones)
    assert nothing.dtype == bool and not nothing.any()  # a lesion outside the lungs is in no zone


def test_localisation_scores_of_one_image(lesion):
    cam = delta((10, 18))
    cam[10, 10] = cam[25, 25] = 1.0  # three peaks: in the lesion, 3 px right of it, far away
    cam[20, 20] = 0.5  # mass: 3.5 in all, 1 of it in the lesion
    # the 8x8 lesion grown by 3 px: 8x3 on each side, and 4 pixels in each corner (1^2+1^2 ... 2^2+2^2 <= 9)
    assert localisation_scores(cam, lesion, None, tolerance_px=3) == {
        "pointing": pytest.approx(1 / 3), "pointing_chance": 64 / 1024,
        "pointing_tolerant": pytest.approx(2 / 3), "pointing_tolerant_chance": (64 + 4 * 24 + 4 * 4) / 1024,
        "energy": pytest.approx(2 / 7),
        "otsu_iou": pytest.approx(1 / 67)}  # Otsu keeps the 4 nonzero pixels, 1 of them in the lesion


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


# --- anatomy: masks on disk, the two lungs, their zones, the lung-aligned frame


def test_sibling_mask_path_is_the_file_beside_the_images_folder(tmp_path):
    image = tmp_path / "Pneumonia" / "images" / "a.png"
    mask = tmp_path / "Pneumonia" / "lung masks" / "a.png"
    for path in (image, mask):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    (tmp_path / "Pneumonia" / "lesion masks" / "a.png").mkdir(parents=True)  # a folder, not a mask
    assert sibling_mask_path(image, "lung masks") == mask
    assert sibling_mask_path(str(image), "lung masks") == mask
    assert sibling_mask_path(image, "lesion masks") is None
    assert sibling_mask_path(image, "marker masks") is None
    flat = tmp_path / "Pneumonia" / "scans" / "a.png"  # not under images/: no layout to follow
    flat.parent.mkdir()
    flat.touch()
    assert sibling_mask_path(flat, "lung masks") is None


MASK = np.array([[0, 0, 0], [0, 1, 1], [0, 1, 0]], bool)


def _mask_image(mode: str) -> Image.Image:
    """MASK in one of PIL's modes (white inside), through the gray image PIL converts from."""
    return Image.fromarray(MASK.astype(np.uint8) * 255).convert(mode)


@pytest.mark.parametrize("mode", ["L", "1", "PA", "RGB", "RGBA", "LA", "CMYK", "YCbCr", "I;16"])
def test_read_mask_reads_every_colour_mode_as_its_gray_level_and_stretches_it_by_nearest_neighbour(tmp_path, mode):
    _mask_image(mode).save(tmp_path / "mask.tiff")
    assert Image.open(tmp_path / "mask.tiff").mode == mode
    np.testing.assert_array_equal(read_mask(tmp_path / "mask.tiff", 6), np.kron(MASK, np.ones((2, 2), bool)),
                                  strict=True)


def test_read_mask_takes_a_palettes_colours_not_its_indices(tmp_path):
    image = Image.fromarray((~MASK).astype(np.uint8), mode="P")  # index 0 inside, index 1 outside
    image.putpalette([255, 255, 255, 0, 0, 0])  # index 0 white, index 1 black
    image.save(tmp_path / "mask.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "mask.png", 3), MASK, strict=True)


def test_read_mask_downsizes_by_nearest_neighbour_not_by_averaging(tmp_path):
    line = np.zeros((6, 6), np.uint8)
    line[:, 1] = 255  # one column: nearest neighbour keeps it whole (output column 0 samples input column 1)
    Image.fromarray(line).save(tmp_path / "line.png")
    expected = np.zeros((3, 3), bool)
    expected[:, 0] = True
    np.testing.assert_array_equal(read_mask(tmp_path / "line.png", 3), expected)


@pytest.mark.parametrize("levels, inside_from", [(8, 10), (9, 50)])
def test_read_mask_up_to_eight_levels_are_labels_more_are_gray_cut_above_half_the_maximum(tmp_path, levels,
                                                                                          inside_from):
    values = (np.arange(levels, dtype=np.uint8) * 10)[None, :]  # 0, 10, ...; with 9 levels the maximum is 80
    Image.fromarray(values).save(tmp_path / "mask.png")
    # labels: every nonzero value is inside; gray: above 40, so 40 itself (exactly half) is outside
    np.testing.assert_array_equal(read_mask(tmp_path / "mask.png", levels)[0], values[0] >= inside_from)


def test_read_mask_errors_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(CxrcamError, match="^" + re.escape(f"cannot read mask {tmp_path / 'none.png'}: ")
                       + ".*No such file"):
        read_mask(tmp_path / "none.png", 8)
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(CxrcamError, match="^" + re.escape(f"cannot read mask {tmp_path / 'text.png'}: ")
                       + "cannot identify image file"):
        read_mask(tmp_path / "text.png", 8)
    _mask_image("LAB").save(tmp_path / "lab.tiff")  # three channels PIL does not turn into gray
    with pytest.raises(CxrcamError) as exc:
        read_mask(tmp_path / "lab.tiff", 8)
    assert str(exc.value) == f"cannot read mask {tmp_path / 'lab.tiff'}: it has shape (8, 8, 3), not one channel"

def box(shape: tuple[int, int], *boxes: tuple[int, int, int, int]) -> np.ndarray:
    """bool mask with each (row0, row1, col0, col1) box (ends excluded) set."""
    mask = np.zeros(shape, bool)
    for r0, r1, c0, c1 in boxes:
        mask[r0:r1, c0:c1] = True
    return mask


BIG = (0, 10, 1, 11)  # 100 px on the image left of a 40 px wide image (midline 20); column centre 5.5
MIDLINE_SPECK = (15, 16, 19, 22)  # 3 px, column centre 20: on the midline counts as the image right


@pytest.mark.filterwarnings("error")  # no empty-slice means along the way
@pytest.mark.parametrize("boxes, side, right, left", [
    # the two largest parts are two lungs when similar in size (the smaller at least a fifth), sorted by column
    ([BIG, (12, 16, 2, 7)], None, [(12, 16, 2, 7)], [BIG]),
    ([BIG, (12, 13, 1, 20)], 0, [BIG, (12, 13, 1, 20)], []),  # 19 %, same side: one lung, its speck kept
    ([BIG, (15, 16, 15, 17)], 0, [BIG, (15, 16, 15, 17)], []),  # 2 %, same side (centre 15.5): kept too
    ([BIG, (0, 10, 25, 28), (15, 16, 13, 17)], None, [BIG], [(0, 10, 25, 28)]),  # the third part is dropped
    # ... or when the smaller, at least a fiftieth, lies across the midline (a collapsed lung's remnant)
    ([BIG, (5, 6, 30, 32)], None, [BIG], [(5, 6, 30, 32)]),
    ([BIG, (5, 6, 30, 31)], 0, [BIG], []),  # 1 %: a speck on the other side, dropped
    ([BIG, MIDLINE_SPECK], None, [BIG], [MIDLINE_SPECK]),
    ([(0, 10, 25, 35), MIDLINE_SPECK], 1, [], [(0, 10, 25, 35), MIDLINE_SPECK]),  # not across: same side
    # one part: one lung when at least 90 % of it lies on one side, else two touching lungs cut at the
    # middle of their column extent
    ([(0, 10, 11, 21)], 0, [(0, 10, 11, 21)], []),
    ([(0, 10, 19, 29)], 1, [], [(0, 10, 19, 29)]),
    ([(0, 10, 12, 22)], None, [(0, 10, 12, 17)], [(0, 10, 17, 22)]),  # 80 % on the left: cut at 17
    ([(0, 10, 6, 32)], None, [(0, 10, 6, 19)], [(0, 10, 19, 32)]),  # columns 6-31: cut at 19, not the midline
    ([(0, 10, 6, 31)], None, [(0, 10, 6, 19)], [(0, 10, 19, 31)]),  # columns 6-30: cut at 18.5
    ([(5, 6, 3, 4)], 0, [(5, 6, 3, 4)], []),  # a single pixel
    ([], None, [], []),
])
def test_single_lung_side_and_split_lungs_on_hand_made_masks(boxes, side, right, left):
    lungs = box((20, 40), *boxes)
    assert single_lung_side(lungs) == side
    parts = split_lungs(lungs)
    assert len(parts) == 2
    np.testing.assert_array_equal(parts[0], box((20, 40), *right), strict=True)
    np.testing.assert_array_equal(parts[1], box((20, 40), *left), strict=True)


@pytest.mark.parametrize("mask, kind, problem", [
    (box((10, 10), (0, 10, 0, 10)), "lung", "covers 100% of the image (all white: inverted, or not a lung mask?)"),
    (box((10, 10), (0, 9, 0, 10), (9, 10, 0, 8)), "lesion",
     "covers 98% of the image (all white: inverted, or not a lesion mask?)"),
    (box((10, 10), (0, 9, 0, 10), (9, 10, 0, 7)), "lesion", None),
    (box((10, 10), (0, 5, 0, 10)), "lesion", None),
    (box((10, 10)), "lesion", None),  # a Normal image has no lesion
    (box((10, 10)), "lung", "is empty (no lung drawn)"),
    (box((10, 20), (5, 6, 3, 4)), "lung", "covers only 0.50% of the image"),
    (box((10, 10), (5, 6, 3, 4)), "lung", "holds one lung only: scored as one lung, the other side empty"),  # 1 %
    (box((10, 10), (0, 8, 0, 10), (8, 9, 0, 1)), "lung", "covers 81% of the image (inverted? white must be the lungs)"),
    (box((10, 10), (0, 8, 0, 10)), "lung", None),  # 80 %, across the midline
    (box((10, 10), (1, 9, 1, 4), (1, 9, 6, 9)), "lung", None),
])
def test_mask_problem_names_what_looks_wrong(mask, kind, problem):
    assert mask_problem(mask, kind) == problem


A, B = (1, 7, 1, 6), (0, 9, 8, 12)  # 6x5 lung on the image left (the patient's right), 9x4 on the image right
ZONE_MAP = np.array([  # each lung's own thirds; the odd-width right lung's middle column is exactly halfway
    [-1, -1, -1, -1, -1, -1, -1, -1, 6, 6, 7, 7, -1, -1],  # (lateral 0.5): peripheral from 0.5 on
    [-1, 1, 1, 1, 0, 0, -1, -1, 6, 6, 7, 7, -1, -1],
    [-1, 1, 1, 1, 0, 0, -1, -1, 6, 6, 7, 7, -1, -1],
    [-1, 3, 3, 3, 2, 2, -1, -1, 8, 8, 9, 9, -1, -1],
    [-1, 3, 3, 3, 2, 2, -1, -1, 8, 8, 9, 9, -1, -1],
    [-1, 5, 5, 5, 4, 4, -1, -1, 8, 8, 9, 9, -1, -1],
    [-1, 5, 5, 5, 4, 4, -1, -1, 10, 10, 11, 11, -1, -1],
    [-1, -1, -1, -1, -1, -1, -1, -1, 10, 10, 11, 11, -1, -1],
    [-1, -1, -1, -1, -1, -1, -1, -1, 10, 10, 11, 11, -1, -1]], np.int8)


def test_zone_map_by_hand():
    lungs = box((9, 14), A, B)
    np.testing.assert_array_equal(zone_map(lungs), ZONE_MAP, strict=True)
    np.testing.assert_array_equal(zone_map(lungs, peripheral_from=0.5), ZONE_MAP, strict=True)
    quarter = np.where((ZONE_MAP >= 0) & (ZONE_MAP % 2 == 1), ZONE_MAP - 1, ZONE_MAP)  # peripheral -> central
    quarter[:, [1, 11]] = ZONE_MAP[:, [1, 11]]  # but each lung's outermost column (lateral 0.9, 0.875)
    np.testing.assert_array_equal(zone_map(lungs, peripheral_from=0.75), quarter, strict=True)
    only_left = np.where(np.arange(14) >= 7, ZONE_MAP, -1).astype(np.int8)  # the patient's left lung alone
    np.testing.assert_array_equal(zone_map(box((9, 14), B)), only_left, strict=True)


def test_zone_map_follows_each_lungs_own_extent_and_patient_sides():
    zones = zone_map(two_lungs())
    assert (zones[:15] == -1).all() and (zones[:, 25:35] == -1).all()
    name = lambda r, c: ZONES[zones[r, c]]
    # image-left lung is the patient's right; its lateral (peripheral) border is on the image left
    assert name(16, 10) == "upper-right-peripheral" and name(16, 21) == "upper-right-central"
    assert name(30, 38) == "middle-left-central" and name(44, 49) == "lower-left-peripheral"
    assert sorted(np.unique(zones[zones >= 0]).tolist()) == list(range(12))
    # a shorter lung gets its own thirds
    short = two_lungs()
    short[35:45, 38:50] = False
    assert ZONES[zone_map(short)[33, 45]] == "lower-left-peripheral"


def test_lung_aligned_crops_to_the_lungs_and_stretches_bilinearly():
    values = np.full((10, 10), 100.0)
    values[3:5, 5:7] = [[0, 1], [2, 3]]
    lungs = box((10, 10), (3, 5, 5, 7))
    # bilinear on pixel centres, edges held: output centre i samples the input at (i + 0.5) / 2 - 0.5
    np.testing.assert_array_equal(lung_aligned(values, lungs, size=4), [[0, 0.25, 0.75, 1], [0.5, 0.75, 1.25, 1.5],
                                                                         [1.5, 1.75, 2.25, 2.5], [2, 2.25, 2.75, 3]])
    default = lung_aligned(values, lungs)
    assert default.shape == (64, 64) and default[0, 0] == 0 and default[-1, -1] == 3
    one_row = lung_aligned(values, box((10, 10), (3, 4, 5, 8)), size=3)  # 0, 1, 100: the rows repeat
    np.testing.assert_array_equal(one_row, [[0, 1, 100]] * 3)
    with pytest.raises(ValueError) as exc:
        lung_aligned(values, box((10, 10)))
    assert str(exc.value) == "an empty lung mask has no lung-aligned frame"


# --- attribution: zone profiles and the patterns a class should show


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


def test_zone_profile_is_the_share_of_lung_mass_per_zone_whatever_the_total():
    zones = ZONE_MAP.astype(int)
    cam = np.zeros((9, 14))
    cam[1, 4] = cam[0, 10] = 0.25  # zones 0 and 7; total mass 0.5
    cam[0, 0] = 5.0  # outside the lungs: not in the profile
    np.testing.assert_array_equal(zone_profile(cam, zones), np.eye(12)[0] / 2 + np.eye(12)[7] / 2)
    area = np.array([4, 6, 4, 6, 4, 6, 6, 6, 6, 6, 6, 6]) / 66  # pixels per zone
    np.testing.assert_allclose(zone_profile(box((9, 14), A, B), zones), area)
    np.testing.assert_allclose(zone_profile(-cam, zones), area)  # no positive lung mass: flat
    one_lung = np.where(zones < 6, zones, -1)  # zones 6-11 absent: still a 12-zone profile
    np.testing.assert_allclose(zone_profile(cam, one_lung), np.eye(12)[0])
    np.testing.assert_allclose(zone_profile(np.zeros((9, 14)), one_lung), np.r_[[4, 6, 4, 6, 4, 6], [0] * 6] / 30)
    np.testing.assert_array_equal(zone_profile(cam, np.full((9, 14), -1)), np.zeros(12))  # no lungs at all


def test_marginals_sum_the_profile_per_height_side_and_depth():
    assert marginals(np.arange(12) / 66) == pytest.approx({  # zone id = side * 6 + height * 2 + depth
        "upper": (0 + 1 + 6 + 7) / 66, "middle": (2 + 3 + 8 + 9) / 66, "lower": (4 + 5 + 10 + 11) / 66,
        "right": 15 / 66, "left": 51 / 66, "central": 30 / 66, "peripheral": 36 / 66})
    with pytest.raises(ValueError):
        marginals(np.ones(11))  # a profile of another length is refused, not cut short


def test_evenness_is_one_minus_the_total_variation_distance():
    area = np.full(12, 1 / 12)
    assert evenness(area, area) == 1
    assert evenness(np.eye(12)[3], area) == pytest.approx(1 / 12)  # TV = (11/12 + 11 * 1/12) / 2


def test_pattern_agreement_decides_at_its_thresholds():
    area = np.full(12, 1 / 12)
    profile = np.zeros(12)
    profile[[0, 6, 11]] = 0.25, 0.5, 0.25  # upper-right-central, upper-left-central, lower-left-peripheral
    spread = 0.25  # TV distance to the flat profile: (1/6 + 5/12 + 1/6 + 9/12) / 2 = 3/4
    assert evenness(profile, area) == pytest.approx(spread)
    at_the_thresholds = {"bilateral_min_ratio": 0.25 / 0.75, "unilateral_min_share": 0.75,
                         "diffuse_min_evenness": evenness(profile, area)}
    assert pattern_agreement(profile, area, list(CRITERIA), at_the_thresholds) == {
        "upper": (True, 0.75), "middle": (False, 0.0), "lower": (False, 0.25),
        "central": (True, 0.75), "peripheral": (False, 0.25),
        "bilateral": (True, 0.25 / 0.75), "unilateral": (True, 0.75), "diffuse": (True, pytest.approx(spread)),
        "upper_or_diffuse": (True, 0.75)}
    # a flat map: no zone favoured; upper_or_diffuse then rests on evenness (1) against the threshold
    assert pattern_agreement(area, area, ["upper", "upper_or_diffuse"], {"diffuse_min_evenness": 1.0}) == {
        "upper": (False, pytest.approx(1 / 3)), "upper_or_diffuse": (True, pytest.approx(1 / 3))}
    assert pattern_agreement(area, area, ["upper_or_diffuse"], {"diffuse_min_evenness": 1.01}) == {
        "upper_or_diffuse": (False, pytest.approx(1 / 3))}
    # no mass at all: neither lung, so not bilateral
    assert pattern_agreement(np.zeros(12), area, ["bilateral"], THRESHOLDS) == {"bilateral": (False, 0.0)}
    with pytest.raises(ValueError) as exc:
        pattern_agreement(area, area, ["basal"], THRESHOLDS)
    assert str(exc.value) == ("unknown pattern criterion 'basal'; known: ['upper', 'middle', 'lower', 'central', "
                              "'peripheral', 'bilateral', 'unilateral', 'diffuse', 'upper_or_diffuse']")


def test_attribution_scores_of_one_image():
    lungs = box((9, 14), A, B)
    zones = ZONE_MAP.astype(int)
    cam = np.zeros((9, 14))
    cam[1, 4], cam[0, 10], cam[0, 0] = 1.0, 1.0, 2.0  # half the mass in the lungs, half on a marker
    marker = box((9, 14), (0, 1, 0, 2))
    scores = attribution_scores(cam, lungs, zones)
    np.testing.assert_array_equal(scores.pop("zone_profile"), np.eye(12)[0] / 2 + np.eye(12)[7] / 2)
    assert scores == {"lung_share": 0.5, "lung_share_flat": 66 / 126}
    assert marker_scores(cam, marker, "marker") == {"marker_share": 0.5, "marker_share_flat": 2 / 126,
                                                    "marker_peak": 1.0, "marker_peak_chance": 2 / 126}


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


# --- stats: bootstrap confidence intervals


def _percentile_bootstrap(values: list, n_resamples: int, level: float, seed: int) -> dict:
    """The percentile bootstrap of the mean, spelled out."""
    values = np.array(values, dtype=float)
    draws = np.random.default_rng(seed).integers(0, values.size, (n_resamples, values.size))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values[draws].mean(axis=1), [tail, 100 - tail])
    return {"mean": values.mean(), "low": low, "high": high, "n": values.size}


def test_bootstrap_ci_is_the_percentile_bootstrap_of_the_mean():
    values = np.random.default_rng(1).random(30).tolist()
    assert bootstrap_ci(values) == _percentile_bootstrap(values, 1000, 0.95, 0)  # the defaults
    assert bootstrap_ci(values, n_resamples=50, level=0.8, seed=7) == _percentile_bootstrap(values, 50, 0.8, 7)
    assert bootstrap_ci([0.0, 1.0]) == _percentile_bootstrap([0.0, 1.0], 1000, 0.95, 0)  # two values: an interval


def test_bootstrap_ci_drops_missing_and_infinite_values():
    values = [0.2, np.nan, None, 0.6, np.inf, -np.inf, 0.1]
    assert bootstrap_ci(values, seed=3) == _percentile_bootstrap([0.2, 0.6, 0.1], 1000, 0.95, 3)


@pytest.mark.parametrize("values, expected", [
    ([0.3], {"mean": 0.3, "low": 0.3, "high": 0.3, "n": 1}),
    ([np.nan, 0.3, None], {"mean": 0.3, "low": 0.3, "high": 0.3, "n": 1}),
    ([], {"mean": np.nan, "low": np.nan, "high": np.nan, "n": 0}),
    ([np.nan, None], {"mean": np.nan, "low": np.nan, "high": np.nan, "n": 0}),
])
def test_bootstrap_ci_under_two_values_is_the_mean_itself_or_nan(values, expected):
    np.testing.assert_equal(bootstrap_ci(values), expected)  # NaN equals NaN here


@pytest.mark.parametrize("level, z", [(0.95, 1.960), (0.5, 0.674)])
def test_bootstrap_ci_of_a_mean_matches_the_normal_theory_interval(level, z):
    """400 values: the percentile bootstrap of a mean is mean +- z * sd / sqrt(n), to within 10 %."""
    values = np.random.default_rng(2).normal(0.5, 0.1, 400)
    half_width = z * values.std() / np.sqrt(values.size)
    ci = bootstrap_ci(np.append(values, np.nan), n_resamples=4000, level=level, seed=0)
    assert ci["n"] == 400 and ci["mean"] == pytest.approx(values.mean())
    assert ci["low"] == pytest.approx(values.mean() - half_width, abs=0.1 * half_width)
    assert ci["high"] == pytest.approx(values.mean() + half_width, abs=0.1 * half_width)


# --- sanity checks and the synthetic marker


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
