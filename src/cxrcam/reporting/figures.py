"""Figures of a training run: confusion matrix, ROC curves, training curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_auc_score, roc_curve  # noqa: E402


def _save(fig, path: str | Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_confusion_matrix(matrix: list[list[int]], class_names: list[str], path: str | Path,
                          title: str = "") -> None:
    """Counts, with the row-normalised share (recall per true class) as colour and in brackets."""
    counts = np.asarray(matrix)
    shares = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.3 * n + 2.5, 1.1 * n + 2))
    im = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{counts[i, j]}\n({shares[i, j]:.0%})", ha="center", va="center",
                    color="white" if shares[i, j] > 0.5 else "black", fontsize=9)
    ax.set_xticks(range(n), class_names, rotation=30, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix (test)")
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of true class")
    _save(fig, path)


def plot_roc(y_true: np.ndarray, probs: np.ndarray, class_names: list[str], path: str | Path,
             title: str = "") -> None:
    """One-vs-rest ROC curve per class."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for k, name in enumerate(class_names):
        positives = y_true == k
        if positives.all() or not positives.any():
            continue
        fpr, tpr, _ = roc_curve(positives, probs[:, k])
        ax.plot(fpr, tpr, linestyle=("-", "--", "-.", ":")[k % 4],  # curves at AUC 1 overlap
                label=f"{name} (AUC {roc_auc_score(positives, probs[:, k]):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title or "ROC, one class vs rest (test)")
    ax.legend(loc="lower right", fontsize=8)
    _save(fig, path)


def plot_training_curves(history: list[dict], path: str | Path, title: str = "") -> None:
    """Loss on the left; validation accuracy, balanced accuracy and macro-F1 on the right."""
    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_score) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [row["train_loss"] for row in history], marker="o", label="train")
    ax_loss.plot(epochs, [row["val_loss"] for row in history], marker="o", label="validation")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy")
    ax_loss.legend()
    for key in ("val_accuracy", "val_balanced_accuracy", "val_macro_f1"):
        ax_score.plot(epochs, [row[key] for row in history], marker="o", label=key.removeprefix("val_"))
    ax_score.set_xlabel("epoch")
    ax_score.set_ylabel("validation score")
    ax_score.set_ylim(0, 1.02)
    ax_score.legend(loc="lower right")
    for ax in (ax_loss, ax_score):
        ax.set_xticks(epochs)
        ax.grid(alpha=0.3)
    fig.suptitle(title or "training curves")
    _save(fig, path)
