"""The flat metrics of one or more bag evaluations (``metrics.json``) and the table printed for people.

Every number comes from ``metrics.py`` over the plans of all bags together: L2 (VAD protocol ``l2_{T}s``, UniAD
protocol ``l2_uniad_{T}s``), collision, constant velocity beside it (``cv_``), forecast PSNR / SSIM per horizon
with copy-last-frame beside it, latency percentiles and surprise statistics; ``intervals`` holds the 95 % intervals
of the headline metrics (``bag_intervals``: a bootstrap over 5 s blocks of drive time) and each bag its ``inputs``
(``bag_inputs``). Undefined values are ``None`` in JSON.

Every comparison with a baseline is marked both ways (``compare``: "better", "worse" or "same" at the digits shown)
and ``verdict_sentence`` names every headline metric with the side that is ahead, the favourable and the
unfavourable ones alike.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pwm_model.eval import metrics as M
from pwm_model.eval.bag_intervals import interval_metrics
from pwm_model.eval.bag_types import BagEvaluation

LATENCY_PERCENTILES = (50, 90, 99)


def _cat(evals: list[BagEvaluation], name: str) -> np.ndarray:
    return np.concatenate([getattr(e, name) for e in evals])


def _cat_boxes(evals: list[BagEvaluation]) -> tuple[np.ndarray, np.ndarray]:
    m = max(e.boxes.shape[2] for e in evals)
    boxes, valid = [], []
    for e in evals:
        pad = m - e.boxes.shape[2]
        boxes.append(np.pad(e.boxes, ((0, 0), (0, 0), (0, pad), (0, 0))))
        valid.append(np.pad(e.boxes_valid, ((0, 0), (0, 0), (0, pad))))
    return np.concatenate(boxes), np.concatenate(valid)


def horizon_index(horizon_s: float, step_s: float, count: int) -> int | None:
    """0-based index of the step at ``horizon_s`` (steps at step_s, 2 step_s, ...), None if none falls on it."""
    k = horizon_s / step_s
    if abs(k - round(k)) > 1e-6 or not 1 <= round(k) <= count:
        return None
    return int(round(k)) - 1


def planning_metrics(evals: list[BagEvaluation]) -> dict[str, Any]:
    """L2 and collision of the plans and of constant velocity, and the per-waypoint error curves."""
    scored = [e for e in evals if e.has_odometry]
    k = evals[0].plans.shape[1]
    dt = evals[0].waypoint_dt_s
    if not scored:
        keys = [f"{p}_{h:g}s" for p in ("l2", "l2_uniad", "cv_l2", "cv_l2_uniad") for h in M.HORIZONS_S]
        return {**dict.fromkeys(keys + ["l2_avg", "cv_l2_avg", "collision_rate", "cv_collision_rate"], math.nan),
                "scored_plans": 0, "l2_curve_m": [], "cv_l2_curve_m": []}
    plans, truth, valid, cv = (_cat(scored, n) for n in ("plans", "truth", "truth_valid", "cv"))
    out: dict[str, Any] = {"scored_plans": int(valid.any(axis=1).sum())}
    out.update(M.l2_metrics(plans, truth, valid, dt))
    out.update(M.l2_metrics(cv, truth, valid, dt, prefix="cv_l2"))
    with_boxes = [e for e in scored if e.has_boxes]
    if with_boxes:
        p2, t2, v2, c2 = (_cat(with_boxes, n) for n in ("plans", "truth", "truth_valid", "cv"))
        boxes, boxes_valid = _cat_boxes(with_boxes)
        keep = v2.any(axis=1)  # plans with ground truth: the last ones of a drive have no future to hit anything in
        p2, t2, v2, c2, boxes, boxes_valid = p2[keep], t2[keep], v2[keep], c2[keep], boxes[keep], boxes_valid[keep]
        out.update(M.collision_metrics(p2, t2, v2, boxes, boxes_valid, dt))
        out.update(M.collision_metrics(c2, t2, v2, boxes, boxes_valid, dt, prefix="cv_collision"))
    else:
        out.update(collision_rate=math.nan, cv_collision_rate=math.nan)
    # the error at every waypoint time (the UniAD protocol evaluated at each waypoint)
    every = tuple(round((i + 1) * dt, 6) for i in range(k))
    for prefix, traj in (("l2", plans), ("cv_l2", cv)):
        curve = M.l2_metrics(traj, truth, valid, dt, horizons_s=every, prefix="x")
        out[f"{prefix}_curve_m"] = [curve[f"x_uniad_{h:g}s"] for h in every]
    out["waypoint_times_s"] = list(every)
    return out


def forecast_metrics(evals: list[BagEvaluation]) -> dict[str, Any]:
    """PSNR / SSIM per forecast horizon of the decoded forecasts and of copy-last-frame."""
    model_dt = evals[0].model_dt_s
    psnr, ssim, cpsnr, cssim = (_cat(evals, n) for n in ("forecast_psnr", "forecast_ssim", "copy_psnr", "copy_ssim"))
    f = psnr.shape[1] if psnr.ndim == 2 else 0
    out: dict[str, Any] = {"forecast_samples": int(len(psnr)),
                           "forecast_horizons_s": [round((i + 1) * model_dt, 6) for i in range(f)]}
    curves = {}
    for name, values in (("forecast_psnr_db", psnr), ("forecast_ssim", ssim), ("copy_last_psnr_db", cpsnr),
                         ("copy_last_ssim", cssim)):
        curves[name] = M.per_horizon_mean(values) if len(values) else [math.nan] * f
        out[name] = curves[name]
    one = horizon_index(1.0, model_dt, f)
    pick = (lambda c: c[one]) if one is not None else (lambda c: math.nan)  # noqa: E731
    out.update(psnr_forecast_1s_db=pick(curves["forecast_psnr_db"]), ssim_forecast_1s=pick(curves["forecast_ssim"]),
               copy_last_psnr_1s_db=pick(curves["copy_last_psnr_db"]),
               copy_last_ssim_1s=pick(curves["copy_last_ssim"]))
    return out


def _finite(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, float)
    return v[np.isfinite(v)]


def runtime_metrics(evals: list[BagEvaluation]) -> dict[str, Any]:
    """Latency percentiles, surprise statistics and the achieved planning rate."""
    lat = _finite(_cat(evals, "latency_ms"))
    out: dict[str, Any] = {"latency_kind": evals[0].latency_kind}
    for q in LATENCY_PERCENTILES:
        out[f"latency_p{q}_ms"] = float(np.percentile(lat, q)) if lat.size else math.nan
    out["latency_mean_ms"] = float(lat.mean()) if lat.size else math.nan
    out["latency_max_ms"] = float(lat.max()) if lat.size else math.nan
    sur = _finite(_cat(evals, "surprise"))
    out.update(surprise_mean=float(sur.mean()) if sur.size else math.nan,
               surprise_p90=float(np.percentile(sur, 90)) if sur.size else math.nan,
               surprise_max=float(sur.max()) if sur.size else math.nan)
    seconds = sum(max(1e-9, (e.end_ns - e.start_ns) / 1e9) for e in evals)
    out["plan_rate_hz"] = sum(len(e.plan_t_ns) for e in evals) / seconds
    out["warming_up_plans"] = int(_cat(evals, "warming_up").sum())
    return out


def _clean(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        return round(float(value), 4) if math.isfinite(value) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def summarize(evals: list[BagEvaluation]) -> dict[str, Any]:
    """``metrics.json``: the headline numbers first, then curves, then per-bag facts; NaN -> None."""
    if not evals:
        raise ValueError("summarize needs at least one bag evaluation")
    out: dict[str, Any] = {"mode": evals[0].mode, "plans": int(sum(len(e.plan_t_ns) for e in evals)),
                           "frames": int(sum(e.frames for e in evals))}
    out.update(planning_metrics(evals))
    out.update(forecast_metrics(evals))
    out.update(runtime_metrics(evals))
    out["planning_scored"] = any(e.has_odometry for e in evals)
    out["intervals"] = interval_metrics(evals)
    out["bags"] = [{"bag": e.bag, "frames": e.frames, "plans": int(len(e.plan_t_ns)),
                    "seconds_of_drive": round((e.end_ns - e.start_ns) / 1e9, 2), "odometry": e.has_odometry,
                    "boxes": e.has_boxes, "video": e.video.path.name if e.video else None,
                    "video_codec": e.video.codec if e.video else None, "notes": e.notes, "inputs": e.inputs,
                    **e.extra} for e in evals]
    return _clean(out)


def _fmt(value: Any, digits: int = 3, scale: float = 1.0, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value * scale:.{digits}f}{unit}"


TABLE_ROWS = (  # (label, key of the model, key of the baseline or None, digits, scale, unit)
    ("L2 1 s (m)", "l2_1s", "cv_l2_1s", 3, 1.0, ""),
    ("L2 2 s (m)", "l2_2s", "cv_l2_2s", 3, 1.0, ""),
    ("L2 3 s (m)", "l2_3s", "cv_l2_3s", 3, 1.0, ""),
    ("L2 avg (m)", "l2_avg", "cv_l2_avg", 3, 1.0, ""),
    ("L2 @3 s, UniAD (m)", "l2_uniad_3s", "cv_l2_uniad_3s", 3, 1.0, ""),
    ("collision rate", "collision_rate", "cv_collision_rate", 1, 100.0, " %"),
    ("forecast PSNR 1 s (dB)", "psnr_forecast_1s_db", "copy_last_psnr_1s_db", 2, 1.0, ""),
    ("forecast SSIM 1 s", "ssim_forecast_1s", "copy_last_ssim_1s", 3, 1.0, ""),
    ("latency p50 (ms)", "latency_p50_ms", None, 1, 1.0, ""),
    ("latency p99 (ms)", "latency_p99_ms", None, 1, 1.0, ""),
    ("surprise mean", "surprise_mean", None, 3, 1.0, ""),
)
BASELINES = {"cv_": "constant velocity", "copy_last_": "copy-last-frame"}  # key prefix of a baseline -> its name
# the headline metrics, each named in the verdict sentence: (name, key, baseline key, digits, scale, unit,
# unit of a difference)
HEADLINES = (("L2 up to 3 s", "l2_3s", "cv_l2_3s", 2, 1.0, " m", " m"),
             ("collision rate", "collision_rate", "cv_collision_rate", 1, 100.0, " %", " points"),
             ("forecast PSNR at 1 s", "psnr_forecast_1s_db", "copy_last_psnr_1s_db", 1, 1.0, " dB", " dB"))


def lower_is_better(key: str) -> bool:
    """Errors, collisions, latency, surprise: lower is better; PSNR and SSIM: higher."""
    return not key.startswith(("psnr", "ssim"))


def baseline_name(base: str) -> str:
    return next((name for prefix, name in BASELINES.items() if base.startswith(prefix)), "the baseline")


def compare(value: Any, base: Any, key: str, digits: int = 3, scale: float = 1.0) -> str | None:
    """PWM's ``value`` against the baseline's: "better", "worse" or "same" (equal at the ``digits`` shown), None when
    either is undefined. Losses are marked as plainly as wins."""
    if value is None or base is None or not (math.isfinite(value) and math.isfinite(base)):
        return None
    a, b = round(value * scale, digits), round(base * scale, digits)
    if a == b:
        return "same"
    return "better" if (a < b) == lower_is_better(key) else "worse"


def interval_of(metrics: dict[str, Any], key: str) -> tuple[float, float] | None:
    """The 95 % interval of ``key`` (``metrics["intervals"]``), None where there is none."""
    iv = (metrics.get("intervals") or {}).get(key)
    if not iv or iv.get("lo") is None or iv.get("hi") is None:
        return None
    return iv["lo"], iv["hi"]


def format_interval(iv: tuple[float, float] | None, digits: int = 3, scale: float = 1.0, signed: bool = False) -> str:
    if iv is None:
        return ""
    f = "+." if signed else "."
    return f"[{iv[0] * scale:{f}{digits}f}, {iv[1] * scale:{f}{digits}f}]"


def headline_verdicts(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per headline metric: its name, the baseline's, both values, the mark (None: not scored), the
    difference PWM minus baseline and its interval, and a phrase saying why it is not scored."""
    out = []
    for name, key, base, digits, scale, unit, dunit in HEADLINES:
        v, b = metrics.get(key), metrics.get(base)
        mark = compare(v, b, key, digits, scale)
        why = ""
        if mark is None:
            why = {"l2_3s": "no odometry to score the plans against",
                   "collision_rate": "no ground-truth boxes" if metrics.get("planning_scored") else
                   "no odometry to score the plans against",
                   "psnr_forecast_1s_db": "the live node does not record its forecast"
                   if metrics.get("mode") == "live" else "no forecast decoded at 1 s"}[key]
        diff = (metrics.get("intervals") or {}).get(f"diff_{key}") or {}
        out.append({"name": name, "key": key, "baseline": baseline_name(base), "value": v, "base_value": b,
                    "mark": mark, "digits": digits, "scale": scale, "unit": unit, "diff_unit": dunit,
                    "diff": diff.get("mean"), "diff_interval": interval_of(metrics, f"diff_{key}"), "why": why})
    return out


