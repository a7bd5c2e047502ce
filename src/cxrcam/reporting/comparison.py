"""The seed's model-comparison slide as a table: one row per run of a multirun sweep."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)

COLUMNS = ("run", "model", "test_accuracy", "balanced_accuracy", "macro_f1", "macro_auroc",
           "epochs", "wall_time_s", "parameters")


def collect_runs(sweep_dir: str | Path) -> list[dict]:
    rows = []
    for metrics_file in sorted(Path(sweep_dir).glob("*/test_metrics.json")):
        m = json.loads(metrics_file.read_text())
        rows.append({"run": metrics_file.parent.name, "model": m["model"], "test_accuracy": m["accuracy"],
                     "balanced_accuracy": m["balanced_accuracy"], "macro_f1": m["macro_f1"],
                     "macro_auroc": m["macro_auroc"], "epochs": m["epochs"],
                     "wall_time_s": m["train_wall_s"], "parameters": m["num_parameters"]})
    return rows


def _format(column: str, value) -> str:
    if value is None:
        return "n/a"
    if column == "wall_time_s":
        return f"{value:.0f}"
    if column == "parameters":
        return f"{value / 1e6:.1f}M"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def write_comparison(sweep_dir: str | Path) -> list[dict]:
    """Write comparison.csv and comparison.md into the sweep dir; returns the rows."""
    sweep_dir = Path(sweep_dir)
    rows = collect_runs(sweep_dir)
    if not rows:
        return rows
    with open(sweep_dir / "comparison.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_format(c, row[c]) for c in COLUMNS) + " |" for row in rows]
    (sweep_dir / "comparison.md").write_text(
        "# Model comparison (test split)\n\n" + "\n".join(lines) + "\n\n"
        "Accuracy alone hides class imbalance: read it next to balanced accuracy and macro-F1. "
        "wall_time_s is training plus validation time.\n")
    return rows


class ComparisonTableCallback(Callback):
    """Hydra callback: after a multirun, tabulate every job that wrote test_metrics.json."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        rows = write_comparison(config.hydra.sweep.dir)
        if rows:
            log.info("model comparison written to %s/comparison.md", config.hydra.sweep.dir)
