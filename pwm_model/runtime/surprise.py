"""Forecast surprise: how far a new frame's tokens are from what an earlier plan forecast for that moment.

When the frame at t arrives, the most recent plan whose forecast covers t (plan at t_p, frame k with
t_p + k * model_dt = t within the stamp tolerance) is compared slot by slot with the frame's actual dyn tokens.
Slots whose actual token changed since the previous model frame weigh ``changed_weight``, the others
``unchanged_weight`` (the weights of the dynamic focal loss the model was trained with), so a forecast that merely
repeats the present scores badly where the world moved:

    surprise = sum_i w_i [forecast_i != actual_i] / sum_i w_i        in [0, 1]; NaN when no forecast covers t

A cheap monitor: it rises when the world stops behaving as the model expects (a cut-in, a sensor fault, a domain
the model never saw).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np


def weighted_mismatch(forecast: np.ndarray, actual: np.ndarray, previous: np.ndarray | None,
                      changed_weight: float, unchanged_weight: float) -> float:
    """Changed-token-weighted share of slots where ``forecast`` differs from ``actual`` (all (Ld,) codes)."""
    mismatch = np.asarray(forecast) != np.asarray(actual)
    if previous is None:
        return float(mismatch.mean())
    w = np.where(np.asarray(actual) != np.asarray(previous), changed_weight, unchanged_weight).astype(np.float64)
    total = float(w.sum())
    return float((w * mismatch).sum() / total) if total > 0 else float(mismatch.mean())


class SurpriseMonitor:
    """Keeps recent forecasts and scores each new frame against the newest one that covers its stamp."""

    def __init__(self, model_dt_ns: int, forecast_frames: int, tolerance_ns: int, changed_weight: float,
                 unchanged_weight: float) -> None:
        self.model_dt_ns, self.forecast_frames, self.tolerance_ns = int(model_dt_ns), int(forecast_frames), int(
            tolerance_ns)
        self.changed_weight, self.unchanged_weight = float(changed_weight), float(unchanged_weight)
        self._plans: deque[tuple[int, np.ndarray]] = deque()

    def clear(self) -> None:
        self._plans.clear()

    def record(self, t_ns: int, forecast_tokens: np.ndarray) -> None:
        """Remember the forecast (F, Ld) of the plan made at ``t_ns``."""
        if self.forecast_frames == 0:
            return
        self._plans.append((int(t_ns), np.asarray(forecast_tokens)))
        horizon = self.forecast_frames * self.model_dt_ns + self.tolerance_ns
        while self._plans and self._plans[0][0] < t_ns - horizon:
            self._plans.popleft()

    def score(self, t_ns: int, actual: np.ndarray, previous: np.ndarray | None) -> float:
        """Surprise of the frame at ``t_ns`` with dyn tokens ``actual`` (``previous``: the tokens of the frame one
        model frame earlier, None when unknown)."""
        for t_plan, forecast in reversed(self._plans):
            if t_plan >= t_ns:
                continue
            k = round((t_ns - t_plan) / self.model_dt_ns)
            if 1 <= k <= len(forecast) and abs(t_plan + k * self.model_dt_ns - t_ns) <= self.tolerance_ns:
                return weighted_mismatch(forecast[k - 1], actual, previous, self.changed_weight,
                                         self.unchanged_weight)
        return math.nan
