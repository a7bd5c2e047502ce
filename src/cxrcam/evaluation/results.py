"""What an evaluation finds, as typed values: every number with its interval, the chance level it is
judged against, the threshold it is held to, and the verdict. Reporting only words and draws these;
cam_metrics.json is their fields (:func:`plain`), pictures left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass

import numpy as np

from cxrcam.evaluation.anatomy import ZONES
from cxrcam.evaluation.attribution import marginals

# hit rates and shares, and the score a random point or a flat map gets for each
CHANCE = {"pointing": "pointing_chance", "pointing_tolerant": "pointing_tolerant_chance",
          "energy": "pointing_chance", "zone_hit": "zone_hit_chance",
          "lung_share": "lung_share_flat", "marker_share": "marker_share_flat",
          "marker_peak": "marker_peak_chance", "detected_marker_share": "detected_marker_share_flat",
          "detected_marker_peak": "detected_marker_peak_chance"}
BOX_PREFIX = "box_"  # the localisation scores against radiologists' boxes: the lesion-mask keys with this prefix
CHANCE |= {BOX_PREFIX + key: BOX_PREFIX + CHANCE[key]
           for key in ("pointing", "pointing_tolerant", "energy", "zone_hit")}
PASS_RANK_CORRELATION = 0.3  # a sanity check passes when the fully randomised CAM falls below this
MOST_IMAGES = 0.5  # a class shows its expected pattern when at least this share of its images agree


@dataclass(frozen=True)
class Interval:
    """A mean over images with its bootstrap confidence interval."""
    mean: float
    low: float
    high: float
    n: int

    def versus(self, level: float) -> str:
        """Where the interval lies against a level: above, below or overlapping it."""
        if self.low > level:
            return "above"
        if self.high < level:
            return "below"
        return "not distinguishable from"


@dataclass(frozen=True)
class Score:
    """One score over the evaluated images, overall and per true class; a hit rate or share also
    carries its chance level and where the overall interval lies against it."""
    overall: Interval
    per_class: dict[str, Interval]
    chance: Score | None = None
    versus_chance: str | None = field(init=False)

    def __post_init__(self):
        verdict = None if self.chance is None else self.overall.versus(self.chance.overall.mean)
        object.__setattr__(self, "versus_chance", verdict)

    def of(self, cls: str | None) -> Interval | None:
        """Overall (None) or one class's interval; None for a class without images."""
        return self.overall if cls is None else self.per_class.get(cls)


@dataclass(frozen=True)
class PatternAgreement:
    """How many of a class's images show one expected pattern criterion, and the mean value they
    were judged on (a share of lung mass, a left/right ratio or an evenness)."""
    cls: str
    criterion: str
    agrees: Interval
    value: Interval
    shown: bool = field(init=False)  # by most of the class's images

    def __post_init__(self):
        object.__setattr__(self, "shown", self.agrees.mean >= MOST_IMAGES)


@dataclass(frozen=True)
class ZoneProfile:
    """A class's mean share of CAM mass per lung zone, beside the zones' share of lung area, and
    both summed per height, side and depth (upper, ..., right, left, central, peripheral)."""
    cam: dict[str, float]
    area: dict[str, float]
    cam_marginals: dict[str, float] = field(init=False)
    area_marginals: dict[str, float] = field(init=False)

    def __post_init__(self):
        for kind in ("cam", "area"):
            object.__setattr__(self, f"{kind}_marginals", marginals(np.array([getattr(self, kind)[z] for z in ZONES])))


@dataclass(frozen=True)
class MaskCounts:
    lungs: int
    lesion: int
    marker: int
    one_lung: int  # lung masks that hold one lung only


@dataclass(frozen=True)
class BoxTruth:
    """The box file an evaluation was scored against, and how many of its images it covers."""
    file: str
    with_boxes: int  # evaluated images with at least one box (of their class, with boxes.label_column)
    without_finding: int  # listed without a box: empty rows only (a negative), or boxes of other classes
    not_listed: int  # not in the file: no box ground truth


