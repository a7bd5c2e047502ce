"""Per-image CAM scores, and their per-class and overall summaries with bootstrap intervals."""

from __future__ import annotations

import numpy as np

from cxrcam.evaluation.anatomy import ZONES, zone_map
from cxrcam.evaluation.attribution import attribution_scores, marker_scores, pattern_agreement, zone_profile
from cxrcam.evaluation.localisation import localisation_scores
from cxrcam.evaluation.results import BOX_PREFIX
from cxrcam.evaluation.samples import Sample
from cxrcam.evaluation.stats import bootstrap_ci

MARKER_KEY, DETECTED_MARKER_KEY = "marker", "detected_marker"  # the dataset's marker masks; the detector's


def image_scores(cam: np.ndarray, sample: Sample, settings: dict) -> dict:
    """Every score one image's CAM gets from the masks it has. ``settings``: tolerance_px,
    peripheral_from, criteria (this class's expected pattern), thresholds."""
    scores: dict = {}
    zones = None
    if sample.lungs is not None and sample.lungs.any():
        zones = zone_map(sample.lungs, settings["peripheral_from"])
        scores.update(attribution_scores(cam, sample.lungs, zones))
        area = zone_profile(sample.lungs.astype(np.float32), zones)
        scores["area_profile"] = area
        for criterion, (agrees, value) in pattern_agreement(scores["zone_profile"], area, settings["criteria"],
                                                            settings["thresholds"]).items():
            scores[f"pattern:{criterion}"], scores[f"pattern_value:{criterion}"] = float(agrees), value
    if sample.lesion is not None and sample.lesion.any():
        scores.update(localisation_scores(cam, sample.lesion, zones, settings["tolerance_px"]))
    if sample.boxes is not None and sample.boxes.any():  # the same scores against the radiologists' boxes
        scores.update({BOX_PREFIX + key: value for key, value in
                       localisation_scores(cam, sample.boxes, zones, settings["tolerance_px"]).items()})
    for key, marker in ((MARKER_KEY, sample.marker), (DETECTED_MARKER_KEY, sample.detected_marker)):
        if marker is not None and marker.any():
            scores.update(marker_scores(cam, marker, key))
    return scores


def summarise(records: list[dict], labels: list[str], classes: list[str], bootstrap: dict) -> dict:
    """{metric: {"overall": ci, "per_class": {class: ci}}} for every scalar score, where ci is
    {mean, low, high, n} over the images that have the score."""
    keys = sorted({k for r in records for k, v in r.items() if np.isscalar(v)})
    summary = {}
    for key in keys:
        per_class = {c: _ci(key, [r for r, lab in zip(records, labels, strict=True) if lab == c], bootstrap)
                     for c in classes}
        summary[key] = {"overall": _ci(key, records, bootstrap),
                        "per_class": {c: v for c, v in per_class.items() if v["n"]}}
    return summary


def _ci(key: str, records: list[dict], bootstrap: dict) -> dict:
    return bootstrap_ci([r[key] for r in records if key in r], bootstrap["n_resamples"], bootstrap["level"],
                        bootstrap["seed"])


def mean_zone_profiles(records: list[dict], labels: list[str], classes: list[str]) -> dict:
    """{class: {"cam": {zone: share}, "area": {zone: share}}}: the mean profile of each class's
    CAMs next to the mean area profile of its lungs."""
    out = {}
    for c in classes:
        rows = [r for r, lab in zip(records, labels, strict=True) if lab == c and "zone_profile" in r]
        if rows:
            out[c] = {kind: dict(zip(ZONES, np.mean([r[key] for r in rows], axis=0).round(5).tolist(), strict=True))
                      for kind, key in (("cam", "zone_profile"), ("area", "area_profile"))}
    return out


def lesion_reference(samples: list[Sample], settings: dict, patterns: dict, classes: list[str],
                     bootstrap: dict) -> dict:
    """Pattern agreement of the lesion masks themselves, scored like CAMs: what a map on exactly the
    lesion gets, which shows whether each expected pattern is reachable on this data at all."""
    records, labels = [], []
    for s in samples:
        if s.lesion is not None and s.lesion.any() and s.lungs is not None and s.lungs.any():
            scores = image_scores(s.lesion.astype(np.float32), s, {**settings, "criteria": patterns.get(s.label, [])})
            records.append({k: v for k, v in scores.items() if k.startswith("pattern")})
            labels.append(s.label)
    return summarise(records, labels, classes, bootstrap)
