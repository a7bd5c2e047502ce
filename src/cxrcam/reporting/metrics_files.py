"""An evaluation's numbers as files: cam_metrics.json (every result's fields) and cam_metrics.csv
(one row per number, for a spreadsheet or pandas)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from cxrcam.evaluation.results import CamEvaluation, Interval, PredictedLungs, ShortcutAudit, plain

CSV_HEADER = ["run", "model", "method", "layer", "grid", "metric", "class", "mean", "ci_low", "ci_high", "n", "chance"]


def write_metrics(results: list[CamEvaluation], audit: ShortcutAudit | None, out_dir: Path,
                  lungs: PredictedLungs | None = None) -> None:
    data = {"models": plain(results)}
    if audit:
        data["shortcut_audit"] = plain(audit)
    if lungs:
        data["predicted_lungs"] = plain(lungs)
    (out_dir / "cam_metrics.json").write_text(json.dumps(data, indent=2))
    with open(out_dir / "cam_metrics.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_HEADER)
        for result in results:
            writer.writerows(csv_rows(result))


def csv_rows(result: CamEvaluation) -> list[list[str]]:
    head = [result.run, result.model, result.method, result.layer, "x".join(map(str, result.grid))]

    def row(metric: str, cls: str, ci: Interval, chance: Interval | None = None) -> list[str]:
        return head + [metric, cls, *(f"{v:.4f}" for v in (ci.mean, ci.low, ci.high)), str(ci.n),
                       "" if chance is None else f"{chance.mean:.4f}"]

    rows = []
    for metric, score in result.scores.items():
        for cls in [None, *score.per_class]:
            rows.append(row(metric, cls or "all", score.of(cls), score.chance.of(cls) if score.chance else None))
    for p in result.patterns:
        rows += [row(f"pattern:{p.criterion}", p.cls, p.agrees), row(f"pattern_value:{p.criterion}", p.cls, p.value)]
    if result.faithfulness:
        for metric in ("road_combined", "confidence_drop", "confidence_increase"):
            rows.append(row(metric, "all", getattr(result.faithfulness, metric)))
    for step in result.sanity.steps if result.sanity else []:
        for metric in ("rank_correlation", "ssim"):
            rows.append(head + [f"sanity_{metric}@{step.block}", "all", f"{getattr(step, metric):.4f}", "", "", "", ""])
    for alteration in result.reliance.alterations if result.reliance else []:  # the causal test
        for metric in ("accuracy_change", "balanced_accuracy_change", "true_class_probability_change"):
            rows.append(row(f"{metric}:{alteration.edit}", "all", getattr(alteration, metric)))
    return rows
