"""``plans.csv``: one row per plan, beside ``report.html``, for anyone who wants to look past the means.

Columns (blank where a value is undefined):

- ``drive``, ``t_ns`` (the camera stamp the plan was made from), ``t_s`` (seconds since the drive's first frame);
- ``l2_1s_m``, ``l2_2s_m``, ``l2_3s_m``: the plan's mean displacement up to 1 / 2 / 3 s (VAD protocol), blank
  where the truth does not reach that far (the end of a drive, a drive without odometry); ``cv_l2_3s_m`` the same
  for constant velocity;
- ``collision``, ``cv_collision``: 1 if the plan (constant velocity) hits a ground-truth box anywhere in the plan,
  0 if not, blank without boxes or ground truth;
- ``surprise``, ``speed_mps`` and ``yaw_rate_radps`` (from the bag's odometry at the stamp), ``command`` (the route
  command fed with the frame: left / straight / right), ``latency_ms``, ``warming_up``.

The headline L2 pools every valid (plan, waypoint) pair, so plans whose truth stops short of 3 s count in it with
the waypoints they have while their ``l2_3s_m`` cell here is blank.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pwm_model.config import COMMANDS
from pwm_model.eval import metrics as M
from pwm_model.eval.bag_intervals import collision_flags
from pwm_model.eval.bag_types import BagEvaluation
from pwm_model.io_utils import write_text_atomic

CSV_NAME = "plans.csv"
COLUMNS = ("drive", "t_ns", "t_s", "l2_1s_m", "l2_2s_m", "l2_3s_m", "cv_l2_3s_m", "collision", "cv_collision",
           "surprise", "speed_mps", "yaw_rate_radps", "command", "latency_ms", "warming_up")


def plan_l2(ev: BagEvaluation, traj: np.ndarray, horizon_s: float) -> np.ndarray:
    """(N,) each plan's L2 up to ``horizon_s`` for ``traj`` (N, K, 3); NaN where the truth does not reach it."""
    n = len(ev.plan_t_ns)
    kh = M.horizon_index(horizon_s, ev.waypoint_dt_s, traj.shape[1])
    if kh is None or not ev.has_odometry:
        return np.full(n, math.nan)
    l2 = M.per_clip_l2(traj, ev.truth, ev.truth_valid, ev.waypoint_dt_s, horizon_s)
    return np.where(ev.truth_valid[:, kh - 1], l2, math.nan)


def _cell(value: float, digits: int) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else ""


def plans_csv(evals: Sequence[BagEvaluation]) -> str:
    """The CSV text (module docstring)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for ev in evals:
        n = len(ev.plan_t_ns)
        l2 = {h: plan_l2(ev, ev.plans, h) for h in M.HORIZONS_S}
        cv3 = plan_l2(ev, ev.cv, 3.0)
        hits, cv_hits, scored = collision_flags(ev)
        yaw = ev.yaw_rate_radps if ev.yaw_rate_radps is not None else np.full(n, math.nan)
        for i in range(n):
            t = int(ev.plan_t_ns[i])
            cmd = int(ev.command[i])
            w.writerow([ev.name, t, f"{(t - ev.start_ns) / 1e9:.3f}", *(_cell(l2[h][i], 4) for h in M.HORIZONS_S),
                        _cell(cv3[i], 4), int(hits[i]) if scored[i] else "", int(cv_hits[i]) if scored[i] else "",
                        _cell(float(ev.surprise[i]), 5),
                        _cell(float(ev.speed_mps[i]), 3) if ev.has_odometry else "",
                        _cell(float(yaw[i]), 4) if ev.has_odometry else "",
                        COMMANDS[cmd] if 0 <= cmd < len(COMMANDS) else str(cmd), _cell(float(ev.latency_ms[i]), 2),
                        int(bool(ev.warming_up[i]))])
    return buf.getvalue()


def write_plans_csv(path: str | Path, evals: Sequence[BagEvaluation]) -> Path:
    """Write ``plans.csv`` atomically; returns its path."""
    path = Path(path)
    write_text_atomic(path, plans_csv(evals))
    return path
