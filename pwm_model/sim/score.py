"""Closed-loop scores of one drive, as NAVSIM v2 (EPDMS) and Bench2Drive (driving score) define them.

The drive after the warm-up is cut into consecutive 4 s windows (NAVSIM scores 4 s of driving); each window gets
NAVSIM's sub-scores from what the ego really did in it:
- multipliers: NC no at-fault collision (0 with a vehicle, 0.5 with a parked one; hit from behind or while standing
  still is not the ego's fault), DAC drivable area (0 once a corner of the ego's box is more than 0.3 m beyond the
  outer lane edges), DDC driving direction (the distance driven with the box centre over the divider within any 1 s:
  >= 2 m gives 0.5, >= 6 m gives 0), TLC traffic lights (the world has none: 1);
- weighted (5, 5, 2, 2, 2): TTC (0 if at some frame, moving, a collision with a vehicle ahead follows within 1 s at
  constant velocities), EP ego progress along the road against the expert's over the same window (1 where the
  expert moved less than 5 m), LK lane keeping (0 once the box centre stays more than 0.5 m off every lane centre for
  2 s while no lane change is commanded), HC history comfort (NAVSIM's limits on the ego's own acceleration, jerk,
  yaw rate and yaw acceleration, smoothed over 1 s), EC extended comfort (the share of consecutive plans whose
  acceleration, jerk, yaw rate and yaw acceleration agree within 0.7 m/s^2, 0.5 m/s^3, 0.1 rad/s, 0.1 rad/s^2 RMS
  over the times both cover; 1 for the expert, which has no plans).
EPDMS of a window = NC x DAC x DDC x TLC x (5 TTC + 5 EP + 2 LK + 2 HC + 2 EC) / 16; a term the expert also fails in
the same window counts 1 (NAVSIM's filtering), and windows lost after a drive ended early (an at-fault collision,
leaving the road) count 0.
A drive's EPDMS is the mean over its windows. Route completion = the ego's progress over the expert's (at most 1);
driving score = route completion x 0.6 per at-fault vehicle collision x 0.65 per at-fault static one (Bench2Drive).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pwm_model.geometry import box_footprint, polygons_intersect
from pwm_model.sim.loop import WARMUP_S, DriveLog

WINDOW_S = 4.0
MULTIPLIERS = ("nc", "dac", "ddc", "tlc")
WEIGHTS = {"ttc": 5.0, "ep": 5.0, "lk": 2.0, "hc": 2.0, "ec": 2.0}
DAC_TOLERANCE_M = 0.3
DDC_HORIZON_S, DDC_HALF_M, DDC_ZERO_M = 1.0, 2.0, 6.0
TTC_HORIZON_S, TTC_STEP_S, TTC_MIN_SPEED_MPS = 1.0, 0.1, 5e-3
EP_MIN_PROGRESS_M = 5.0
LK_OFFSET_M, LK_DURATION_S = 0.5, 2.0
COMFORT = {"lon_accel": (-4.05, 2.40), "lat_accel": 4.89, "yaw_rate": 0.95, "yaw_accel": 1.93, "lon_jerk": 4.13,
           "jerk": 8.37}
EC_LIMITS = {"accel": 0.7, "jerk": 0.5, "yaw_rate": 0.1, "yaw_accel": 0.1}
SMOOTH_S = 1.0  # moving average before and after each derivative (nuPlan filters its derivatives too)
PENALTY = {"vehicle": 0.6, "static": 0.65}


@dataclass
class Infraction:
    kind: str  # collision, static_collision, drivable_area, driving_direction, ttc, lane_keeping, comfort
    t_s: float
    frame: int
    detail: str


@dataclass
class DriveScore:
    seed: int
    planner: str
    windows: list[dict[str, float]] = field(default_factory=list)  # sub-scores and epdms per window
    epdms: float = 0.0
    route_completion: float = 0.0
    driving_score: float = 0.0
    collisions_at_fault: int = 0
    infractions: list[Infraction] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        """Drive-level figures; the sub-scores are means over the windows driven (``windows_lost`` not)."""
        driven = [w for w in self.windows if not w.get("lost")]
        sub = {k: float(np.mean([w[k] for w in driven])) if driven else 0.0 for k in (*MULTIPLIERS, *WEIGHTS)}
        return {"seed": self.seed, "epdms": self.epdms, "driving_score": self.driving_score,
                "route_completion": self.route_completion, "collisions_at_fault": self.collisions_at_fault,
                "windows": len(self.windows), "windows_lost": len(self.windows) - len(driven), **sub}


def epdms(sub: dict[str, float]) -> float:
    """NAVSIM v2's EPDMS from its sub-scores."""
    mult = float(np.prod([sub[k] for k in MULTIPLIERS]))
    return mult * sum(w * sub[k] for k, w in WEIGHTS.items()) / sum(WEIGHTS.values())


