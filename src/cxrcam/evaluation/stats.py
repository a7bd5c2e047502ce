"""Means with percentile-bootstrap confidence intervals over images."""

from __future__ import annotations

import numpy as np


def bootstrap_ci(values, n_resamples: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """{mean, low, high, n} of the finite values; the same seed gives the same interval.
    With fewer than two values the interval is the mean itself (or NaN when there are none)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"mean": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0}
    mean = float(values.mean())
    if values.size < 2:
        return {"mean": mean, "low": mean, "high": mean, "n": int(values.size)}
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n_resamples, values.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return {"mean": mean, "low": float(low), "high": float(high), "n": int(values.size)}
