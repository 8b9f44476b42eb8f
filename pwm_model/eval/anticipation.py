"""Anticipation: how early a planner starts to slow down for a lead brake, a cut-in or a pull-out.

The synthetic drives log every such event with its precursor (brake lamps, indicator) and onset (the vehicle
brakes or moves across) in ``scenes.json``. For each event, the clips whose current frame lies from
``WINDOW_BEFORE_S`` before the precursor to ``WINDOW_AFTER_S`` after the onset are planned; a plan "decelerates" when
the distance it covers in its first ``DECEL_HORIZON_S`` falls short of the current speed's by the equivalent of a
constant ``DECEL_ONSET_MPS2``. A planner's deceleration onset is the first such clip; its lead time is that clip's
time minus the event's onset (seconds, negative = before the onset; earlier is better). The reference is the
recorded drive's own future (the expert): events where the expert does not slow down within the window, or was
already slowing at its start, say nothing about anticipation and are left out.

    windows = event_windows(store_meta_drives, labels["t_ns"], labels["drive"])
    table = anticipation_table({"PWM": plans, "CTRA": ctra}, labels, windows, waypoint_dt_s)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pwm_model.data.synthetic.names import PRECURSOR_FAMILIES
from pwm_model.eval.intervals import cluster_bootstrap, paired_difference

DECEL_ONSET_MPS2 = 1.0  # the plan's mean deceleration over its first DECEL_HORIZON_S that counts as slowing down
DECEL_HORIZON_S = 2.0
WINDOW_BEFORE_S = 2.0  # clips from this long before the precursor ...
WINDOW_AFTER_S = 3.0  # ... to this long after the onset
EXPERT = "expert"


@dataclass
class EventWindow:
    """One logged event of one drive and the store rows (clips) of its window, in time order."""

    drive: int  # row of the store's ``drives``
    family: str
    precursor_ns: int
    onset_ns: int
    rows: np.ndarray  # (n,) int64 store rows


def drive_events(drives: list[dict[str, Any]]) -> dict[int, list[tuple[str, int, int]]]:
    """Per store drive row: (family, precursor_ns, onset_ns) of every logged precursor event, read from the
    ``scenes.json`` beside each drive's bag (drives without one, or recorded before events were logged, have none)."""
    manifests: dict[Path, dict[str, Any] | None] = {}
    out: dict[int, list[tuple[str, int, int]]] = {}
    for i, d in enumerate(drives):
        bag = Path(str(d.get("path", "")))
        where = bag.parent / "scenes.json"
        if where not in manifests:
            try:
                manifests[where] = json.loads(where.read_text())
            except (OSError, ValueError):
                manifests[where] = None
        manifest = manifests[where]
        if not isinstance(manifest, dict) or not isinstance(manifest.get("scenes"), list):
            continue  # not a scenes.json of pwm gen-data: no events
        epoch_ns = int(manifest.get("epoch_ns", 0))
        for scene in manifest["scenes"]:
            if not isinstance(scene, dict) or scene.get("drive") != bag.name:
                continue
            out[i] = [ev for ev in (_event(e, epoch_ns) for e in scene.get("events", []) or []) if ev is not None]
    return out


def _event(e: Any, epoch_ns: int) -> tuple[str, int, int] | None:
    """(family, precursor_ns, onset_ns) of one scenes.json event; None for another family or a malformed entry."""
    try:
        if e.get("family") not in PRECURSOR_FAMILIES or "onset_s" not in e:
            return None
        pre_s, on_s = float(e["precursor_s"]), float(e["onset_s"])
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    if not (math.isfinite(pre_s) and math.isfinite(on_s)) or on_s < pre_s:
        return None
    return str(e["family"]), epoch_ns + round(pre_s * 1e9), epoch_ns + round(on_s * 1e9)


def event_windows(drives: list[dict[str, Any]], t_ns: np.ndarray, drive: np.ndarray) -> list[EventWindow]:
    """Every logged event of the store's drives with the rows of its window (events with fewer than 3 clips in
    their window, near a drive's ends, are left out)."""
    windows = []
    t_ns, drive = np.asarray(t_ns, np.int64), np.asarray(drive)
    for d, events in drive_events(drives).items():
        mine = np.nonzero(drive == d)[0]
        for family, pre_ns, on_ns in events:
            lo, hi = pre_ns - round(WINDOW_BEFORE_S * 1e9), on_ns + round(WINDOW_AFTER_S * 1e9)
            rows = mine[(t_ns[mine] >= lo) & (t_ns[mine] <= hi)]
            rows = rows[np.argsort(t_ns[rows], kind="stable")]
            if len(rows) >= 3:
                windows.append(EventWindow(int(d), family, int(pre_ns), int(on_ns), rows.astype(np.int64)))
    return windows


def planned_decel_mps2(plans_xy: np.ndarray, speed_mps: np.ndarray, waypoint_dt_s: float,
                       horizon_s: float = DECEL_HORIZON_S) -> np.ndarray:
    """The constant deceleration that would cover each plan's path length over its first ``horizon_s`` from the
    current speed: 2 (v T - s) / T^2 (m/s^2; negative when the plan speeds up). ``plans_xy`` (N, K, >=2)."""
    k = int(round(horizon_s / waypoint_dt_s))
    if k < 1 or k > plans_xy.shape[1] or abs(k * waypoint_dt_s - horizon_s) > 1e-6:
        raise ValueError(f"horizon {horizon_s} s is not a waypoint time of {plans_xy.shape[1]} waypoints "
                         f"{waypoint_dt_s} s apart")
    xy = np.concatenate([np.zeros((len(plans_xy), 1, 2)), np.asarray(plans_xy, np.float64)[:, :k, :2]], axis=1)
    length = np.linalg.norm(np.diff(xy, axis=1), axis=2).sum(axis=1)
    t = k * waypoint_dt_s
    return 2.0 * (np.asarray(speed_mps, np.float64) * t - length) / (t * t)


