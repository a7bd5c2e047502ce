"""The evaluation report's figures; each takes the results of cxrcam.evaluate and writes one PNG.

A result is one model with one CAM method at one layer; its label says all three, since the report
must keep, say, ResNet50 at layer3 and at layer4, or Grad-CAM and HiResCAM, apart.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cxrcam.evaluation.attribution import AXES  # noqa: E402
from cxrcam.evaluation.results import CamEvaluation, Score, ShortcutAudit  # noqa: E402
from cxrcam.reporting.overlays import overlay_rgb  # noqa: E402

LOCALISATION = (("pointing", "pointing game"), ("pointing_tolerant", "pointing game, tolerant"),
                ("zone_hit", "zone-level hit"), ("energy", "energy in lesion"), ("otsu_iou", "Otsu IoU"))
MARGINALS = [name for names in AXES.values() for name in names]


def figure_label(result: CamEvaluation) -> str:
    """The result's label on two lines, for axis labels beside a small panel."""
    return result.label.replace(" @ ", "\n@ ")


def _save(fig, path: Path) -> None:
    """Tight layout that keeps half an inch on top for the suptitle (a fifth more per extra line),
    whatever the figure's height."""
    lines = fig._suptitle.get_text().count("\n") + 1 if fig._suptitle else 0
    fig.tight_layout(rect=(0, 0, 1, 1 - (0.3 + 0.2 * lines) / fig.get_figheight()) if lines else None)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _class_grid(results: list[CamEvaluation], classes: list[str], draw, path: Path, title: str, cell: float) -> None:
    """Rows = model/method/layer, columns = classes; ``draw(ax, result, cls)`` fills a cell."""
    # at least 3 cells wide and room above for the title, so that a 2-class grid of one row keeps its labels
    fig, axes = plt.subplots(len(results), len(classes), squeeze=False,
                             figsize=(cell * max(len(classes), 3), (cell + 0.1) * len(results) + 0.5))
    for r, result in enumerate(results):
        for c, cls in enumerate(classes):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            draw(ax, result, cls)
            if r == 0:
                ax.set_title(cls, fontsize=10)
            if c == 0:
                ax.set_ylabel(figure_label(result), fontsize=8)
    # wrapped to the figure's width: with two classes the grid is narrower than its title
    fig.suptitle(textwrap.fill(title, width=max(30, int(13 * fig.get_figwidth()))), fontsize=10)
    _save(fig, path)


def plot_examples(results: list[CamEvaluation], classes: list[str], path: Path) -> None:
    """The first test image of each class with its CAM."""
    def draw(ax, result, cls):
        if cls in result.pictures.examples:
            ax.imshow(overlay_rgb(*result.pictures.examples[cls]))

    _class_grid(results, classes, draw, path, "CAM of the true class, first test image of each class", 2.5)


def plot_mean_heatmaps(results: list[CamEvaluation], classes: list[str], path: Path) -> None:
    """The class's mean CAM, with the mean lung outline."""
    def draw(ax, result, cls):
        if cls in result.pictures.mean_heatmaps:
            heat, lungs = result.pictures.mean_heatmaps[cls]
            ax.imshow(heat, cmap="jet", vmin=0, vmax=max(float(heat.max()), 1e-6))
            if lungs is not None:
                ax.contour(lungs, levels=[0.5], colors="white", linewidths=1.0)

    _class_grid(results, classes, draw, path, "Mean CAM per class (lung-aligned frame: lungs' bounding box; white: "
                "mean lung outline; patient's right on the left)", 2.4)


