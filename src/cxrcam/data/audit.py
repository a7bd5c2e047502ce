"""Can the classes be told apart without looking at the lungs? A check that a dataset is not trivial.

A logistic regression on whole-image intensity statistics (mean, std, histogram) sees exposure and
contrast but no anatomy. If it scores well above chance, a CNN may learn the same shortcut and its
CAMs will not show where the finding is.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cxrcam.data.images import read_grayscale


def global_intensity_features(path, bins: int = 32) -> np.ndarray:
    pixels = read_grayscale(path).astype(np.float32) / 255
    histogram, _ = np.histogram(pixels, bins=bins, range=(0, 1))
    return np.concatenate([[pixels.mean(), pixels.std()], histogram / pixels.size])


def global_intensity_baseline(paths: list, labels: list, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated accuracy of logistic regression on global intensity features."""
    features = np.stack([global_intensity_features(p) for p in paths])
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(cross_val_score(classifier, features, np.asarray(labels), cv=splitter).mean())
