"""Classification metrics that stay honest under class imbalance."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix,
                             f1_score, precision_recall_fscore_support, roc_auc_score)


def macro_auroc(y_true: np.ndarray, probs: np.ndarray) -> float | None:
    """Macro one-vs-rest AUROC over the classes present; None when fewer than two are present."""
    present = np.unique(y_true)
    if len(present) < 2:
        return None
    aucs = [roc_auc_score(y_true == k, probs[:, k]) for k in present]
    return float(np.mean(aucs))


def quick_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict:
    """The per-epoch validation numbers: accuracy always next to balanced accuracy and macro-F1."""
    y_pred = probs.argmax(1)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", labels=range(probs.shape[1]),
                                   zero_division=0)),
    }


def classification_report(y_true: np.ndarray, probs: np.ndarray, class_names: list[str]) -> dict:
    labels = list(range(len(class_names)))
    y_pred = probs.argmax(1)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    return {
        **quick_metrics(y_true, probs),
        "macro_auroc": macro_auroc(y_true, probs),
        "n_images": int(len(y_true)),
        "per_class": {name: {"precision": float(precision[k]), "recall": float(recall[k]),
                             "f1": float(f1[k]), "support": int(support[k])}
                      for k, name in enumerate(class_names)},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "class_names": list(class_names),
    }
