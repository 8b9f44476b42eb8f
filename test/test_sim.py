"""Closed loop: the scorer on hand-made drives (each infraction at the right time, EPDMS by hand), the fault rule,
and real drives in the synthetic world (the expert drives clean, extrapolation leaves a curving lane)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from pwm_model.cli import main as pwm_main
from pwm_model.config import preset
from pwm_model.data.synthetic.ego import EGO_CENTER_X_M, EGO_LENGTH_M, ego_box
from pwm_model.sim.loop import DriveLog, Tick, _collision
from pwm_model.sim.score import WEIGHTS, epdms, plans_consistent, score_drive

DT = 0.1
LANE_D = -1.75  # centre of lane 0 (the forward lanes lie at d < 0)


def _tick(t_s: float, x_m: float, d_m: float, speed: float, accel: float = 0.0, command: int = 1,
          agents: list[tuple[float, float, float, bool]] = ()) -> Tick:
    """Straight road along +x with the divider at y = 0: s = x, d = y. ``agents``: (x, y, speed, parked)."""
    box = ego_box(x_m - EGO_CENTER_X_M, d_m, 0.0)
    boxes = np.array([[x, y, 0.75, 4.5, 1.8, 1.5, 0.0] for x, y, _, _ in agents], float).reshape(-1, 7)
    return Tick(t_s=t_s, ego_xyyaw=(x_m - EGO_CENTER_X_M, d_m, 0.0), speed_mps=speed, accel_mps2=accel,
                yaw_rate_radps=0.0, s_m=x_m, d_m=d_m, heading_err_rad=0.0, command=command, ego_box=box,
                agent_boxes=boxes, agent_ids=np.arange(1, len(agents) + 1),
                agent_speed_mps=np.array([v for _, _, v, _ in agents], float),
                agent_parked=np.array([p for *_, p in agents], bool), driven_by_planner=True)


def _drive(seconds: float = 17.0, speed: float = 10.0, d_of_t=lambda t: LANE_D, accel_of_t=lambda t: 0.0,
           command_of_t=lambda t: 1) -> DriveLog:
    log = DriveLog(seed=1, planner="hand", seconds=seconds, reactive=True, frame_dt_s=DT,
                   drivable_d_m=(-7.0, 3.5), lane_centres_d_m=(-1.75, -5.25))
    for i in range(round(seconds / DT)):
        t = i * DT
        log.ticks.append(_tick(t, 20.0 + speed * t, d_of_t(t), speed, accel_of_t(t), command_of_t(t)))
    return log


def _kinds(score) -> list[tuple[str, float]]:  # noqa: ANN001
    return [(inf.kind, round(inf.t_s, 1)) for inf in score.infractions]


def test_a_clean_drive_scores_one_and_epdms_follows_the_formula() -> None:
    clean = score_drive(_drive(), None)
    assert clean.infractions == [] and clean.epdms == pytest.approx(1.0) and len(clean.windows) == 4
    sub = {"nc": 1.0, "dac": 1.0, "ddc": 0.5, "tlc": 1.0, "ttc": 0.0, "ep": 0.8, "lk": 1.0, "hc": 0.0, "ec": 0.5}
    by_hand = 1.0 * 1.0 * 0.5 * 1.0 * (5 * 0.0 + 5 * 0.8 + 2 * 1.0 + 2 * 0.0 + 2 * 0.5) / 16
    assert epdms(sub) == pytest.approx(by_hand) and sum(WEIGHTS.values()) == 16


def test_leaving_the_drivable_area_is_caught_when_it_happens() -> None:
    # drift right from t = 6 s at 1 m/s: the box's right side (0.925 m from the centre) passes -7.3 m at 10.3 s
    log = _drive(d_of_t=lambda t: LANE_D - max(t - 6.0, 0.0) * 1.0 if t < 12 else LANE_D)
    score = score_drive(log, None)
    first = [t for kind, t in _kinds(score) if kind == "drivable_area"][0]
    want = 6.0 + (7.3 - 1.75 - EGO_WIDTH / 2)
    assert abs(first - want) <= DT + 1e-6
    assert [w["dac"] for w in score.windows] == [1.0, 1.0, 0.0, 1.0]  # windows 1-5, 5-9, 9-13, 13-17 s


EGO_WIDTH = 1.85


def test_driving_against_the_traffic_is_caught_after_two_metres_within_a_second() -> None:
    # over the divider (d > 0) from t = 10 s at 10 m/s: 2 m within 1 s is reached 0.2 s later
    log = _drive(d_of_t=lambda t: 1.75 if 10.0 <= t < 11.5 else LANE_D)
    score = score_drive(log, None)
    times = [t for kind, t in _kinds(score) if kind == "driving_direction"]
    assert times and abs(times[0] - 10.1) <= DT + 1e-6  # the 2nd frame over the divider completes 2 m
    window = score.windows[2]  # 9-13 s
    assert window["ddc"] == 0.0  # 10 m within 1 s: beyond 6 m


def test_lane_keeping_needs_two_seconds_off_centre_and_no_commanded_lane_change() -> None:
    off = _drive(d_of_t=lambda t: LANE_D - 0.8 if 3.0 <= t < 8.0 else LANE_D)
    times = [t for kind, t in _kinds(score_drive(off, None)) if kind == "lane_keeping"]
    assert times and abs(times[0] - 5.0) <= DT + 1e-6  # 2 s after it left the centre
    commanded = _drive(d_of_t=lambda t: LANE_D - 0.8 if 3.0 <= t < 8.0 else LANE_D,
                       command_of_t=lambda t: 2 if 2.5 <= t < 8.5 else 1)
    assert "lane_keeping" not in [k for k, _ in _kinds(score_drive(commanded, None))]


def test_a_hard_stop_breaks_history_comfort_at_the_stop() -> None:
    log = _drive(accel_of_t=lambda t: -7.0 if 10.0 <= t < 11.0 else 0.0)
    score = score_drive(log, None)
    comfort = [t for kind, t in _kinds(score) if kind == "comfort"]
    assert comfort and 9.0 <= comfort[0] <= 11.0
    assert [w["hc"] for w in score.windows] == [1.0, 1.0, 0.0, 1.0]


def test_the_ego_is_at_fault_for_what_it_hits_not_for_being_hit_from_behind() -> None:
    ahead = _tick(5.0, 50.0, LANE_D, 10.0, agents=[(50.0 + EGO_LENGTH_M / 2 + 2.0, LANE_D, 5.0, False)])
    (hit,) = _collision(ahead, 50)
    assert hit.at_fault and hit.kind == "front" and not hit.static
    parked = _tick(5.0, 50.0, LANE_D, 10.0, agents=[(50.0 + EGO_LENGTH_M / 2 + 2.0, LANE_D, 0.0, True)])
    assert _collision(parked, 50)[0].static
    rear_ended = _tick(5.0, 50.0, LANE_D, 0.0, agents=[(50.0 - EGO_LENGTH_M / 2 - 2.0, LANE_D, 6.0, False)])
    (hit,) = _collision(rear_ended, 50)
    assert not hit.at_fault and hit.kind == "rear"
    moving_rear = _tick(5.0, 50.0, LANE_D, 3.0, agents=[(50.0 - EGO_LENGTH_M / 2 - 2.0, LANE_D, 9.0, False)])
    assert not _collision(moving_rear, 50)[0].at_fault  # hit from behind while driving: not its fault
    clear = _tick(5.0, 50.0, LANE_D, 10.0, agents=[(50.0, -5.25, 10.0, False)])  # beside, in the next lane
    assert _collision(clear, 50) == []


def test_an_at_fault_collision_zeroes_its_window_and_the_rest_of_the_drive() -> None:
    log = _drive()
    from pwm_model.sim.loop import Collision

    log.ticks = log.ticks[:70]  # the drive ended at 6.9 s
    log.collisions = [Collision(6.9, 69, 3, False, True, "front")]
    log.ended_early = True
    score = score_drive(log, None)
    assert [w["nc"] for w in score.windows[:2]] == [1.0, 0.0]
    assert [w.get("lost", 0.0) for w in score.windows] == [0.0, 0.0, 1.0, 1.0]
    assert score.epdms == pytest.approx(0.25) and score.driving_score == pytest.approx(0.6 * score.route_completion)
    assert ("collision", 6.9) in _kinds(score)


def test_extended_comfort_compares_consecutive_plans() -> None:
    t = np.arange(9) * 0.5
    straight = np.stack([10.0 * t, np.zeros(9)], 1)
    assert plans_consistent(straight, t, straight + [2.0, 0.0], t + 0.2)  # the same plan, 0.2 s later
    # a braking, turning car planned twice, 0.2 s apart: the same motion, so consistent (a scorer that differentiates
    # a finer linear interpolation of the waypoints sees a jerk spike at every waypoint and fails it)
    fine_t = np.linspace(0.0, 4.5, 4501)
    speed, yaw = 12.0 - 1.0 * fine_t, 0.15 * fine_t
    fx = np.cumsum(speed * np.cos(yaw)) * (fine_t[1] - fine_t[0])
    fy = np.cumsum(speed * np.sin(yaw)) * (fine_t[1] - fine_t[0])

    def sampled(t0: float) -> tuple[np.ndarray, np.ndarray]:
        tt = t0 + np.arange(9) * 0.5
        tt = tt[tt <= 4.5]
        return np.stack([np.interp(tt, fine_t, fx), np.interp(tt, fine_t, fy)], 1), tt

    assert plans_consistent(*sampled(0.0), *sampled(0.2))
    swerve = straight.copy()
    swerve[:, 1] = 2.0 * np.sin(t * 2.0)  # a plan that now weaves
    assert not plans_consistent(straight, t, swerve, t)


def test_expert_drives_clean_and_extrapolation_leaves_a_curving_lane() -> None:
    """Real closed-loop drives: on a curvy road the expert has no infraction worth a penalty, while constant
    velocity, which cannot turn, leaves the drivable area (and the drive ends there)."""
    from pwm_model.data.synthetic.world import World
    from pwm_model.sim.loop import run_drive
    from pwm_model.sim.planners import KinematicPlanner

    cfg = preset("tiny")
    seed = next(s for s in range(300, 400) if float(np.max(np.abs(World(s, cfg.camera, seconds=14.0).road
                                                                    .curvature_at(np.arange(0, 250, 5.0))))) > 1 / 150)
    expert = run_drive(seed, None, cfg, seconds=14.0, keep_frames=False)
    ex = score_drive(expert, None)
    assert ex.collisions_at_fault == 0 and all(w["dac"] == 1 and w["nc"] == 1 for w in ex.windows)
    cv = run_drive(seed, KinematicPlanner("cv", cfg), cfg, seconds=14.0, keep_frames=False)
    sc = score_drive(cv, expert)
    assert sc.epdms < ex.epdms - 0.2
    assert {"drivable_area", "lane_keeping"} & {i.kind for i in sc.infractions}
    assert math.isfinite(sc.route_completion) and sc.route_completion <= 1.0


def test_pwm_sim_cli_table_json_and_files(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "sim"
    assert pwm_main(["sim", "--planner", "expert", "--planner", "ctra", "--scenarios", "2", "--seconds", "9",
                     "--seed", "203", "--out", str(out), "--quiet"]) == 0  # CTRA hits a car in seed 203 at 7.0 s
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    for key in ("epdms", "driving_score", "route_completion", "collisions_at_fault", "scenarios", "CTRA_epdms"):
        assert key in summary, key
    assert summary["planner"] == "expert" and summary["scenarios"] == 2
    assert any("EPDMS" in line for line in lines[:-1])
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["planners"]) == {"expert", "CTRA"} and (out / "drives.csv").is_file()
    assert (out / "report.html").is_file() and set(metrics["anticipation"]["rows"]) == {"expert", "CTRA"}
    assert any(i["kind"] == "collision" and i["planner"] == "CTRA" for i in metrics["infractions"])
    for inf in metrics["infractions"]:  # every infraction with its time and its camera frame
        assert inf["t_s"] >= 0 and inf["frame_png"] and (out / inf["frame_png"]).is_file(), inf


@pytest.mark.parametrize("argv, needle", [
    (["sim", "--scenarios", "2"], "name what drives"),
    (["sim", "--planner", "ctra", "--seed", "990", "--scenarios", "20"], "held out"),
    (["sim", "--planner", "ego-mlp"], "--train-data"),
    (["sim", "--model", "/nonexistent/model"], "not an exported model directory"),
    (["sim", "--planner", "ctra", "--seconds", "3"], "--seconds"),
])
def test_pwm_sim_bad_arguments_are_one_sentence(argv: list[str], needle: str, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    assert pwm_main([*argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert needle in err and not (tmp_path / "x").exists()


def test_pwm_sim_with_a_model_that_does_not_load_is_one_sentence(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    model = tmp_path / "model"
    model.mkdir()
    (model / "manifest.json").write_text("{not json")
    assert pwm_main(["sim", "--model", str(model), "--scenarios", "1", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert "corrupt" in err and len(err.splitlines()) == 1 and not (tmp_path / "x").exists()


def test_non_reactive_traffic_does_not_see_the_ego() -> None:
    """Reactive: a car right behind the ego follows it (its leader is the ego); non-reactive: it drives on as if the
    lane ahead were empty."""
    from pwm_model.data.synthetic.world import World

    w = World(5, preset("tiny").camera, scenario="cruise", seconds=10.0)
    w.agents.clear()
    ego = w.ego
    follower = w.spawn("car", ego.center_s_m - 15.0, w.road.lane_d_m(ego.lane), ego.speed_mps + 3.0)
    gap, v_lead, _ = w.leader_of(follower)
    assert gap is not None and gap < 15.0 and v_lead == pytest.approx(ego.speed_mps)
    w.agents_see_ego = False
    assert w.leader_of(follower)[0] is None


def test_the_others_idm_can_be_set() -> None:
    """A follower 15 m behind the ego brakes harder with a 40 m minimum gap than with the default 3 m, and a bad
    --idm value is one sentence."""
    from pwm_model.commands.sim import parse_idm
    from pwm_model.data.synthetic.world import World
    from pwm_model.errors import ConfigError

    def follower_accel(idm: dict[str, float]) -> float:
        w = World(5, preset("tiny").camera, scenario="cruise", seconds=10.0)
        w.agents.clear()
        w.agent_idm = idm
        ego = w.ego
        follower = w.spawn("car", ego.center_s_m - 15.0, w.road.lane_d_m(ego.lane), ego.speed_mps)
        w.step_frame()
        return follower.accel_mps2

    assert parse_idm(["min_gap_m=40", "headway_s=2"]) == {"s0_m": 40.0, "headway_s": 2.0}
    assert follower_accel(parse_idm(["min_gap_m=40"])) < follower_accel({}) - 0.3
    for bad in (["gap=3"], ["min_gap_m=-1"], ["headway_s=x"]):
        with pytest.raises(ConfigError):
            parse_idm(bad)


def test_closed_loop_anticipation_times_the_cars_own_slowing_against_each_event() -> None:
    """A hand-made drive braking at 3 m/s^2 from 6.0 s: its lead time for an event with its onset at 6.5 s is
    -0.5 s minus the 2 s look-ahead's share (the car's future path already falls short before it brakes); a drive
    that never slows has none; the table keeps only the events the expert slowed down for and pairs by event."""
    from pwm_model.sim.anticipation import event_leads, realized_decel_mps2, suite_anticipation

    def braking(t0_s: float | None) -> DriveLog:
        log = DriveLog(seed=1, planner="hand", seconds=12.0, reactive=True, frame_dt_s=DT)
        x, v = 0.0, 10.0
        for i in range(120):
            t = i * DT
            a = -3.0 if t0_s is not None and t >= t0_s and v > 0 else 0.0
            log.ticks.append(_tick(t, 20.0 + x, LANE_D, v, a))
            x, v = x + v * DT + 0.5 * a * DT * DT, max(v + a * DT, 0.0)
        log.events = [{"family": "lead_brake", "precursor_s": 5.5, "onset_s": 6.5},
                      {"family": "cut_in", "precursor_s": 1.0, "onset_s": 2.0}]
        return log

    t, d = realized_decel_mps2(braking(6.0))
    assert d[0] == pytest.approx(0.0, abs=1e-9) and np.isnan(d[-1])
    assert d[int(round(7.0 / DT))] == pytest.approx(3.0, abs=1e-6)  # fully braking over the next 2 s
    leads = event_leads(braking(6.0))
    (fam0, k0, lead0, early0), (fam1, _, lead1, _) = leads
    assert fam0 == "lead_brake" and k0 == 0 and not early0 and -1.6 < lead0 < -0.5
    assert fam1 == "cut_in" and math.isnan(lead1)  # it never slowed around 2 s
    late = event_leads(braking(7.5))[0][2]
    assert late == pytest.approx(lead0 + 1.5, abs=0.11)
    table = suite_anticipation({("expert", 1): leads, ("A", 1): event_leads(braking(7.5)),
                                ("B", 1): event_leads(braking(None))}, ["expert", "A", "B"])
    assert table["events"] == 1  # the cut-in the expert did not slow for is left out
    assert table["rows"]["A"]["mean_s"] == pytest.approx(late) and table["rows"]["B"]["slowed"] == 0
    assert math.isnan(table["paired"]["A - B"][0])  # B never slowed: no pair