def plot_localisation(results: list[CamEvaluation], classes: list[str], path: Path) -> None:
    """One panel per score: bars per class and model with 95 % CIs; black ticks: chance level."""
    groups = ["all"] + [c for c in classes if any("pointing" in r.scores and c in r.scores["pointing"].per_class
                                                   for r in results)]
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.6), squeeze=False)
    width = 0.8 / len(results)
    for ax, (metric, title) in zip(axes.flat, LOCALISATION, strict=False):
        for m, result in enumerate(results):
            score = result.scores.get(metric)
            if not score:
                continue
            cis = [score.of(None if g == "all" else g) for g in groups]
            x = np.arange(len(groups)) + (m - (len(results) - 1) / 2) * width
            means = np.array([ci.mean if ci else np.nan for ci in cis])
            errors = np.array([[ci.mean - ci.low, ci.high - ci.mean] if ci else [0, 0] for ci in cis]).T
            ax.bar(x, means, width, yerr=errors, capsize=2, label=result.label)
            if score.chance:
                levels = [_mean(score.chance, g) for g in groups]
                ax.scatter(x, levels, marker="_", s=120, color="black", zorder=3, label="chance" if m == 0 else None)
        ax.set_xticks(np.arange(len(groups)), groups, rotation=20, fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title(title, fontsize=10)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    axes[1, 2].axis("off")
    axes[1, 2].legend(handles, labels, fontsize=8, loc="center")
    _save(fig, path)


def plot_zone_profiles(results: list[CamEvaluation], classes: list[str], path: Path) -> None:
    """Rows = model/layer, columns = classes: CAM mass per height, side and depth (coloured) next to
    the lung area's share (grey), which is what a flat map would give."""
    fig, axes = plt.subplots(len(results), len(classes), figsize=(3.2 * len(classes), 2.4 * len(results)),
                             squeeze=False, sharey=True)
    x = np.arange(len(MARGINALS))
    for r, result in enumerate(results):
        for c, cls in enumerate(classes):
            ax = axes[r, c]
            profile = result.zone_profiles.get(cls)
            if profile:
                cam = [profile.cam_marginals[name] for name in MARGINALS]
                area = [profile.area_marginals[name] for name in MARGINALS]
                ax.bar(x - 0.2, area, 0.4, color="0.75", label="lung area")
                ax.bar(x + 0.2, cam, 0.4, color="tab:red", label="CAM mass")
            ax.set_xticks(x, MARGINALS, rotation=60, fontsize=7)
            ax.set_ylim(0, 1)
            if r == 0:
                ax.set_title(cls, fontsize=10)
            if c == 0:
                ax.set_ylabel(figure_label(result), fontsize=7)
    filled = [ax for ax in axes.flat if ax.containers]  # a class without images has no bars
    if filled:
        filled[0].legend(fontsize=7)
    fig.suptitle("Zone profile inside the lungs (patient's sides)", fontsize=10)
    _save(fig, path)


def _mean(score: Score, group: str) -> float:
    ci = score.of(None if group == "all" else group)
    return ci.mean if ci else np.nan


def _agreeing(agreement) -> float:
    return agreement.agrees.mean if agreement else np.nan


def plot_pattern_agreement(results: list[CamEvaluation], classes: list[str], path: Path) -> None:
    """Rows = the lesion masks (reference) where the data has any, then model/layer; columns = class:
    criterion; cells: the share of images whose CAM agrees."""
    columns = [(c, crit) for c in classes for crit in results[0].expected_patterns.get(c, [])]
    reference = [("lesion masks (reference)", results[0], True)] if results[0].lesion_patterns else []
    rows = reference + [(r.label, r, False) for r in results]
    values = np.array([[_agreeing(result.pattern(c, crit, reference)) for c, crit in columns]
                       for _, result, reference in rows])
    fig, ax = plt.subplots(figsize=(1.1 * len(columns) + 3, 0.55 * len(rows) + 1.8))
    image = ax.imshow(values, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, "n/a" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(np.arange(len(columns)), [f"{c}\n{crit}" for c, crit in columns], fontsize=7, rotation=30)
    ax.set_yticks(np.arange(len(rows)), [label for label, _, _ in rows], fontsize=8)
    fig.colorbar(image, ax=ax, label="share of images agreeing")
    ax.set_title("Agreement with the expected pattern of each class", fontsize=10)
    _save(fig, path)


def plot_sanity(results: list[CamEvaluation], path: Path) -> None:
    """One panel per model/layer: rank correlation and SSIM with the trained CAM as blocks are
    re-initialised from the output end; a passing method falls (dashed: 0.3)."""
    checked = [r for r in results if r.sanity]
    columns = min(3, len(checked))
    rows = -(-len(checked) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.9 * rows), squeeze=False)
    for ax in axes.flat[len(checked):]:
        ax.axis("off")
    for ax, result in zip(axes.flat, checked, strict=False):
        steps = result.sanity.steps
        x = np.arange(len(steps))
        ax.plot(x, [s.rank_correlation for s in steps], "o-", label="Spearman rank correlation")
        ax.plot(x, [s.ssim for s in steps], "s--", label="SSIM")
        ax.axhline(result.sanity.threshold, color="black", linestyle=":", linewidth=1)
        ax.set_xticks(x, [s.block for s in steps], rotation=90, fontsize=6)
        ax.set_ylim(-0.5, 1.05)
        ax.set_title(result.label, fontsize=9)
        ax.set_xlabel("randomised down to block (cumulative)", fontsize=8)
    axes[0, 0].legend(fontsize=7)
    _save(fig, path)


def plot_road(results: list[CamEvaluation], path: Path) -> None:
    """Probability change as the most (solid) or least (dashed) relevant pixels are imputed."""
    fig, ax = plt.subplots(figsize=(9.5, 3.8))
    for i, result in enumerate(r for r in results if r.faithfulness):
        faith = result.faithfulness
        removed = [100 - p for p in faith.percentiles]
        colour = f"C{i}"
        ax.plot(removed, faith.road_morf, "o-", color=colour, label=f"{result.label} most relevant first")
        ax.plot(removed, faith.road_lerf, "o--", color=colour, label="least relevant first")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel("% of pixels removed (ROAD imputation)")
    ax.set_ylabel("change in true-class probability")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    _save(fig, path)


def plot_shortcut(audit: ShortcutAudit, path: Path) -> None:
    """Columns = roles (confounded first); per CAM method two rows: the mean CAM over the marked
    images in the image frame, then the CAM of one marked image."""
    methods = list(dict.fromkeys(row.evaluation.method for row in audit.rows))
    roles = list(dict.fromkeys(row.role for row in audit.rows))
    fig, axes = plt.subplots(2 * len(methods), len(roles), figsize=(3.3 * len(roles), 3.4 * 2 * len(methods)),
                             squeeze=False)
    for row in audit.rows:
        result = row.evaluation
        top, m = 2 * methods.index(result.method), roles.index(row.role)
        heatmaps = result.pictures.mean_heatmaps
        counts = [result.scores["lung_share"].per_class[c].n for c in heatmaps]
        mean = np.average([heat for heat, _ in heatmaps.values()], axis=0, weights=counts)
        axes[top, m].imshow(mean, cmap="jet", vmin=0, vmax=max(float(mean.max()), 1e-6))
        share = result.scores["marker_share"].overall.mean
        axes[top, m].set_title(f"{row.role} {result.model}, {result.method}\nmean CAM: {share:.1%} on the marker",
                               fontsize=9)
        gray, cam = next(iter(result.pictures.examples.values()))
        axes[top + 1, m].imshow(overlay_rgb(gray, cam))
        axes[top + 1, m].set_title(f"{result.method}, one marked test image", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    _save(fig, path)
