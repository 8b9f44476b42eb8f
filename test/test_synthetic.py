"""The synthetic world: determinism by seed, the ego driver (lane keeping on curves, commanded lane changes,
braking for a braking lead, no collisions with parked obstacles), the foresight cues of the scenario events,
the public simulate_drive API, and ``pwm gen-data`` writing real rosbag2 drives."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from pwm_model.cli import main as pwm_main
from pwm_model.config import CameraConfig, preset
from pwm_model.data.schema import COMMAND_LEFT, COMMAND_RIGHT, COMMAND_STRAIGHT, DriveSample
from pwm_model.data.synthetic import EPOCH_NS, SCENARIOS, World, simulate_drive
from pwm_model.data.synthetic.agents import INDICATOR_OFF
from pwm_model.data.synthetic.ego import EGO_LENGTH_M, ego_box
from pwm_model.errors import ConfigError
from pwm_model.geometry import box_footprint, polygons_intersect

SMALL = CameraConfig(width_px=64, height_px=32)


def _quiet(world: World) -> World:
    """No other traffic: a controlled road for driver tests."""
    world.agents.clear()
    world.traffic.next_spawn_s = world.traffic.next_oncoming_s = math.inf
    world.scheduler.pool = ()
    return world


def _collides(sample: DriveSample) -> bool:
    ego = box_footprint(ego_box(sample.ego.x_m, sample.ego.y_m, sample.ego.yaw_rad))
    for b in sample.boxes.xyz_lwh_yaw:
        if math.hypot(b[0] - sample.ego.x_m, b[1] - sample.ego.y_m) < 20 and polygons_intersect(ego, box_footprint(b)):
            return True
    return False


# ----------------------------------------------------------------------------------------------------
# Determinism and the API

def test_same_seed_same_drive_other_seed_differs():
    a = list(simulate_drive(11, 1.5, SMALL))
    b = list(simulate_drive(11, 1.5, SMALL))
    c = list(simulate_drive(12, 1.5, SMALL))
    assert len(a) == len(b) == 15
    for x, y in zip(a, b):
        assert x.t_ns == y.t_ns and x.command == y.command and x.scenario == y.scenario
        np.testing.assert_array_equal(x.image_rgb, y.image_rgb)
        assert (x.ego.x_m, x.ego.y_m, x.ego.yaw_rad, x.ego.speed_mps) == (y.ego.x_m, y.ego.y_m, y.ego.yaw_rad,
                                                                          y.ego.speed_mps)
        np.testing.assert_array_equal(x.boxes.xyz_lwh_yaw, y.boxes.xyz_lwh_yaw)
        np.testing.assert_array_equal(x.boxes.track_ids, y.boxes.track_ids)
    assert any(not np.array_equal(x.image_rgb, z.image_rgb) for x, z in zip(a, c))
    # a longer drive of the same seed starts with the same frames
    longer = list(simulate_drive(11, 4.0, SMALL))[:15]
    assert all(np.array_equal(x.image_rgb, y.image_rgb) for x, y in zip(a, longer))


def test_simulate_drive_samples():
    cam = CameraConfig(width_px=96, height_px=48, frame_rate_hz=10.0)
    samples = list(simulate_drive(3, 2.0, cam, scenario="cut_in"))
    assert len(samples) == 20
    for i, s in enumerate(samples):
        assert s.frame_index == i and s.t_ns == EPOCH_NS + i * 100_000_000
        assert s.ego.t_ns == s.t_ns
        assert s.image_rgb.shape == (48, 96, 3) and s.image_rgb.dtype == np.uint8
        assert s.command in (COMMAND_LEFT, COMMAND_STRAIGHT, COMMAND_RIGHT)
        assert s.scenario in SCENARIOS
        assert s.boxes.xyz_lwh_yaw.dtype == np.float32 and s.boxes.xyz_lwh_yaw.shape == (len(s.boxes), 7)
        assert s.boxes.track_ids.shape == (len(s.boxes),) and len(s.boxes.labels) == len(s.boxes)
        assert set(s.boxes.labels) <= {"car", "van", "truck", "parked_car"}
        # z is the box centre height: boxes stand on the ground
        np.testing.assert_allclose(s.boxes.xyz_lwh_yaw[:, 2], s.boxes.xyz_lwh_yaw[:, 5] / 2, rtol=1e-6)
        assert np.isfinite([s.ego.x_m, s.ego.y_m, s.ego.yaw_rad, s.ego.speed_mps, s.ego.accel_mps2,
                            s.ego.yaw_rate_radps]).all()
    # the ego moves forward at a plausible speed; the image shows sky above and road below
    dx = samples[-1].ego.x_m - samples[0].ego.x_m
    assert 5.0 < dx < 60.0
    img = samples[0].image_rgb.astype(int)
    assert img[2, :, 2].mean() > img[2, :, 1].mean() - 5  # bluish or dark sky at the top
    bottom = img[-2, 40:56]
    assert np.all(np.abs(bottom[:, 0] - bottom[:, 1]) < 25)  # grey asphalt under the ego


def test_bad_arguments_raise_one_sentence():
    with pytest.raises(ConfigError, match="unknown scenario"):
        simulate_drive(0, 1.0, SMALL, scenario="rally")
    with pytest.raises(ConfigError, match="seconds"):
        simulate_drive(0, float("nan"), SMALL)
    with pytest.raises(ConfigError, match="seed"):
        simulate_drive(-1, 1.0, SMALL)


# ----------------------------------------------------------------------------------------------------
# The ego driver

def test_ego_stays_in_lane_on_curves():
    w = World(21, SMALL, scenario="curve", seconds=40.0)
    road, ego = w.road, w.ego
    kappa, dev, lat_acc = [], [], []
    for _ in range(400):
        w.step_frame()
        kappa.append(abs(float(road.curvature_at(ego.s_m))))
        dev.append(abs(ego.d_m - road.lane_d_m(ego.lane)))
        lat_acc.append(abs(ego.speed_mps * ego.yaw_rate_radps))
        assert not ego.changing_lane
    assert max(kappa) > 1 / 160  # it really drove through tight curves
    assert max(dev) < 0.35  # and kept to its lane
    assert max(lat_acc) < 3.0  # slowing down for them


@pytest.mark.parametrize("seed", [5, 8])
def test_lane_change_on_command(seed):
    w = _quiet(World(seed, SMALL, scenario="cruise", seconds=20.0))
    ego, road = w.ego, w.road
    direction = COMMAND_LEFT if ego.lane > 0 else COMMAND_RIGHT
    start_lane = ego.lane
    target = start_lane - 1 if direction == COMMAND_LEFT else start_lane + 1
    for _ in range(5):
        w.step_frame()
    assert ego.request_lane_change(direction, w.t_s, lead_s=1.5)
    issued = w.t_s
    commands, d = [], []
    for _ in range(100):
        w.step_frame()
        commands.append(ego.command)
        d.append(ego.center_d_m)
        if ego.lane_changes_done:
            break
    assert ego.lane_changes_done == 1 and ego.lane == target
    # the command is on from the request until the manoeuvre is complete, then back to straight
    assert all(c == direction for c in commands[:-1]) and ego.command == COMMAND_STRAIGHT
    # the ego does not move over during the 1.5 s lead, then ends centred in the new lane
    lead_frames = int(1.5 * 10) - 1
    assert max(abs(x - road.lane_d_m(start_lane)) for x in d[:lead_frames]) < 0.15
    assert abs(d[-1] - road.lane_d_m(target)) < 0.3
    assert 3.0 < w.t_s - issued < 9.0
    sign = 1.0 if direction == COMMAND_LEFT else -1.0  # left is +d
    assert sign * (d[-1] - d[0]) > 0.8 * road.lane_width_m


def test_ego_brakes_for_a_braking_lead_and_stops_behind_it():
    w = _quiet(World(4, SMALL, scenario="cruise", seconds=30.0))
    ego = w.ego
    v0 = ego.speed_mps
    lead = w.spawn("car", ego.center_s_m + 30.0, w.road.lane_d_m(ego.lane), v0, role="event")
    for _ in range(10):
        w.step_frame()
    lead.accel_override = -5.0
    gaps, accels = [], []
    for _ in range(150):
        w.step_frame()
        if lead.speed_mps == 0.0:
            lead.accel_override = 0.0
        gaps.append(lead.s_m - ego.center_s_m - (lead.length_m + EGO_LENGTH_M) / 2)
        accels.append(ego.accel_mps2)
    assert v0 > 10.0
    assert min(accels) < -2.0  # it braked
    assert ego.speed_mps < 0.2  # came to a stop
    assert min(gaps) > 1.0 and gaps[-1] < 10.0  # behind the lead, never touching it


@pytest.mark.parametrize("seed", [1, 2])
def test_no_collision_with_parked_obstacles(seed):
    w = World(seed, SMALL, scenario="parked_obstacle", seconds=45.0)
    passed_parked = set()
    command_in_view = []
    prev_cmd = COMMAND_STRAIGHT
    for i in range(450):
        if i:
            w.step_frame()
        s = w.sample(None)
        assert not _collides(s), f"collision at frame {i}"
        ego_s = w.ego.center_s_m
        for a in w.agents:
            if a.parked and a.s_m < ego_s - 10.0:
                passed_parked.add(a.track_id)
        if s.command != COMMAND_STRAIGHT and prev_cmd == COMMAND_STRAIGHT:
            # the command comes when the obstacle ahead is in view
            obstacle = w.scheduler.current.obstacle
            command_in_view.append(w.in_view(obstacle))
        prev_cmd = s.command
    assert len(passed_parked) >= 2  # drove around at least two obstacles
    assert command_in_view and all(command_in_view)


# ----------------------------------------------------------------------------------------------------
# Foresight cues of the events

def test_brake_lamps_light_before_the_lead_decelerates():
    w = World(2, SMALL, scenario="lead_brake", seconds=30.0)
    lamps_on_t, decel_t = None, None
    for _ in range(300):
        w.step_frame()
        ev = w.scheduler.current
        if ev is None or not hasattr(ev, "lead"):
            continue
        if lamps_on_t is None and ev.lead.brake_lamp:
            lamps_on_t = w.t_s
        if lamps_on_t is not None and ev.lead.accel_mps2 < -1.5:
            decel_t = w.t_s
            break
    assert lamps_on_t is not None and decel_t is not None
    assert 0.45 <= decel_t - lamps_on_t <= 1.2
    labels = [s.scenario for s in simulate_drive(2, 10.0, SMALL, scenario="lead_brake")]
    assert "lead_brake" in labels


def test_indicator_and_drift_before_a_cut_in():
    w = World(0, SMALL, scenario="cut_in", seconds=40.0)
    ego = w.ego
    ind_t, enter_t, car = None, None, None
    for _ in range(400):
        w.step_frame()
        ev = w.scheduler.current
        if ev is not None and hasattr(ev, "car"):
            car = ev.car
        if car is None:
            continue
        if ind_t is None and car.indicator != INDICATOR_OFF:
            ind_t = w.t_s
        lane_half = w.road.lane_width_m / 2
        if enter_t is None and abs(car.d_m - w.road.lane_d_m(ego.lane)) < lane_half + car.width_m / 2:
            enter_t = w.t_s  # its side crosses into the ego lane
            break
    assert ind_t is not None and enter_t is not None
    assert enter_t - ind_t >= 0.8


def test_mixed_drive_has_several_events_and_no_collisions():
    labels = []
    w = World(3, SMALL, seconds=60.0)
    for i in range(600):
        if i:
            w.step_frame()
        s = w.sample(None)
        labels.append(s.scenario)
        assert not _collides(s), f"collision at frame {i}"
    assert len(set(labels) - {"cruise", "curve"}) >= 3


@pytest.mark.parametrize("seed", [1005, 1007])
def test_in_mixed_drives_the_command_comes_a_second_before_the_lateral_move(seed):
    """What the planner can learn from the command: in the drives the data is made of (lane changes, parked
    obstacles), every left/right command is on for at least 1 s before the ego leaves its lane centre, the ego is
    moving over within 3 s of it, and it moves by about a lane width in the commanded direction (left is +d) while
    the command holds."""
    w = World(seed, SMALL, seconds=60.0)
    road, ego = w.road, w.ego
    rows = []  # (command, centre offset from the lane the ego started the command in)
    onsets = 0
    start_d = None
    for i in range(600):
        if i:
            w.step_frame()
        if ego.command != COMMAND_STRAIGHT and (not rows or rows[-1][0] == COMMAND_STRAIGHT):
            onsets += 1
            start_d = ego.center_d_m
        rows.append((ego.command, ego.center_d_m - start_d if start_d is not None else 0.0))
    assert onsets >= 1, "no lane-change command in this drive: pick another seed"
    i = 0
    checked = 0
    while i < len(rows):
        if rows[i][0] == COMMAND_STRAIGHT:
            i += 1
            continue
        j = i
        while j < len(rows) and rows[j][0] == rows[i][0]:
            j += 1
        held = rows[i:j]
        assert max(abs(d) for _, d in held[:10]) < 0.2  # the first second: still in its lane
        # the command announces a manoeuvre that begins: the ego is on its way within 3 s (lead 1-2 s), so a
        # planner that reads the command can plan the move instead of guessing whether the lane will clear
        moved = [k for k, (_, d) in enumerate(held) if abs(d) > 0.3]
        assert moved and moved[0] <= 30, f"command at frame {i} not followed by a move within 3 s"
        if j < len(rows):  # completed within the drive
            sign = 1.0 if rows[i][0] == COMMAND_LEFT else -1.0
            assert sign * held[-1][1] > 0.8 * road.lane_width_m
            checked += 1
        i = j
    assert checked >= 1


# ----------------------------------------------------------------------------------------------------
# pwm gen-data

def test_gen_data_writes_bags_and_scenes_json(tmp_path: Path, capsys):
    from pwm_model.data.bag import DriveReader

    out = tmp_path / "drives"
    rc = pwm_main(["gen-data", "--out", str(out), "--scenes", "2", "--seconds", "0.8", "--seed", "7",
                   "--width", "64", "--height", "32", "--format", "sqlite3"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "[1/2] drive_seed7" in err and "[2/2] drive_seed8" in err
    meta = json.loads((out / "scenes.json").read_text())
    assert [s["seed"] for s in meta["scenes"]] == [7, 8] and meta["storage"] == "sqlite3"
    assert all(s["frames"] == 8 and s["split"] == "eval" and s["events"] == [] for s in meta["scenes"])
    spans = meta["scenes"][0]["labels"]
    assert spans[0]["start_s"] == 0.0 and spans[-1]["end_s"] == pytest.approx(0.8)
    assert all(a["end_s"] == b["start_s"] for a, b in zip(spans, spans[1:]))
    cam = CameraConfig(**{**preset("tiny").camera.__dict__, "width_px": 64, "height_px": 32})
    expected = list(simulate_drive(7, 0.8, cam))
    got = list(DriveReader(out / "drive_seed7").samples())
    assert len(got) == len(expected) == 8
    for g, e in zip(got, expected):
        assert g.t_ns == e.t_ns and g.command == e.command and g.scenario == e.scenario
        np.testing.assert_array_equal(g.image_rgb, e.image_rgb)
        assert g.ego.x_m == pytest.approx(e.ego.x_m, abs=1e-6) and g.ego.speed_mps == pytest.approx(e.ego.speed_mps)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers
    # running again replaces the earlier output
    assert pwm_main(["gen-data", "--out", str(out), "--scenes", "1", "--seconds", "0.3", "--seed", "1000",
                     "--width", "64", "--height", "32", "--compressed"]) == 0
    meta = json.loads((out / "scenes.json").read_text())
    assert [s["drive"] for s in meta["scenes"]] == ["drive_seed1000"] and meta["scenes"][0]["split"] == "train"
    assert sorted(p.name for p in out.iterdir()) == ["drive_seed1000", "scenes.json"]


def test_gen_data_bad_arguments_exit_2_and_touch_nothing(tmp_path: Path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert pwm_main(["gen-data", "--out", str(foreign), "--seconds", "0.2", "--width", "64", "--height", "32",
                     "--seed", "1000"]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "keep me" and len(list(foreign.iterdir())) == 1
    for bad in (["--scenes", "0", "--seed", "1000"], ["--seconds", "-1", "--seed", "1000"], ["--seed", "-3"],
                ["--width", "8", "--seed", "1000"], ["--scenes", "2"]):
        assert pwm_main(["gen-data", "--out", str(tmp_path / "x"), *bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ")
    assert not (tmp_path / "x").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_gen_data_needs_a_seed_so_that_held_out_drives_are_never_made_by_default(tmp_path: Path, capsys):
    """Without --seed, gen-data wrote seeds 0.. (the demo drive and the held-out drives): now it says which to
    choose and writes nothing."""
    assert pwm_main(["gen-data", "--out", str(tmp_path / "drives"), "--scenes", "80", "--seconds", "0.2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --seed is required")
    assert "--seed 1000" in err[0] and "held-out" in err[0] and "demo drive" in err[0]
    assert not (tmp_path / "drives").exists() and not list(tmp_path.iterdir())


def test_events_log_their_precursor_before_their_onset():
    """Lead brakes light their lamps 0.5-1 s, cut-ins signal 0.8-1.5 s, before the vehicle brakes or moves across."""
    gaps = {"lead_brake": (0.5, 1.0), "cut_in": (0.8, 1.5)}
    for scenario, (lo, hi) in gaps.items():
        w = World(2, SMALL, scenario=scenario, seconds=40.0)
        for _ in range(400):
            w.step_frame()
        done = [e for e in w.events if "onset_s" in e]
        assert done and all(e["family"] == scenario for e in w.events)
        for e in done:
            assert lo - 0.11 <= e["onset_s"] - e["precursor_s"] <= hi + 0.11, e


def test_pull_out_signals_then_enters_the_ego_lane_and_the_ego_slows_without_contact():
    w = World(3, SMALL, scenario="pull_out", seconds=40.0)
    ego = w.ego
    assert ego.lane == w.road.n_forward - 1  # starts next to the kerb
    car, speed_at_onset, min_speed_after, entered = None, None, math.inf, False
    for i in range(400):
        if i:
            w.step_frame()
        s = w.sample(None)
        assert not _collides(s), f"collision at frame {i}"
        ev = w.scheduler.current
        if car is None and ev is not None and getattr(ev, "car", None) is not None:
            car = ev.car
            assert car.parked and car.d_m < w.road.right_edge_d_m  # on the shoulder
        if w.events and "onset_s" in w.events[0]:
            if speed_at_onset is None:
                speed_at_onset = ego.speed_mps
                assert car.indicator != INDICATOR_OFF and not car.parked
            min_speed_after = min(min_speed_after, ego.speed_mps)
            entered |= abs(car.d_m - w.road.lane_d_m(ego.lane)) < 0.3
            if w.t_s > w.events[0]["onset_s"] + 5.0:
                break
    assert speed_at_onset is not None and entered
    assert 1.0 - 0.11 <= w.events[0]["onset_s"] - w.events[0]["precursor_s"] <= 2.0 + 0.11
    assert min_speed_after < speed_at_onset - 2.0  # the ego had to slow down for it


def test_lit_lamps_bloom_to_a_pixel_of_the_tiny_dyn_view(monkeypatch):
    """By day, a lead about 40 m ahead lighting its brake lamps changes the 32 x 64 view the dynamics tokenizer
    reads by a clearly visible amount (77 levels here); without the bloom the same lamps change it by 31."""
    import cv2

    from pwm_model.data.synthetic import render as render_mod

    cam = preset("tiny").camera
    w = World(7, cam, scenario="lead_brake", seconds=40.0)
    assert w.appearance.time_of_day == "day"
    while not w.events:
        w.step_frame()
    lead = w.scheduler.current.lead
    gap = lead.s_m - w.ego.center_s_m
    assert 20.0 < gap < 60.0

    def red_excess(bloom: float) -> float:
        monkeypatch.setattr(render_mod, "LAMP_BLOOM_WIDTH_FRAC", bloom)
        views_on = w.views()
        lead.brake_lamp = False
        views_off = w.views()
        lead.brake_lamp = True
        imgs = [cv2.resize(w.render(w.renderer(), v), (64, 32), interpolation=cv2.INTER_AREA).astype(float)
                for v in (views_on, views_off)]
        return float(np.abs(imgs[0] - imgs[1]).max())

    bloomed, plain = red_excess(1.0 / 128.0), red_excess(0.0)
    assert bloomed >= 60.0 and bloomed > 2.0 * plain, (bloomed, plain)