@dataclass(frozen=True)
class PredictedLungs:
    """Lung masks a segmenter predicted (evaluate lungs=): for how many images, and how good they are:
    the segmenter's own Dice on its validation and test splits, and with lungs_mode=all the Dice of
    the dataset's masks against its predictions."""
    checkpoint: str
    mode: str  # missing: for images without a lung mask | all: for every image, in place of the dataset's
    image_size: int  # the segmenter's input
    trained_on: str  # the data group it was trained on (synthetic, covid_radiography, ...)
    val_dice: float
    test_dice: float | None
    n_images: int
    n_predicted: int
    agreement: Interval | None  # lungs_mode=all: Dice of the dataset's own masks against the predictions


@dataclass(frozen=True)
class Faithfulness:
    """ROAD and the confidence change on a class-balanced subset. ``verdict``: faithful (the
    combined score's interval is above 0), indistinguishable (it holds 0) or inverted (below)."""
    n_images: int
    percentiles: list[float]
    road_morf: list[float]  # mean probability change per percentile, most relevant removed first
    road_lerf: list[float]  # least relevant first
    road_combined: Interval
    confidence_drop: Interval
    confidence_increase: Interval
    verdict: str = field(init=False)

    def __post_init__(self):
        verdict = {"above": "faithful", "below": "inverted"}.get(self.road_combined.versus(0.0), "indistinguishable")
        object.__setattr__(self, "verdict", verdict)


@dataclass(frozen=True)
class SanityStep:
    block: str  # randomised down to this block ("trained": none)
    rank_correlation: float
    ssim: float


@dataclass(frozen=True)
class Sanity:
    """Cascading randomisation: the CAM must drift from the trained model's as weights are reset."""
    steps: list[SanityStep]
    threshold: float = PASS_RANK_CORRELATION
    passes: bool = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "passes", self.steps[-1].rank_correlation < self.threshold)


# what each edit of the causal test takes away, in the verdict's words
REMOVED = {"markers_removed": "the markers", "lungs_only": "what lies outside the lungs"}


@dataclass(frozen=True)
class Alteration:
    """One edit of the causal test (:mod:`cxrcam.evaluation.reliance`) on the ``n_images`` that have
    its mask: the scores before and after, and each change (after less before) with its paired
    bootstrap interval. ``verdict``: the model relies on what the edit removed when the accuracy
    change's interval lies below 0, does better without it when above, else neither is shown."""
    edit: str  # markers_removed or lungs_only
    n_images: int
    accuracy: float  # on these images unedited
    edited_accuracy: float
    balanced_accuracy: float
    edited_balanced_accuracy: float
    true_class_probability: float  # mean over images
    edited_true_class_probability: float
    accuracy_change: Interval
    balanced_accuracy_change: Interval
    true_class_probability_change: Interval
    verdict: str = field(init=False)

    def __post_init__(self):
        where = self.accuracy_change.versus(0.0)
        verdict = (f"relies on {REMOVED[self.edit]}" if where == "below" else
                   f"does better without {REMOVED[self.edit]}" if where == "above" else
                   f"shows no measurable reliance on {REMOVED[self.edit]}")
        object.__setattr__(self, "verdict", verdict)


@dataclass(frozen=True)
class Reliance:
    """The causal test of one model on one set of images; an edit no image has a mask for is None."""
    markers_removed: Alteration | None
    lungs_only: Alteration | None

    @property
    def alterations(self) -> list[Alteration]:
        return [a for a in (self.markers_removed, self.lungs_only) if a is not None]


@dataclass(frozen=True)
class Pictures:
    """Arrays for the report's figures, left out of cam_metrics.json."""
    mean_heatmaps: dict[str, tuple[np.ndarray, np.ndarray | None]]  # class: (mean CAM, mean lung mask or None)
    examples: dict[str, tuple[np.ndarray, np.ndarray]]  # class: (image, CAM) of its first image


