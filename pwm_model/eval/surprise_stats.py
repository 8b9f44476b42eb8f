"""Statistics of the forecast surprise: the node's diagnostic-period WARN rule replayed on plan stamps, and AUROC.

``bench/surprise.py`` uses them to measure how often the surprise warns on nominal drives and how well it separates
shifted drives from nominal ones.
"""

from __future__ import annotations

import numpy as np


def period_warn_share(t_ns: np.ndarray, surprise: np.ndarray, warn: float, period_s: float) -> tuple[int, int]:
    """(periods warned, periods) where a period of camera time warns when its last finite surprise is above ``warn``."""
    ok = np.isfinite(surprise)
    t, s = t_ns[ok], surprise[ok]
    if not t.size:
        return 0, 0
    period = ((t - t[0]) // int(period_s * 1e9)).astype(np.int64)
    last = np.r_[period[1:] != period[:-1], True]  # the last plan of each period
    return int((s[last] > warn).sum()), int(last.sum())


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count one half)."""
    pos, neg = np.asarray(positive, float), np.asarray(negative, float)
    if not (pos.size and neg.size):
        return float("nan")
    both = np.concatenate([pos, neg])
    order = np.argsort(both, kind="mergesort")
    ranks = np.empty(both.size, float)
    sorted_vals = both[order]
    start = 0
    for end in range(1, both.size + 1):  # mid-ranks over runs of equal values
        if end == both.size or sorted_vals[end] != sorted_vals[start]:
            ranks[order[start:end]] = 0.5 * (start + end - 1) + 1.0
            start = end
    return float((ranks[:pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))
