"""95 % intervals of the headline bag metrics: a bootstrap over blocks of drive time.

Consecutive plans of one drive are not independent samples: a plan every 0.1 s with a 4 s horizon shares most of
its future with the next forty plans, and one manoeuvre spans many of them. So the plans are cut into blocks of
``BLOCK_S`` seconds of drive time (per drive) and ``intervals.cluster_bootstrap`` resamples whole blocks; a
difference against the baseline is paired: the per-plan (per-waypoint) difference bootstrapped over the same blocks,
as ``intervals.paired_difference`` does.

Each interval is over exactly the values its headline pools, so its mean is the headline: L2 up to T over every
valid (plan, waypoint) pair up to T (the VAD protocol of ``metrics.l2_metrics``), L2 @T over the plans whose truth
reaches T, the collision rate over the plans with ground truth (1 or 0 each), the forecast PSNR / SSIM at 1 s over
the decoded forecasts. With fewer than ``MIN_BLOCKS`` blocks there is no interval (``lo`` / ``hi`` None).

    intervals = interval_metrics(evals)   # {"l2_3s": {"mean", "lo", "hi", "blocks", "n"}, "diff_l2_3s": ..., ...}
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pwm_model.eval import metrics as M
from pwm_model.eval.bag_types import BagEvaluation
from pwm_model.eval.intervals import BOOTSTRAP_REPLICATES, cluster_bootstrap

BLOCK_S = 5.0  # seconds of drive time per bootstrap block (longer than the 4 s plan horizon of the presets)
MIN_BLOCKS = 3  # fewer blocks than this: no interval
LEVEL = 0.95
BLOCK_STRIDE = 1_000_000  # cluster id = drive index * this + block index


def blocks(ev: BagEvaluation, t_ns: np.ndarray, drive: int, block_s: float = BLOCK_S) -> np.ndarray:
    """The bootstrap block (cluster id) of each stamp ``t_ns`` of drive number ``drive``."""
    rel = (np.asarray(t_ns, np.int64) - ev.start_ns) / 1e9
    return drive * BLOCK_STRIDE + np.floor(np.maximum(rel, 0.0) / block_s).astype(np.int64)


def interval(values: np.ndarray, clusters: np.ndarray) -> dict[str, Any]:
    """``{"mean", "lo", "hi", "blocks", "n"}`` of ``values`` resampled by ``clusters`` (NaN left out)."""
    values = np.asarray(values, np.float64)
    clusters = np.asarray(clusters)
    ok = np.isfinite(values)
    n, nb = int(ok.sum()), int(len(np.unique(clusters[ok])))
    if n == 0:
        return {"mean": math.nan, "lo": math.nan, "hi": math.nan, "blocks": 0, "n": 0}
    mean, lo, hi = cluster_bootstrap(values, clusters, level=LEVEL)
    if nb < MIN_BLOCKS:
        lo = hi = math.nan
    return {"mean": mean, "lo": lo, "hi": hi, "blocks": nb, "n": n}


def _l2_pairs(evals: list[BagEvaluation], block_s: float, horizon_s: float, uniad: bool
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PWM's and constant velocity's displacement errors of the (plan, waypoint) pairs a headline L2 pools, and
    their blocks."""
    pwm, cv, cl = [], [], []
    for j, e in enumerate(evals):
        if not e.has_odometry:
            continue
        kh = M.horizon_index(horizon_s, e.waypoint_dt_s, e.plans.shape[1])
        if kh is None:
            continue
        err_p = M.displacement_errors(e.plans, e.truth)
        err_c = M.displacement_errors(e.cv, e.truth)
        b = np.repeat(blocks(e, e.plan_t_ns, j, block_s)[:, None], e.plans.shape[1], axis=1)
        mask = np.zeros_like(e.truth_valid, bool)
        if uniad:
            mask[:, kh - 1] = e.truth_valid[:, kh - 1]
        else:
            mask[:, :kh] = e.truth_valid[:, :kh]
        pwm.append(err_p[mask])
        cv.append(err_c[mask])
        cl.append(b[mask])
    if not pwm:
        return np.zeros(0), np.zeros(0), np.zeros(0, np.int64)
    return np.concatenate(pwm), np.concatenate(cv), np.concatenate(cl)