def verdict_phrase(h: dict[str, Any]) -> str:
    """One headline metric in words, e.g. ``collision rate: PWM worse than constant velocity (9.0 % vs 7.0 %; PWM -
    baseline +2.0 points, 95 % interval -1.0 to +5.0, within chance)``."""
    if h["mark"] is None:
        return f"{h['name']}: not scored ({h['why']})"
    d, s, u = h["digits"], h["scale"], h["unit"]
    word = {"better": "better than", "worse": "worse than", "same": "the same as"}[h["mark"]]
    text = (f"{h['name']}: PWM {word} {h['baseline']} ({_fmt(h['value'], d, s, u)} vs "
            f"{_fmt(h['base_value'], d, s, u)}")
    iv = h["diff_interval"]
    if iv is not None:
        chance = "within chance" if iv[0] <= 0.0 <= iv[1] else "beyond chance"
        text += (f"; PWM - baseline {h['diff'] * s:+.{d}f}{h['diff_unit']}, 95 % interval {iv[0] * s:+.{d}f} to "
                 f"{iv[1] * s:+.{d}f}, {chance}")
    return text + ")"


def verdict_sentence(metrics: dict[str, Any]) -> str:
    """Every headline metric with the side that is ahead, whichever it is."""
    return "; ".join(verdict_phrase(h) for h in headline_verdicts(metrics)) + "."


