"""Anticipation in the closed loop: how early the car, driven by a planner, starts to slow down for a lead brake, a
cut-in or a pull-out (the open-loop counterpart is ``pwm_model.eval.anticipation``).

The world logs each event's precursor and onset as it happens in that drive. At every frame, the car "slows down"
when the distance it really covers over the next ``DECEL_HORIZON_S`` falls short of its current speed's by the
equivalent of a constant ``DECEL_ONSET_MPS2``; its onset for an event is the first such frame from ``WINDOW_BEFORE_S``
before the precursor to ``WINDOW_AFTER_S`` after the onset, and the lead time is that frame minus the event's onset
(seconds, negative = before it). The k-th event of a family in a planner's drive is matched with the k-th of the
expert's drive of the same seed; events the expert does not slow down for (or was already slowing at) are left out.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from pwm_model.eval.anticipation import DECEL_HORIZON_S, DECEL_ONSET_MPS2, WINDOW_AFTER_S, WINDOW_BEFORE_S
from pwm_model.eval.intervals import cluster_bootstrap, paired_difference

if TYPE_CHECKING:
    from pwm_model.sim.loop import DriveLog

EventLead = tuple[str, int, float, bool]  # family, ordinal within the family, lead time s (NaN: never), early


def realized_decel_mps2(log: DriveLog, horizon_s: float = DECEL_HORIZON_S) -> tuple[np.ndarray, np.ndarray]:
    """(t_s (N,), deceleration (N,)): 2 (v T - s) / T^2 of the path the car drove over the next ``horizon_s``
    from each frame (NaN where the drive ends sooner)."""
    t = np.array([tick.t_s for tick in log.ticks])
    xy = np.array([tick.ego_xyyaw[:2] for tick in log.ticks]).reshape(-1, 2)
    v = np.array([tick.speed_mps for tick in log.ticks])
    steps = int(round(horizon_s / log.frame_dt_s))
    out = np.full(len(t), np.nan)
    if len(t) > steps:
        seg = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(xy, axis=0), axis=1))])
        s = seg[steps:] - seg[:-steps]
        out[:-steps] = 2.0 * (v[:-steps] * horizon_s - s) / (horizon_s * horizon_s)
    return t, out


def event_leads(log: DriveLog, threshold_mps2: float = DECEL_ONSET_MPS2) -> list[EventLead]:
    """Every logged event of one drive with the car's lead time for it."""
    t, decel = realized_decel_mps2(log)
    seen: dict[str, int] = {}
    out: list[EventLead] = []
    for e in log.events:
        if "onset_s" not in e:
            continue
        family = str(e["family"])
        k = seen[family] = seen.get(family, -1) + 1
        inside = (t >= float(e["precursor_s"]) - WINDOW_BEFORE_S) & (t <= float(e["onset_s"]) + WINDOW_AFTER_S)
        d = decel[inside]
        hit = np.nonzero(np.nan_to_num(d, nan=-np.inf) >= threshold_mps2)[0]
        if len(hit) == 0:
            out.append((family, k, math.nan, False))
        else:
            first = int(hit[0])
            out.append((family, k, float(t[inside][first] - float(e["onset_s"])), first == 0))
    return out


def suite_anticipation(leads: dict[tuple[str, int], list[EventLead]], planners: list[str]) -> dict[str, Any]:
    """Per planner: mean lead time over the events the expert slowed down for (seed-bootstrap interval), and the
    first non-expert planner minus each other one, paired by event. ``leads`` maps (planner, seed) to
    ``event_leads``; the expert's drives are under "expert"."""
    seeds = sorted({seed for (name, seed) in leads if name == "expert"})
    keep: list[tuple[int, str, int]] = []
    for seed in seeds:
        for family, k, lead, early in leads[("expert", seed)]:
            if math.isfinite(lead) and not early:
                keep.append((seed, family, k))
    clusters = np.array([seed for seed, _, _ in keep])
    values: dict[str, np.ndarray] = {}
    for name in planners:
        by_key = {(seed, f, k): (lead, early) for (n, seed), rows in leads.items() if n == name
                  for f, k, lead, early in rows}
        values[name] = np.array([math.nan if by_key.get(key, (math.nan, True))[1] else by_key[key][0]
                                 for key in keep], np.float64)
    rows = {}
    for name, v in values.items():
        ok = np.isfinite(v)
        mean, lo, hi = cluster_bootstrap(v, clusters) if len(v) else (math.nan,) * 3
        rows[name] = {"events": len(v), "slowed": int(ok.sum()), "mean_s": mean, "mean_ci95_lo": lo,
                      "mean_ci95_hi": hi, "median_s": float(np.median(v[ok])) if ok.any() else math.nan}
    others = [n for n in planners if n != "expert"]
    paired = {f"{others[0]} - {b}": paired_difference(values[others[0]], values[b], clusters) for b in others[1:]}
    return {"events": len(keep), "rows": rows, "paired": paired, "threshold_mps2": DECEL_ONSET_MPS2,
            "horizon_s": DECEL_HORIZON_S}