def collision_flags(e: BagEvaluation) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per plan of one drive with boxes: PWM hits, constant velocity hits (bool) and whether the plan is scored
    (has ground truth); all False without odometry or boxes."""
    n = len(e.plan_t_ns)
    scored = e.truth_valid.any(axis=1) if (e.has_odometry and e.has_boxes) else np.zeros(n, bool)
    if not scored.any():
        return np.zeros(n, bool), np.zeros(n, bool), scored
    _, hits = M.collision_metrics_with_hits(e.plans, e.truth, e.truth_valid, e.boxes, e.boxes_valid,
                                            e.waypoint_dt_s)
    _, cv_hits = M.collision_metrics_with_hits(e.cv, e.truth, e.truth_valid, e.boxes, e.boxes_valid,
                                               e.waypoint_dt_s)
    return hits & scored, cv_hits & scored, scored


def interval_metrics(evals: list[BagEvaluation], block_s: float = BLOCK_S) -> dict[str, Any]:
    """The intervals of the headline metrics, their baselines' and of PWM minus the baseline (``diff_<key>``)."""
    out: dict[str, Any] = {"method": f"bootstrap over {block_s:g} s blocks of drive time (consecutive plans "
                                     "overlap), paired by plan for differences",
                           "block_s": block_s, "level": LEVEL, "replicates": BOOTSTRAP_REPLICATES,
                           "min_blocks": MIN_BLOCKS}

    def put(key: str, base: str, a: np.ndarray, b: np.ndarray, cl: np.ndarray) -> None:
        out[key], out[base] = interval(a, cl), interval(b, cl)
        out[f"diff_{key}"] = interval(np.asarray(a, np.float64) - np.asarray(b, np.float64), cl)

    for h in M.HORIZONS_S:
        put(f"l2_{h:g}s", f"cv_l2_{h:g}s", *_l2_pairs(evals, block_s, h, uniad=False))
    put("l2_uniad_3s", "cv_l2_uniad_3s", *_l2_pairs(evals, block_s, 3.0, uniad=True))
    hits, cv_hits, cl = [], [], []
    for j, e in enumerate(evals):
        a, b, scored = collision_flags(e)
        hits.append(a[scored])
        cv_hits.append(b[scored])
        cl.append(blocks(e, e.plan_t_ns[scored], j, block_s))
    put("collision_rate", "cv_collision_rate", np.concatenate(hits).astype(float),
        np.concatenate(cv_hits).astype(float), np.concatenate(cl))
    one = _forecast_column(evals)
    if one is not None:
        cl = np.concatenate([blocks(e, e.forecast_t_ns, j, block_s) for j, e in enumerate(evals)])
        for key, base, name, copy in (("psnr_forecast_1s_db", "copy_last_psnr_1s_db", "forecast_psnr", "copy_psnr"),
                                      ("ssim_forecast_1s", "copy_last_ssim_1s", "forecast_ssim", "copy_ssim")):
            a = np.concatenate([getattr(e, name)[:, one] for e in evals])
            b = np.concatenate([getattr(e, copy)[:, one] for e in evals])
            put(key, base, a, b, cl)
    return out


def _forecast_column(evals: list[BagEvaluation]) -> int | None:
    """The forecast horizon index at 1 s, None without forecasts or without a horizon at 1 s."""
    f = evals[0].forecast_psnr.shape[1] if evals[0].forecast_psnr.ndim == 2 else 0
    if not f or not any(len(e.forecast_t_ns) for e in evals):
        return None
    k = 1.0 / evals[0].model_dt_s
    if abs(k - round(k)) > 1e-6 or not 1 <= round(k) <= f:
        return None
    return int(round(k)) - 1
