"""Anticipation: the deceleration a plan implies, a planner's deceleration onset against a logged event's onset,
the table's exclusions (no slowing needed, already slowing) and its pairing, and events read from scenes.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from pwm_model.eval.anticipation import (
    EXPERT,
    EventWindow,
    anticipation_table,
    drive_events,
    event_windows,
    format_table,
    onset_lead_s,
    planned_decel_mps2,
    summary_keys,
)

DT_S = 0.5  # waypoint spacing
K = 6  # 3 s of waypoints


def _plan(speed_mps: float, decel_mps2: float) -> np.ndarray:
    """Straight ahead from ``speed_mps`` at a constant deceleration (stopping, not reversing)."""
    t = DT_S * np.arange(1, K + 1)
    t_stop = speed_mps / decel_mps2 if decel_mps2 > 0 else math.inf
    tt = np.minimum(t, t_stop)
    x = speed_mps * tt - 0.5 * decel_mps2 * tt * tt
    return np.stack([x, np.zeros(K), np.zeros(K)], axis=1)


def test_planned_deceleration_of_constant_and_braking_plans():
    plans = np.stack([_plan(10.0, 0.0), _plan(10.0, 2.0), _plan(10.0, -1.0)])
    d = planned_decel_mps2(plans, np.array([10.0, 10.0, 10.0]), DT_S)
    np.testing.assert_allclose(d, [0.0, 2.0, -1.0], atol=1e-9)
    with pytest.raises(ValueError, match="not a waypoint time"):
        planned_decel_mps2(plans, np.ones(3), DT_S, horizon_s=1.2)


def test_onset_lead_is_the_first_decelerating_clip_minus_the_event_onset():
    t_ns = np.arange(10, dtype=np.int64) * 200_000_000  # clips 0.2 s apart
    w = EventWindow(drive=0, family="lead_brake", precursor_ns=t_ns[2], onset_ns=t_ns[5], rows=np.arange(10))
    decel = np.array([0, 0, 0, 0.5, 1.2, 2, 3, 3, 3, 3], float)
    assert onset_lead_s(decel, t_ns, w) == (pytest.approx(-0.2), False)
    assert math.isnan(onset_lead_s(np.zeros(10), t_ns, w)[0])
    assert onset_lead_s(np.full(10, 2.0), t_ns, w)[1]  # slowing from the window's start


def _labels(n_drives: int, per: int) -> tuple[dict[str, np.ndarray], list[EventWindow]]:
    t_ns = np.tile(np.arange(per, dtype=np.int64) * 200_000_000, n_drives)
    drive = np.repeat(np.arange(n_drives), per)
    speed = np.full(len(t_ns), 10.0)
    labels = {"t_ns": t_ns, "drive": drive, "ego": np.stack([speed, np.zeros_like(speed)], 1),
              "waypoints_xyyaw": np.zeros((len(t_ns), K, 3))}
    windows = [EventWindow(d, "lead_brake", 0, 10 * 200_000_000, np.nonzero(drive == d)[0]) for d in range(n_drives)]
    return labels, windows


def _brake_from(labels: dict[str, np.ndarray], first_clip: dict[int, int]) -> np.ndarray:
    """Plans that brake at 3 m/s^2 from clip ``first_clip[drive]`` of each drive on, straight on before."""
    idx = np.concatenate([np.arange((labels["drive"] == d).sum()) for d in np.unique(labels["drive"])])
    return np.stack([_plan(10.0, 3.0) if i >= first_clip.get(int(d), 10**9) else _plan(10.0, 0.0)
                     for i, d in zip(idx, labels["drive"])])


def test_table_scores_lead_times_pairs_planners_and_leaves_out_events_needing_no_braking():
    labels, windows = _labels(4, 20)
    labels["waypoints_xyyaw"] = _brake_from(labels, {0: 10, 1: 10, 2: 10})  # drive 3: the expert never slows
    early = _brake_from(labels, {0: 8, 1: 8, 2: 9, 3: 9})  # 0.4 / 0.4 / 0.2 s before the onset
    late = _brake_from(labels, {0: 13, 1: 14, 2: 12})  # 0.6 / 0.8 / 0.4 s after it
    table = anticipation_table({"early": early, "late": late}, labels, windows, DT_S)
    assert table["events"] == 3 and table["windows"] == 4 and table["by_family"]["lead_brake"] == 3
    assert table["rows"][EXPERT]["mean_s"] == pytest.approx(0.0)
    assert table["rows"]["early"]["median_s"] == pytest.approx(-0.4)
    assert table["rows"]["late"]["mean_s"] == pytest.approx(0.6)
    mean, lo, hi = table["paired"]["early - late"]
    assert mean == pytest.approx(-(0.4 + 0.4 + 0.2 + 0.6 + 0.8 + 0.4) / 3) and lo <= mean <= hi < 0
    keys = summary_keys(table, {"early": "pwm"})
    assert keys["anticipation_events"] == 3 and keys["anticipation_pwm_minus_late_s"] == pytest.approx(mean)
    assert "early - late" in format_table(table)
    # a planner already slowing when the window opens has no onset for that event
    always = _brake_from(labels, {0: 0, 1: 0, 2: 0, 3: 0})
    row = anticipation_table({"always": always}, labels, windows, DT_S)["rows"]["always"]
    assert row["slowed"] == 0 and math.isnan(row["mean_s"])


def test_events_come_from_the_scenes_json_beside_each_bag(tmp_path: Path):
    (tmp_path / "drive_seed3").mkdir()
    scenes = {"epoch_ns": 1000, "scenes": [
        {"drive": "drive_seed3", "events": [
            {"family": "cut_in", "precursor_s": 1.0, "onset_s": 2.0},
            {"family": "lead_brake", "precursor_s": 5.0},  # the drive ended before its onset
            {"family": "parked_obstacle", "precursor_s": 6.0, "onset_s": 7.0},
            {"family": "cut_in", "onset_s": 9.0}, {"family": "cut_in", "precursor_s": "x", "onset_s": 9.0},
            {"family": "pull_out", "precursor_s": 9.0, "onset_s": 8.0}, "garbage"]},  # malformed: left out
        "not a scene",
        {"drive": "drive_seed4", "events": [{"family": "pull_out", "precursor_s": 1.0, "onset_s": 2.0}]}]}
    (tmp_path / "scenes.json").write_text(json.dumps(scenes))
    drives = [{"path": str(tmp_path / "drive_seed3")}, {"path": str(tmp_path / "elsewhere" / "drive_x")}]
    assert drive_events(drives) == {0: [("cut_in", 1000 + 1_000_000_000, 1000 + 2_000_000_000)]}
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "scenes.json").write_text("[1, 2]")  # valid JSON, not a scenes.json
    assert drive_events([{"path": str(tmp_path / "other" / "drive_seed3")}]) == {}
    t_ns = 1000 + np.arange(30, dtype=np.int64) * 200_000_000
    windows = event_windows(drives, t_ns, np.zeros(30, np.int64))
    assert len(windows) == 1
    w = windows[0]  # from 2 s before the precursor (clamped at the first clip) to 3 s after the onset
    assert w.rows[0] == 0 and t_ns[w.rows[-1]] == 1000 + 5_000_000_000