def format_table(metrics: dict[str, Any], extra_columns: dict[str, dict[str, Any]] | None = None) -> str:
    """The summary table for the terminal: PWM with its 95 % interval, the baseline (constant velocity /
    copy-last-frame), PWM against it ("better" / "worse" / "same"), extras (each marked against its own baseline);
    then the verdict on every headline metric."""
    extra_columns = extra_columns or {}
    head = (f"{'':<24}{'PWM':>10}{'95 % interval':>18}{'baseline':>10}{'PWM is':>8}{'PWM - baseline (95 %)':>30}"
            + "".join(f"{name:>20}" for name in extra_columns))
    lines = [head]
    for label, key, base, digits, scale, unit in TABLE_ROWS:
        row = f"{label:<24}{_fmt(metrics.get(key), digits, scale, unit):>10}"
        row += f"{format_interval(interval_of(metrics, key), digits, scale):>18}"
        row += f"{_fmt(metrics.get(base), digits, scale, unit) if base else '':>10}"
        row += f"{(compare(metrics.get(key), metrics.get(base), key, digits, scale) or '') if base else '':>8}"
        diff_iv = interval_of(metrics, f"diff_{key}")
        diff = ""
        if diff_iv is not None:
            d = metrics["intervals"][f"diff_{key}"]["mean"] * scale
            diff = f"{d:+.{digits}f} {format_interval(diff_iv, digits, scale, signed=True)}"
        row += f"{diff:>30}"
        for col in extra_columns.values():
            mark = compare(col.get(key), col.get(base), key, digits, scale) if base else None
            row += f"{_fmt(col.get(key), digits, scale, unit) + (' ' + mark if mark else ''):>20}"
        lines.append(row)
    lines.append(f"{'plans':<24}{metrics.get('plans', 0):>10}")
    iv = metrics.get("intervals") or {}
    lines.append("baseline: constant velocity for planning, copy-last-frame for the forecast; \"PWM is\": better or "
                 "worse than the baseline; L2 n s = mean displacement up to n s (VAD/PWM protocol); 95 % interval: "
                 f"bootstrap over {iv.get('block_s', 5.0):g} s blocks of drive time (consecutive plans overlap); "
                 "latency: " + str(metrics.get("latency_kind", "")))
    lines.append("verdict: " + verdict_sentence(metrics))
    return "\n".join(lines)