def _smooth(x: np.ndarray, n: int) -> np.ndarray:
    if n <= 1 or len(x) < n:
        return x
    pad = np.pad(x, (n // 2, n - 1 - n // 2), mode="edge")
    return np.convolve(pad, np.ones(n) / n, mode="valid")


class _Series:
    """Per-frame arrays of a drive log."""

    def __init__(self, log: DriveLog) -> None:
        t = log.ticks
        self.dt = log.frame_dt_s
        self.t_s = np.array([k.t_s for k in t])
        self.s_m = np.array([k.s_m for k in t])
        self.d_m = np.array([k.d_m for k in t])
        self.he = np.array([k.heading_err_rad for k in t])
        self.v = np.array([k.speed_mps for k in t])
        self.a = np.array([k.accel_mps2 for k in t])
        self.w = np.array([k.yaw_rate_radps for k in t])
        self.command = np.array([k.command for k in t])
        # over the whole drive (a 1 s or 2 s span may cross a window's start)
        wrong = (self.d_m > 0).astype(float) * self.v * self.dt  # metres driven over the divider per frame
        k = max(1, round(DDC_HORIZON_S / self.dt))
        self.wrong_way_m = np.convolve(wrong, np.ones(k), mode="full")[: len(t)]  # within the last 1 s
        centres = np.array(log.lane_centres_d_m)
        self.lane_offset_m = np.min(np.abs(self.d_m[:, None] - centres[None]), axis=1) if len(centres) else \
            np.zeros(len(t))
        run, need = 0, round(LK_DURATION_S / self.dt)
        self.lk_violation = np.zeros(len(t), bool)
        for i in range(len(t)):
            run = run + 1 if self.lane_offset_m[i] > LK_OFFSET_M and self.command[i] == 1 else 0
            self.lk_violation[i] = run > need
        n = max(1, round(SMOOTH_S / self.dt))
        a_s, w_s = _smooth(self.a, n), _smooth(self.w, n)
        self.comfort = {"lon_accel": a_s, "lat_accel": _smooth(self.v * self.w, n), "yaw_rate": w_s,
                        "yaw_accel": _smooth(np.gradient(w_s, self.dt), n) if len(t) > 1 else np.zeros(len(t)),
                        "lon_jerk": _smooth(np.gradient(a_s, self.dt), n) if len(t) > 1 else np.zeros(len(t))}
        lat_jerk = _smooth(np.gradient(_smooth(self.v * self.w, n), self.dt), n) if len(t) > 1 else np.zeros(len(t))
        self.comfort["jerk"] = np.hypot(self.comfort["lon_jerk"], lat_jerk)


def _comfort_ok(series: _Series, i: int) -> str | None:
    c = series.comfort
    lo, hi = COMFORT["lon_accel"]
    if not lo <= c["lon_accel"][i] <= hi:
        return f"longitudinal acceleration {c['lon_accel'][i]:.2f} m/s^2"
    for key in ("lat_accel", "yaw_rate", "yaw_accel", "lon_jerk", "jerk"):
        if abs(c[key][i]) > COMFORT[key]:
            return f"{key.replace('_', ' ')} {c[key][i]:.2f}"
    return None


def _ttc_violation(tick, horizon_s: float = TTC_HORIZON_S) -> int | None:  # noqa: ANN001 - a loop.Tick
    """Track id of a vehicle ahead the ego would hit within ``horizon_s`` at constant velocities, else None."""
    if tick.speed_mps < TTC_MIN_SPEED_MPS or len(tick.agent_boxes) == 0:
        return None
    ego = tick.ego_box.copy()
    c, s = np.cos(ego[6]), np.sin(ego[6])
    near = np.hypot(tick.agent_boxes[:, 0] - ego[0], tick.agent_boxes[:, 1] - ego[1]) < 40.0
    for box, tid, v in zip(tick.agent_boxes[near], tick.agent_ids[near], tick.agent_speed_mps[near]):
        if c * (box[0] - ego[0]) + s * (box[1] - ego[1]) <= 0:
            continue  # behind the ego
        for tau in np.arange(TTC_STEP_S, horizon_s + 1e-9, TTC_STEP_S):
            e = ego.copy()
            e[0] += tick.speed_mps * c * tau
            e[1] += tick.speed_mps * s * tau
            o = box.copy()
            o[0] += v * np.cos(box[6]) * tau
            o[1] += v * np.sin(box[6]) * tau
            if polygons_intersect(box_footprint(e[None])[0], box_footprint(o[None])[0]):
                return int(tid)
    return None


def _plan_profile(xy: np.ndarray, t_s: np.ndarray) -> dict[str, np.ndarray]:
    """Acceleration, jerk, heading rate and its rate of a plan on its own time grid (finite differences between
    its waypoints: interpolating the path finer first would put kinks, and so jerk spikes, at every waypoint)."""
    vx, vy = np.gradient(xy[:, 0], t_s), np.gradient(xy[:, 1], t_s)
    speed = np.hypot(vx, vy)
    heading = np.unwrap(np.arctan2(vy, vx))
    accel = np.gradient(speed, t_s)
    yaw_rate = np.gradient(heading, t_s)
    return {"accel": accel, "jerk": np.gradient(accel, t_s), "yaw_rate": yaw_rate,
            "yaw_accel": np.gradient(yaw_rate, t_s)}


def plans_consistent(prev_xy: np.ndarray, prev_t: np.ndarray, xy: np.ndarray, t: np.ndarray) -> bool:
    """EC for one pair: do two plans agree (RMS within ``EC_LIMITS``) over the times both cover? Each plan's
    profiles are taken on its own grid and compared at the newer plan's waypoint times."""
    lo, hi = max(prev_t[0], t[0]), min(prev_t[-1], t[-1])
    times = t[(t >= lo - 1e-9) & (t <= hi + 1e-9)]
    if len(times) < 3 or len(xy) < 4 or len(prev_xy) < 4:
        return True  # too little overlap to compare
    a, b = _plan_profile(prev_xy, prev_t), _plan_profile(xy, t)
    return all(float(np.sqrt(np.mean((np.interp(times, prev_t, a[k]) - np.interp(times, t, b[k])) ** 2))) <= lim
               for k, lim in EC_LIMITS.items())


def _windows(log: DriveLog) -> tuple[int, int, int]:
    """(first frame, frames per window, windows the full drive has)."""
    start = round(WARMUP_S / log.frame_dt_s)
    per = round(WINDOW_S / log.frame_dt_s)
    total = max(1, round(log.seconds / log.frame_dt_s))
    return start, per, max(1, (total - start) // per)


def window_terms(log: DriveLog, series: _Series, lo: int, hi: int, infractions: list[Infraction] | None
                 ) -> dict[str, float]:
    """The raw sub-scores of frames [lo, hi) of ``log`` (EP is set by the caller)."""
    def note(kind: str, i: int, detail: str) -> None:
        if infractions is not None:
            infractions.append(Infraction(kind, float(series.t_s[i]), i, detail))

    out = {"tlc": 1.0, "ep": 1.0}
    hits = [c for c in log.collisions if c.at_fault and series.t_s[lo] - 1e-9 <= c.t_s <= series.t_s[hi - 1] + 1e-9]
    out["nc"] = 0.0 if any(not c.static for c in hits) else (0.5 if hits else 1.0)
    for c in hits:
        note("static_collision" if c.static else "collision", c.frame, f"track {c.track_id}, {c.kind} of the ego")
    half_w = 0.5 * (log.ticks[0].ego_box[4] * np.abs(np.cos(series.he)) + log.ticks[0].ego_box[3]
                    * np.abs(np.sin(series.he)))
    right, left = log.drivable_d_m
    off = np.maximum(right - (series.d_m - half_w), (series.d_m + half_w) - left)  # > 0: beyond an edge
    bad = np.nonzero(off[lo:hi] > DAC_TOLERANCE_M)[0]
    out["dac"] = 0.0 if len(bad) else 1.0
    if len(bad):
        note("drivable_area", lo + bad[0], f"{off[lo + bad[0]]:.2f} m beyond the lane edge")
    per_s = series.wrong_way_m[lo:hi]
    worst = float(per_s.max()) if len(per_s) else 0.0
    out["ddc"] = 0.0 if worst >= DDC_ZERO_M else (0.5 if worst >= DDC_HALF_M else 1.0)
    if out["ddc"] < 1:
        first = int(np.argmax(per_s >= DDC_HALF_M))  # the frame at which it crossed 2 m within 1 s
        note("driving_direction", lo + first, f"{worst:.1f} m against the traffic within 1 s")
    out["ttc"] = 1.0
    for i in range(lo, hi):
        tid = _ttc_violation(log.ticks[i])
        if tid is not None:
            out["ttc"] = 0.0
            note("ttc", i, f"would hit track {tid} within {TTC_HORIZON_S:g} s")
            break
    out["lk"] = 1.0
    for i in range(lo, hi):
        if series.lk_violation[i]:
            out["lk"] = 0.0
            note("lane_keeping", i, f"{series.lane_offset_m[i]:.2f} m off the lane centre for {LK_DURATION_S:g} s")
            break
    out["hc"] = 1.0
    for i in range(lo, hi):
        why = _comfort_ok(series, i)
        if why is not None:
            out["hc"] = 0.0
            note("comfort", i, why)
            break
    pairs = ok = 0
    prev = None
    for i in range(lo, hi):
        tk = log.ticks[i]
        if tk.plan_xy_m is None or not tk.driven_by_planner:
            continue
        if prev is not None:
            pairs += 1
            ok += plans_consistent(prev.plan_xy_m, prev.plan_t_s, tk.plan_xy_m, tk.plan_t_s)
        prev = tk
    out["ec"] = ok / pairs if pairs else 1.0
    return out


def score_drive(log: DriveLog, expert: DriveLog | None) -> DriveScore:
    """Score ``log`` against the expert's drive of the same seed (None: ``log`` is the expert's)."""
    res = DriveScore(seed=log.seed, planner=log.planner)
    series = _Series(log)
    ex_series = _Series(expert) if expert is not None else series
    start, per, n_windows = _windows(log)
    n = len(log.ticks)
    for w in range(n_windows):
        lo, hi = start + w * per, start + (w + 1) * per
        if lo >= n:
            res.windows.append({**{k: 0.0 for k in (*MULTIPLIERS, *WEIGHTS)}, "epdms": 0.0, "lost": 1.0})
            continue
        hi = min(hi, n)
        terms = window_terms(log, series, lo, hi, res.infractions)
        if expert is not None:
            e_hi = min(hi, len(expert.ticks))
            ref = window_terms(expert, ex_series, lo, e_hi, None)
            for k in ("nc", "dac", "ddc", "tlc", "ttc", "lk", "hc"):
                if ref[k] < 1.0:
                    terms[k] = 1.0  # the expert fails it too: no penalty (NAVSIM's filtering)
            mine = series.s_m[hi - 1] - series.s_m[lo]
            theirs = ex_series.s_m[e_hi - 1] - ex_series.s_m[lo]
            terms["ep"] = 1.0 if theirs < EP_MIN_PROGRESS_M else float(np.clip(mine / theirs, 0.0, 1.0))
        terms["epdms"] = epdms(terms)
        res.windows.append(terms)
    res.epdms = float(np.mean([w["epdms"] for w in res.windows]))
    mine = series.s_m[-1] - series.s_m[min(start, n - 1)]
    theirs = ex_series.s_m[-1] - ex_series.s_m[min(start, len(ex_series.s_m) - 1)]
    res.route_completion = 1.0 if theirs < EP_MIN_PROGRESS_M else float(np.clip(mine / theirs, 0.0, 1.0))
    at_fault = [c for c in log.collisions if c.at_fault]
    res.collisions_at_fault = len(at_fault)
    penalty = float(np.prod([PENALTY["static" if c.static else "vehicle"] for c in at_fault])) if at_fault else 1.0
    res.driving_score = res.route_completion * penalty
    res.infractions.sort(key=lambda x: x.t_s)
    return res
