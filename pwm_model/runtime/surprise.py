"""Forecast surprise: how unlikely a new frame's tokens were under what an earlier plan forecast for that moment.

When the frame at t arrives, the most recent plan whose forecast covers t (plan at t_p, frame k with
t_p + k * model_dt = t within the stamp tolerance) scores the frame's actual dyn codes against its forecast
distribution of frame k. Each code is ``B`` LFQ bits; the graphs give the distribution's marginal of every bit
(``forecast_bit_logp``), and the surprise is the negative log-likelihood of the observed bits, averaged over the
frame's slots:

    surprise = mean_i  sum_b  -log P_k(bit_b of code_i = observed)      nats per token, >= 0; NaN when no forecast

(the NLL under the product of the bit marginals: the forecast's joint distribution of a code's bits is not kept, so
this is the surprise of a forecast that treats the bits as independent). A forecast that was confident and right
scores near 0; one that was confident and wrong, or unsure, scores high. Unlike a count of mismatched codes it
separates "the world behaves as forecast" from "it does not" where the forecast is uncertain anyway. The export
calibrates it on held-out drives (``surprise_calibration`` in
``manifest.json``), which sets the node's default warning threshold.

A model exported before the bit log-probabilities were a graph output scores the older definition: the share of
slots whose greedy code differs from the actual one, slots that changed since the previous model frame weighted
``changed_weight`` and the others ``unchanged_weight`` (in [0, 1]).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

NLL_DEFINITION = "bit_nll"  # nats per token under the forecast's bit marginals
MISMATCH_DEFINITION = "weighted_mismatch"  # the older share of mismatched codes


def bits_of(codes: np.ndarray, bits: int) -> np.ndarray:
    """(...,) integer codes -> (..., bits) int64 bits, the most significant first (the LFQ index order)."""
    shifts = np.arange(bits - 1, -1, -1, dtype=np.int64)
    return (np.asarray(codes, np.int64)[..., None] >> shifts) & 1


def bit_nll(bit_logp: np.ndarray, actual: np.ndarray) -> float:
    """Mean over slots of the observed codes' bit NLL (nats per token): bit_logp (Ld, B, 2), actual (Ld,)."""
    logp = np.asarray(bit_logp, np.float64)
    observed = bits_of(actual, logp.shape[-2])  # (Ld, B)
    picked = np.take_along_axis(logp, observed[..., None], axis=-1)[..., 0]  # (Ld, B)
    return float(-picked.sum(-1).mean())


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
        self._plans: deque[tuple[int, np.ndarray, np.ndarray | None]] = deque()

    def clear(self) -> None:
        self._plans.clear()

    def record(self, t_ns: int, forecast_tokens: np.ndarray, bit_logp: np.ndarray | None = None) -> None:
        """Remember the forecast (F, Ld) of the plan made at ``t_ns`` and its bit log-probabilities (F, Ld, B, 2),
        None for a model without them."""
        if self.forecast_frames == 0:
            return
        self._plans.append((int(t_ns), np.asarray(forecast_tokens), None if bit_logp is None else np.asarray(bit_logp)))
        horizon = self.forecast_frames * self.model_dt_ns + self.tolerance_ns
        while self._plans and self._plans[0][0] < t_ns - horizon:
            self._plans.popleft()

    def score(self, t_ns: int, actual: np.ndarray, previous: np.ndarray | None) -> float:
        """Surprise of the frame at ``t_ns`` with dyn tokens ``actual`` (``previous``: the tokens of the frame one
        model frame earlier, None when unknown; the older definition weighs by it)."""
        for t_plan, forecast, bit_logp in reversed(self._plans):
            if t_plan >= t_ns:
                continue
            k = round((t_ns - t_plan) / self.model_dt_ns)
            if 1 <= k <= len(forecast) and abs(t_plan + k * self.model_dt_ns - t_ns) <= self.tolerance_ns:
                if bit_logp is not None:
                    return bit_nll(bit_logp[k - 1], actual)
                return weighted_mismatch(forecast[k - 1], actual, previous, self.changed_weight,
                                         self.unchanged_weight)
        return math.nan