def onset_lead_s(decel_mps2: np.ndarray, t_ns: np.ndarray, window: EventWindow,
                 threshold_mps2: float = DECEL_ONSET_MPS2) -> tuple[float, bool]:
    """(lead time s, already slowing at the window's start) of one planner over one window: the first row whose
    deceleration reaches the threshold minus the event's onset; NaN when it never does."""
    d = decel_mps2[window.rows]
    hit = np.nonzero(d >= threshold_mps2)[0]
    if len(hit) == 0:
        return math.nan, False
    first = int(hit[0])
    return (int(t_ns[window.rows[first]]) - window.onset_ns) / 1e9, first == 0


def anticipation_table(plans: dict[str, np.ndarray], labels: dict[str, np.ndarray], windows: list[EventWindow],
                       waypoint_dt_s: float, threshold_mps2: float = DECEL_ONSET_MPS2) -> dict[str, Any]:
    """Per planner (and the expert): events it slowed down for and its lead times; planners' paired differences.

    ``plans`` maps a planner's name to its plans (N, K, 3) for every store row the windows use (rows not in a window
    may hold anything). Returns ``{"events", "by_family", "rows": {name: {...}}, "paired": {"A - B": (mean, lo, hi)}}``
    with lead times in seconds; intervals are 95 % bootstraps over drives.
    """
    speed, t_ns = labels["ego"][:, 0], labels["t_ns"]
    decel = {EXPERT: planned_decel_mps2(labels["waypoints_xyyaw"], speed, waypoint_dt_s)}
    decel.update({name: planned_decel_mps2(p, speed, waypoint_dt_s) for name, p in plans.items()})
    kept: list[EventWindow] = []
    lead: dict[str, list[float]] = {name: [] for name in decel}
    for w in windows:
        expert_lead, expert_early = onset_lead_s(decel[EXPERT], t_ns, w, threshold_mps2)
        if math.isnan(expert_lead) or expert_early:
            continue  # no slowing down needed, or the expert was already slowing for something else
        kept.append(w)
        for name, d in decel.items():
            value, early = onset_lead_s(d, t_ns, w, threshold_mps2)
            lead[name].append(math.nan if early else value)
    clusters = np.array([w.drive for w in kept])
    rows: dict[str, dict[str, float]] = {}
    for name, values in lead.items():
        v = np.asarray(values, np.float64)
        ok = np.isfinite(v)
        mean, lo, hi = cluster_bootstrap(v, clusters) if len(v) else (math.nan,) * 3
        rows[name] = {"events": len(v), "slowed": int(ok.sum()),
                      "median_s": float(np.median(v[ok])) if ok.any() else math.nan,
                      "mean_s": mean, "mean_ci95_lo": lo, "mean_ci95_hi": hi}
    paired: dict[str, tuple[float, float, float]] = {}
    names = [n for n in decel if n != EXPERT]
    for b in names[1:]:  # the first planner against each of the others, paired by event
        paired[f"{names[0]} - {b}"] = paired_difference(np.asarray(lead[names[0]]), np.asarray(lead[b]), clusters)
    by_family = {f: sum(1 for w in kept if w.family == f) for f in PRECURSOR_FAMILIES}
    return {"events": len(kept), "windows": len(windows), "by_family": by_family, "rows": rows, "paired": paired,
            "threshold_mps2": threshold_mps2, "horizon_s": DECEL_HORIZON_S}


def summary_keys(table: dict[str, Any], key_of: dict[str, str]) -> dict[str, float | int]:
    """The flat JSON-line keys of a table: ``anticipation_<key>_s`` (mean lead time), ``..._slowed``, and
    ``anticipation_<a>_minus_<b>_s`` with its interval; ``key_of`` maps row names to key stems."""
    out: dict[str, float | int] = {"anticipation_events": table["events"]}
    for name, row in table["rows"].items():
        stem = key_of.get(name, name)
        out[f"anticipation_{stem}_s"] = row["mean_s"]
        out[f"anticipation_{stem}_slowed"] = row["slowed"]
    for pair, (mean, lo, hi) in table["paired"].items():
        a, b = pair.split(" - ")
        stem = f"anticipation_{key_of.get(a, a)}_minus_{key_of.get(b, b)}_s"
        out.update({stem: mean, f"{stem}_ci95_lo": lo, f"{stem}_ci95_hi": hi})
    return out


def format_table(table: dict[str, Any]) -> str:
    """The anticipation table as text."""
    fam = ", ".join(f"{k} {v}" for k, v in table["by_family"].items())
    lines = [f"Anticipation: {table['events']} events where the recorded driver slows down ({fam}); lead time = the "
             f"plan's first {table['threshold_mps2']:g} m/s^2 deceleration over {table['horizon_s']:g} s minus the "
             "event's onset (s; earlier is better; 95 % by drive)",
             f"  {'planner':<28} {'slowed':>8} {'median':>8} {'mean':>8}  interval"]
    for name, r in table["rows"].items():
        lines.append(f"  {name:<28} {r['slowed']:>4}/{r['events']:<3} {r['median_s']:>+8.2f} {r['mean_s']:>+8.2f}  "
                     f"({r['mean_ci95_lo']:+.2f} to {r['mean_ci95_hi']:+.2f})")
    for pair, (mean, lo, hi) in table["paired"].items():
        lines.append(f"  {pair:<37} {mean:>+8.2f}  ({lo:+.2f} to {hi:+.2f}), events both slowed for")
    return "\n".join(lines)
