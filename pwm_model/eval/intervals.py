"""Confidence intervals for clips that are not independent: a bootstrap that resamples whole drives.

Clips of one drive overlap (consecutive clips share most frames) and events span several clips, so a clip is not an
independent sample; resampling drives (the clusters) with replacement and every clip of a drawn drive keeps that
dependence inside each replicate. A difference between two planners on the same clips is a per-clip difference,
bootstrapped the same way (paired by clip, clustered by drive).
"""

from __future__ import annotations

import numpy as np

BOOTSTRAP_REPLICATES = 2000


def cluster_bootstrap(values: np.ndarray, clusters: np.ndarray, *, replicates: int = BOOTSTRAP_REPLICATES,
                      level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """The mean of per-clip ``values`` (N,) and its percentile interval, resampling the ``clusters`` (N,).

    NaN values are left out (a clip where the quantity is undefined). Returns (mean, lo, hi); (nan, nan, nan)
    with no finite value.
    """
    values = np.asarray(values, np.float64).reshape(-1)
    clusters = np.asarray(clusters).reshape(-1)
    if values.shape != clusters.shape:
        raise ValueError(f"values {values.shape} and clusters {clusters.shape} must have the same length")
    ok = np.isfinite(values)
    values, clusters = values[ok], clusters[ok]
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    ids, inverse = np.unique(clusters, return_inverse=True)
    sums = np.bincount(inverse, weights=values, minlength=len(ids))  # per cluster
    counts = np.bincount(inverse, minlength=len(ids)).astype(np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(ids), (replicates, len(ids)))  # clusters drawn with replacement
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(means, [tail, 100.0 - tail])
    return float(values.mean()), float(lo), float(hi)


def paired_difference(a: np.ndarray, b: np.ndarray, clusters: np.ndarray, **kwargs: object
                      ) -> tuple[float, float, float]:
    """Mean of ``a - b`` over the same clips with its drive-clustered interval (see ``cluster_bootstrap``)."""
    return cluster_bootstrap(np.asarray(a, np.float64) - np.asarray(b, np.float64), clusters, **kwargs)