@dataclass(frozen=True)
class CamEvaluation:
    """One model's CAMs by one method at one layer, on one split's images."""
    run: str
    model: str
    checkpoint: str
    split_file: str
    method: str
    layer: str
    grid: list[int]
    image_size: int
    parameters: int
    n_images: int
    accuracy: float
    masks: MaskCounts
    scores: dict[str, Score]  # localisation and attribution scores; chance levels sit inside them
    expected_patterns: dict[str, list[str]]
    patterns: list[PatternAgreement]
    lesion_patterns: list[PatternAgreement]  # the lesion masks scored as CAMs: what is reachable on this data
    zone_profiles: dict[str, ZoneProfile]
    pictures: Pictures = field(repr=False)
    faithfulness: Faithfulness | None = None
    sanity: Sanity | None = None
    seconds: float = 0.0
    box_truth: BoxTruth | None = None  # with boxes.file: the box_* scores' ground truth
    reliance: Reliance | None = None  # the causal test, with each model's first method and layer

    @property
    def label(self) -> str:
        """Model, method, layer and grid: results of one model at two layers must stay apart."""
        return f"{self.model} {self.method} @ {self.layer} ({'x'.join(map(str, self.grid))})"

    @property
    def grid_too_coarse(self) -> bool:
        """A 4x4 map or coarser cannot point inside a lesion."""
        return min(self.grid) <= 4

    def pattern(self, cls: str, criterion: str, reference: bool = False) -> PatternAgreement | None:
        found = self.lesion_patterns if reference else self.patterns
        return next((p for p in found if p.cls == cls and p.criterion == criterion), None)


@dataclass(frozen=True)
class MarkerComparison:
    """The confounded model's marker share against another model's on the same marked images;
    ``difference``: more or less when the intervals do not overlap."""
    method: str
    role: str  # of the other model: control or clean
    model: str
    confounded: Interval  # marker share
    other: Interval
    flat: float  # a flat map's marker share
    confounded_lungs: Interval  # lung share
    other_lungs: Interval
    difference: str = field(init=False)

    def __post_init__(self):
        difference = ("more" if self.confounded.low > self.other.high else
                      "less" if self.confounded.high < self.other.low else "no clearly different")
        object.__setattr__(self, "difference", difference)


@dataclass(frozen=True)
class AuditRow:
    role: str  # confounded, control or clean
    evaluation: CamEvaluation


@dataclass(frozen=True)
class ShortcutAudit:
    n_marked: int  # test images of the confounded run that carry the marker
    n_images: int
    rows: list[AuditRow]
    comparisons: list[MarkerComparison]


def loss_against(confounded: Alteration, other: Alteration) -> str:
    """Whether the confounded model loses more accuracy under an edit than another model: more or
    less when the two changes' intervals do not overlap."""
    if confounded.accuracy_change.high < other.accuracy_change.low:
        return "a clearly larger loss"
    if confounded.accuracy_change.low > other.accuracy_change.high:
        return "a clearly smaller loss"
    return "no clearly different loss"


def score_table(summary: dict) -> dict[str, Score]:
    """Typed scores from :func:`cxrcam.evaluation.scores.summarise`'s plain summary, each hit rate
    or share paired with its chance level (which is then no score of its own)."""
    def typed(entry: dict, chance: Score | None = None) -> Score:
        return Score(Interval(**entry["overall"]), {c: Interval(**ci) for c, ci in entry["per_class"].items()},
                     chance)

    chance_keys = set(CHANCE.values())
    return {metric: typed(entry, typed(summary[CHANCE[metric]]) if CHANCE.get(metric) in summary else None)
            for metric, entry in summary.items() if metric not in chance_keys and not metric.startswith("pattern")}


def pattern_agreements(summary: dict, expected: dict[str, list[str]]) -> list[PatternAgreement]:
    """Every (class, criterion) the summary holds an agreement for, in the order ``expected`` lists."""
    out = []
    for cls, criteria in expected.items():
        for criterion in criteria:
            agrees = summary.get(f"pattern:{criterion}", {}).get("per_class", {}).get(cls)
            if agrees:
                value = summary[f"pattern_value:{criterion}"]["per_class"][cls]
                out.append(PatternAgreement(cls, criterion, Interval(**agrees), Interval(**value)))
    return out


def plain(value):
    """A result as JSON-ready data: its fields, without the pictures."""
    if is_dataclass(value):
        return {f.name: plain(getattr(value, f.name)) for f in fields(value) if f.name != "pictures"}
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value
