"""Where in the chest the CAM mass lies: lungs versus elsewhere, the lung-zone profile, and how
that profile agrees with the pattern a class should show.

Mass outside the lungs is the classic sign of a shortcut (text markers, devices, image borders).
The zone profile is compared with the zones' share of lung area, which is what a flat map inside
the lungs would give: a zone is 'favoured' when it holds more mass than its area.
"""

from __future__ import annotations

import numpy as np

from cxrcam.evaluation.anatomy import DEPTHS, HEIGHTS, SIDES, ZONES
from cxrcam.evaluation.localisation import mass_share, pointing_hit

AXES = {"height": HEIGHTS, "side": SIDES, "depth": DEPTHS}
CRITERIA = ("upper", "middle", "lower", "central", "peripheral", "bilateral", "unilateral", "diffuse",
            "upper_or_diffuse")


def zone_profile(values: np.ndarray, zones: np.ndarray) -> np.ndarray:
    """Shares of ``values``' lung mass per zone (len(ZONES), sums to 1); ``values`` may be a CAM or
    the lung mask itself (then: the zones' area shares). A map with no lung mass counts as flat."""
    sums = np.bincount(zones[zones >= 0], weights=values[zones >= 0].astype(np.float64), minlength=len(ZONES))
    if sums.sum() <= 0:
        sums = np.bincount(zones[zones >= 0], minlength=len(ZONES)).astype(np.float64)
    return sums / max(sums.sum(), 1e-12)


def marginals(profile: np.ndarray) -> dict[str, float]:
    """The zone profile summed per height (upper/middle/lower), side and depth."""
    out = {}
    for names in AXES.values():
        for name in names:
            out[name] = float(sum(p for zone, p in zip(ZONES, profile, strict=True) if name in zone.split("-")))
    return out


def evenness(profile: np.ndarray, area_profile: np.ndarray) -> float:
    """1 minus the total-variation distance to the area profile: 1 for mass spread like the lung
    area, near 0 for mass in one small zone."""
    return float(1 - 0.5 * np.abs(profile - area_profile).sum())


def pattern_agreement(profile: np.ndarray, area_profile: np.ndarray, criteria: list[str],
                      thresholds: dict) -> dict[str, tuple[bool, float]]:
    """criterion -> (agrees, the measured value it was judged on) for one image's CAM."""
    share, area = marginals(profile), marginals(area_profile)
    weaker, stronger = sorted((share["right"], share["left"]))
    spread = evenness(profile, area_profile)
    result = {}
    for criterion in criteria:
        if criterion in HEIGHTS + DEPTHS:  # favoured: more mass than the zones' share of lung area
            result[criterion] = (share[criterion] > area[criterion], share[criterion])
        elif criterion == "bilateral":
            ratio = weaker / stronger if stronger > 0 else 0.0
            result[criterion] = (ratio >= thresholds["bilateral_min_ratio"], ratio)
        elif criterion == "unilateral":
            result[criterion] = (stronger >= thresholds["unilateral_min_share"], stronger)
        elif criterion == "diffuse":
            result[criterion] = (spread >= thresholds["diffuse_min_evenness"], spread)
        elif criterion == "upper_or_diffuse":
            result[criterion] = (share["upper"] > area["upper"] or spread >= thresholds["diffuse_min_evenness"],
                                 share["upper"])
        else:
            raise ValueError(f"unknown pattern criterion {criterion!r}; known: {list(CRITERIA)}")
    return result


def attribution_scores(cam: np.ndarray, lungs: np.ndarray, zones: np.ndarray) -> dict:
    """Lung share of the mass (with the lungs' share of the image as its flat-map reference) and the
    zone profile; the share on a burned-in marker is :func:`marker_scores`'."""
    return {"lung_share": mass_share(cam, lungs), "lung_share_flat": float(lungs.mean()),
            "zone_profile": zone_profile(cam, zones)}


def marker_scores(cam: np.ndarray, marker: np.ndarray, key: str) -> dict:
    """``key``_share: CAM mass on the markers, ``key``_peak: whether the CAM's peak sits on one,
    each with its chance level (a flat map's share, a random point's hit rate: the markers' area)."""
    area = float(marker.mean())
    return {f"{key}_share": mass_share(cam, marker), f"{key}_share_flat": area,
            f"{key}_peak": pointing_hit(cam, marker), f"{key}_peak_chance": area}
