"""The typed results of an evaluation: each verdict follows from its numbers at the boundaries, chance
levels are paired with the scores they belong to, and what reporting words is what evaluation decided."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cxrcam.evaluation.anatomy import ZONES
from cxrcam.evaluation.results import (
    AuditRow,
    CamEvaluation,
    Faithfulness,
    Interval,
    MarkerComparison,
    MaskCounts,
    PatternAgreement,
    Pictures,
    Sanity,
    SanityStep,
    Score,
    ShortcutAudit,
    ZoneProfile,
    pattern_agreements,
    plain,
    score_table,
)
from cxrcam.reporting.evaluation_report import conclusions


def ci(mean: float, low: float, high: float, n: int = 10) -> Interval:
    return Interval(mean, low, high, n)


@pytest.mark.parametrize("low, high, verdict", [(0.31, 0.5, "above"), (0.3, 0.5, "not distinguishable from"),
                                                (0.1, 0.3, "not distinguishable from"), (0.1, 0.29, "below")])
def test_an_interval_is_above_or_below_a_level_only_when_it_excludes_it(low, high, verdict):
    assert ci(0.3, low, high).versus(0.3) == verdict


def test_a_score_is_judged_against_its_own_chance_level():
    chance = Score(ci(0.2, 0.2, 0.2), {})
    assert Score(ci(0.5, 0.21, 0.7), {}, chance).versus_chance == "above"
    assert Score(ci(0.1, 0.05, 0.19), {}, chance).versus_chance == "below"
    assert Score(ci(0.5, 0.21, 0.7), {}).versus_chance is None
    score = Score(ci(0.5, 0.2, 0.8), {"COVID": ci(1.0, 1.0, 1.0, 2)})
    assert score.of(None) == ci(0.5, 0.2, 0.8) and score.of("COVID").n == 2 and score.of("Normal") is None


@pytest.mark.parametrize("low, high, verdict", [(0.01, 0.2, "faithful"), (0.0, 0.2, "indistinguishable"),
                                                (-0.2, 0.0, "indistinguishable"), (-0.2, -0.01, "inverted")])
def test_road_verdict_is_its_combined_interval_against_zero(low, high, verdict):
    road = Faithfulness(8, [50], [-0.1], [0.0], ci(0.05, low, high), ci(0.1, 0, 0.2), ci(0.5, 0, 1))
    assert road.verdict == verdict


@pytest.mark.parametrize("final, passes", [(0.29, True), (0.3, False), (0.9, False), (-0.5, True)])
def test_sanity_passes_when_the_fully_randomised_correlation_falls_below_the_threshold(final, passes):
    steps = [SanityStep("trained", 1.0, 1.0), SanityStep("fc", 0.1, 0.5), SanityStep("features", final, 0.2)]
    assert Sanity(steps).passes is passes and Sanity(steps).threshold == 0.3
    assert Sanity(steps, threshold=0.95).passes is True  # the last step decides, not the lowest
    assert Sanity([SanityStep("trained", 1.0, 1.0), SanityStep("fc", 0.5, 0.5)], threshold=0.4).passes is False


@pytest.mark.parametrize("mean, shown", [(0.5, True), (0.49, False), (1.0, True)])
def test_a_pattern_is_shown_when_at_least_half_the_images_agree(mean, shown):
    assert PatternAgreement("COVID", "lower", ci(mean, 0, 1), ci(0.4, 0.3, 0.5)).shown is shown


@pytest.mark.parametrize("other, difference", [((0.1, 0.05, 0.39), "more"), ((0.1, 0.05, 0.4), "no clearly different"),
                                               ((0.8, 0.61, 0.9), "less"), ((0.8, 0.6, 0.9), "no clearly different")])
def test_marker_shares_differ_only_when_the_intervals_do_not_overlap(other, difference):
    comparison = MarkerComparison("gradcam", "clean", "simple_cnn", ci(0.5, 0.4, 0.6), ci(*other), 0.01,
                                  ci(0.3, 0.2, 0.4), ci(0.8, 0.7, 0.9))
    assert comparison.difference == difference


def test_a_zone_profile_sums_its_zones_per_height_side_and_depth():
    cam = {zone: 0.0 for zone in ZONES} | {"upper-right-central": 0.5, "lower-left-peripheral": 0.25,
                                           "lower-left-central": 0.25}
    area = {zone: 1 / 12 for zone in ZONES}
    profile = ZoneProfile(cam, area)
    assert profile.cam_marginals == {"upper": 0.5, "middle": 0.0, "lower": 0.5, "right": 0.5, "left": 0.5,
                                     "central": 0.75, "peripheral": 0.25}
    assert profile.area_marginals == pytest.approx({"upper": 1 / 3, "middle": 1 / 3, "lower": 1 / 3, "right": 0.5,
                                                    "left": 0.5, "central": 0.5, "peripheral": 0.5})


def summary_entry(overall: dict, **per_class: dict) -> dict:
    return {"overall": overall, "per_class": per_class}


def test_score_table_pairs_each_hit_rate_with_its_chance_and_drops_the_chance_keys():
    a, b, c = ({"mean": m, "low": m, "high": m, "n": 3} for m in (0.5, 0.1, 0.3))
    summary = {"pointing": summary_entry(a, COVID=a), "pointing_chance": summary_entry(b, COVID=c),
               "energy": summary_entry(c), "otsu_iou": summary_entry(a), "lung_share": summary_entry(a),
               "lung_share_flat": summary_entry(c), "pattern:lower": summary_entry(a),
               "pattern_value:lower": summary_entry(b)}
    table = score_table(summary)
    assert list(table) == ["pointing", "energy", "otsu_iou", "lung_share"]
    assert table["pointing"].chance == table["energy"].chance == Score(Interval(**b), {"COVID": Interval(**c)})
    assert table["pointing"].per_class == {"COVID": Interval(**a)}
    assert table["lung_share"].chance.overall == Interval(**c) and table["otsu_iou"].chance is None
    assert table["pointing"].versus_chance == "above" and table["energy"].versus_chance == "above"


def test_score_table_leaves_out_a_chance_level_that_was_not_scored():
    only = {"mean": 0.5, "low": 0.4, "high": 0.6, "n": 2}
    assert score_table({"marker_share": summary_entry(only)})["marker_share"].chance is None


def test_pattern_agreements_follow_the_expected_order_and_skip_what_was_not_scored():
    def entry(mean):
        return {"mean": mean, "low": mean, "high": mean, "n": 2}

    summary = {"pattern:lower": summary_entry(entry(0.5), COVID=entry(1.0)),
               "pattern_value:lower": summary_entry(entry(0.5), COVID=entry(0.6)),
               "pattern:diffuse": summary_entry(entry(0.0), Normal=entry(0.0)),
               "pattern_value:diffuse": summary_entry(entry(0.4), Normal=entry(0.4))}
    found = pattern_agreements(summary, {"Normal": ["diffuse"], "COVID": ["peripheral", "lower"]})
    assert [(p.cls, p.criterion, p.agrees.mean, p.value.mean, p.shown) for p in found] == [
        ("Normal", "diffuse", 0.0, 0.4, False), ("COVID", "lower", 1.0, 0.6, True)]


def evaluation(**changes) -> CamEvaluation:
    """A small hand-made result: pointing above chance, lungs below a flat map, one pattern shown
    and one not, a failing sanity check and a faithful ROAD."""
    chance = Score(ci(0.1, 0.1, 0.1), {})
    fields = dict(
        run="run", model="resnet50", checkpoint="run/checkpoints/best.pt", split_file="run/split.csv",
        method="gradcam", layer="layer4.2", grid=[4, 4], image_size=128, parameters=23_000_000, n_images=40,
        accuracy=0.9, masks=MaskCounts(40, 30, 0, 1),
        scores={"pointing": Score(ci(0.6, 0.4, 0.8), {}, chance), "zone_hit": Score(ci(0.2, 0.05, 0.4), {}, chance),
                "lung_share": Score(ci(0.3, 0.25, 0.35), {}, Score(ci(0.4, 0.4, 0.4), {}))},
        expected_patterns={"COVID": ["lower", "bilateral"]},
        patterns=[PatternAgreement("COVID", "lower", ci(0.75, 0.5, 1), ci(0.5, 0.4, 0.6)),
                  PatternAgreement("COVID", "bilateral", ci(0.25, 0, 0.5), ci(0.2, 0.1, 0.3))],
        lesion_patterns=[], zone_profiles={},
        pictures=Pictures({"COVID": (np.zeros((2, 2)), None)}, {}),
        faithfulness=Faithfulness(8, [50], [-0.2], [0.0], ci(0.1, 0.02, 0.2), ci(0.3, 0.2, 0.4), ci(0.1, 0, 0.2)),
        sanity=Sanity([SanityStep("trained", 1.0, 1.0), SanityStep("fc", 0.5, 0.6)]))
    return CamEvaluation(**{**fields, **changes})


def test_a_result_is_json_ready_without_its_pictures():
    result = evaluation()
    data = json.loads(json.dumps(plain([result])))[0]
    assert "pictures" not in data and data["grid"] == [4, 4] and data["masks"]["one_lung"] == 1
    assert data["scores"]["pointing"]["versus_chance"] == "above"
    assert data["scores"]["pointing"]["chance"]["overall"] == {"mean": 0.1, "low": 0.1, "high": 0.1, "n": 10}
    assert data["sanity"]["passes"] is False and data["faithfulness"]["verdict"] == "faithful"
    assert data["patterns"][1] == {"cls": "COVID", "criterion": "bilateral",
                                   "agrees": {"mean": 0.25, "low": 0, "high": 0.5, "n": 10},
                                   "value": {"mean": 0.2, "low": 0.1, "high": 0.3, "n": 10}, "shown": False}
    assert result.label == "resnet50 gradcam @ layer4.2 (4x4)" and result.grid_too_coarse
    assert not evaluation(grid=[7, 7]).grid_too_coarse and evaluation(grid=[7, 4]).grid_too_coarse
    assert result.pattern("COVID", "lower").value.mean == 0.5 and result.pattern("COVID", "upper") is None
    assert result.pattern("COVID", "lower", reference=True) is None  # no lesion reference given


def test_conclusions_word_the_verdicts_of_the_results():
    label = "resnet50 gradcam @ layer4.2 (4x4)"
    assert conclusions([evaluation()], None) == [
        f"Best localisation: {label} puts its CAM peak inside the lesion on 0.60 [0.40, 0.80] (chance 0.10) of lesion "
        "images, and within the pointing game's tolerance on n/a.",
        f"{label}: pointing game above chance (0.60), zone-level hit not distinguishable from chance (0.20); its 4x4 "
        "CAM grid is too coarse to point inside a lesion.",
        f"{label} puts 30% of its CAM mass in the lungs, less than a flat map (40%): it looks outside the lungs; check "
        "it for shortcuts.",
        f"{label} shows the expected pattern for most images in 1 of 2 criteria; not for COVID bilateral (25%).",
        f"{label} fails the randomisation sanity check: rank correlation 0.50 once every block is randomised.",
        f"{label} ROAD combined 0.10 [0.02, 0.20]: the pixels it marks matter to the model."]


def test_conclusions_of_the_shortcut_audit_compare_the_confounded_model_with_each_other():
    confounded, clean = evaluation(), evaluation(model="simple_cnn")
    comparison = MarkerComparison("gradcam", "clean", "simple_cnn", ci(0.4, 0.3, 0.5), ci(0.02, 0.01, 0.03), 0.01,
                                  ci(0.3, 0.2, 0.4), ci(0.8, 0.7, 0.9))
    audit = ShortcutAudit(6, 8, [AuditRow("confounded", confounded), AuditRow("clean", clean)], [comparison])
    assert conclusions([], audit) == [
        "Shortcut audit, gradcam: the confounded resnet50 puts 40.0% [30.0%, 50.0%] of its CAM mass on the marker, "
        "more than the clean simple_cnn (2.0% [1.0%, 3.0%]; flat map 1.0%), and 30% in the lungs against 80%."]
