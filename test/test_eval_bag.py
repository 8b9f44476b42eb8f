"""Bag evaluation, the scoring side: recorded plans against the bag's own future, on real rosbag2 files.

Plans come from predictions bags written as ``pwm_replay --record`` writes them (no model needed); the drive is the
analytic arc of drive_helpers, so the ground truth and constant velocity's error are known in closed form.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from pwm_model.data.bag import DriveReader
from pwm_model.errors import DataError
from pwm_model.eval.bag_eval import RecordedPlans, evaluate_bag
from pwm_model.eval.bag_summary import summarize
from pwm_model.eval.bag_truth import ground_truth
from pwm_model.eval.metrics import EGO_CENTER_X_M
from pwm_model.eval.predictions import read_predictions
from pwm_model.geometry import PinholeCamera

from .drive_helpers import T0_NS, arc_relative, odom_msg, typestore, write_raw_bag
from .eval_bag_helpers import (
    FRAMES,
    config,
    cv_l2_up_to,
    rewrite_with_mcap_library,
    truth_plan,
    write_arc,
    write_predictions,
)

DT_NS = 100_000_000
STAMPS = [T0_NS + i * DT_NS for i in range(FRAMES)]
REQUIRED = ("l2_3s", "cv_l2_3s", "collision_rate", "psnr_forecast_1s_db", "latency_p50_ms", "plans")


def _pwm(*args: str) -> subprocess.CompletedProcess:
    """The ``pwm`` command in a subprocess (the CLI end to end)."""
    return subprocess.run([sys.executable, "-m", "pwm_model.cli", *args], capture_output=True, text=True,
                          timeout=300)


def _pwm_here(capsys: pytest.CaptureFixture, *args: str) -> subprocess.CompletedProcess:
    """The ``pwm`` command's ``main`` in this process (same exit status and output, without a new interpreter)."""
    from pwm_model.cli import main

    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(["pwm", *args], code, out.out, out.err)


def _evaluate(bag: Path, pred: Path, out: Path | None = None, video: bool = False) -> tuple[object, dict]:
    from pwm_model.eval.bag_eval import EvalOptions

    cfg = config()
    ev = evaluate_bag(bag, RecordedPlans(read_predictions(pred)), cfg, PinholeCamera.from_config(cfg.camera),
                      out_dir=out, options=EvalOptions(video=video, progress=False))
    return ev, summarize([ev])


def test_ground_truth_is_the_arc_ahead(tmp_path: Path) -> None:
    reader = DriveReader(write_arc(tmp_path / "arc"))
    wp, ok, boxes, boxes_ok = ground_truth(reader, STAMPS[10], 8, 500_000_000, None)
    np.testing.assert_allclose(wp, truth_plan(), atol=1e-6)
    assert ok.all() and boxes.shape[0] == 8 and boxes_ok.any(axis=1).all()
    # 6.9 s of drive: from t = 4.0 s only the waypoints up to 2.9 s ahead exist
    wp, ok, _, _ = ground_truth(reader, STAMPS[40], 8, 500_000_000, None)
    assert ok.tolist() == [True] * 5 + [False] * 3 and np.all(wp[~ok] == 0)


def test_perfect_plans_score_zero_and_constant_velocity_its_analytic_error(tmp_path: Path) -> None:
    bag = write_arc(tmp_path / "arc")
    # plans in the first 3 s: every waypoint has its ground truth (later ones would average in fewer waypoints)
    pred = write_predictions(tmp_path / "pred", STAMPS[:30:2], lambda t: truth_plan(), surprise=lambda t: 0.25)
    ev, m = _evaluate(bag, pred)
    assert m["plans"] == 15 and m["mode"] == "live" and m["planning_scored"]
    for h in ("1s", "2s", "3s"):
        assert m[f"l2_{h}"] == pytest.approx(0.0, abs=1e-4)
        assert m[f"cv_l2_{h}"] == pytest.approx(cv_l2_up_to(float(h[0])), abs=1e-3)
    x, y, _ = arc_relative(3.0)
    assert m["cv_l2_uniad_3s"] == pytest.approx(math.hypot(5.0 * 3.0 - x, y), abs=1e-3)
    assert m["collision_rate"] == 0.0 and m["cv_collision_rate"] == 0.0
    assert m["latency_p50_ms"] == pytest.approx(30.0) and m["latency_kind"] == "end-to-end"
    assert m["surprise_mean"] == pytest.approx(0.25)
    assert m["psnr_forecast_1s_db"] is None  # live recordings carry no forecast frames
    assert all(key in m for key in REQUIRED)
    assert len(m["l2_curve_m"]) == 8 and m["cv_l2_curve_m"][-1] > m["cv_l2_curve_m"][0] > 0


def test_a_lateral_offset_is_its_l2_and_a_plan_into_the_lead_car_collides(tmp_path: Path) -> None:
    bag = write_arc(tmp_path / "arc")
    offset = truth_plan() + np.array([0.0, 1.0, 0.0])
    _, m = _evaluate(bag, write_predictions(tmp_path / "offset", STAMPS[:30:3], lambda t: offset))
    for key in ("l2_1s", "l2_2s", "l2_3s", "l2_uniad_3s", "l2_avg"):
        assert m[key] == pytest.approx(1.0, abs=1e-4)
    # a plan that puts the ego box onto the lead car (4.5 m long) at every waypoint time collides, every time
    reader = DriveReader(bag)

    def ram(t_ns: int) -> np.ndarray:
        _, _, boxes, ok = ground_truth(reader, t_ns, 8, 500_000_000, None)
        car = [b[ok[k] & (np.abs(b[:, 3] - 4.5) < 1e-3)][0] for k, b in enumerate(boxes)]
        return np.array([[c[0] - EGO_CENTER_X_M, c[1], c[6]] for c in car])

    _, m = _evaluate(bag, write_predictions(tmp_path / "ram", STAMPS[:20:4], ram))
    assert m["collision_rate"] == 1.0 and m["collision_1s_pct"] == 100.0
    assert m["cv_collision_rate"] == 0.0 and m["collision_gt_excluded"] == 0
    # constant velocity wins the collisions: said as plainly as a win would be
    from pwm_model.eval.bag_summary import format_table, verdict_sentence

    assert "collision rate: PWM worse than constant velocity (100.0 % vs 0.0 %" in verdict_sentence(m)
    line = next(ln for ln in format_table(m).splitlines() if ln.startswith("collision rate"))
    assert line.split()[-1] == "worse"


@pytest.mark.parametrize("kind", ["sqlite3", "compressed", "foreign_writer_extra_topics"])
def test_other_storages_writers_and_encodings_score_the_same(tmp_path: Path, kind: str) -> None:
    if kind == "sqlite3":
        bag = write_arc(tmp_path / "arc", storage="sqlite3")
    elif kind == "compressed":
        bag = write_arc(tmp_path / "arc", compressed=True, compressed_format="jpeg")
    else:
        bag = rewrite_with_mcap_library(write_arc(tmp_path / "arc"), tmp_path / "foreign.mcap")
    reader = DriveReader(bag)
    assert reader.summary.camera_frames == FRAMES and reader.summary.camera_compressed == (kind == "compressed")
    if kind.startswith("foreign"):
        assert "/chatter" in reader.summary.topics
    offset = truth_plan() + np.array([0.5, 0.0, 0.0])
    ev, m = _evaluate(bag, write_predictions(tmp_path / "pred", STAMPS[:30:5], lambda t: offset), tmp_path / "out",
                      video=kind == "compressed")
    assert m["plans"] == 6 and m["l2_3s"] == pytest.approx(0.5, abs=1e-4)
    assert m["cv_l2_3s"] == pytest.approx(cv_l2_up_to(3.0), abs=1e-3)
    if kind == "compressed":  # the overlay video holds every frame and decodes
        cap = cv2.VideoCapture(str(ev.video.path))
        count = 0
        while cap.read()[0]:
            count += 1
        assert count == FRAMES and ev.video.path.stat().st_size > 1000


def test_cli_writes_metrics_report_and_video(tmp_path: Path) -> None:
    write_arc(tmp_path / "drives" / "arc")  # a folder of bags, as pwm gen-data writes them, stands for its bags
    pred = write_predictions(tmp_path / "pred", STAMPS[::2], lambda t: truth_plan() + [0.2, 0.0, 0.0],
                             surprise=lambda t: (t - T0_NS) / 1e10)
    out = tmp_path / "eval"
    r = _pwm("eval-bag", str(tmp_path / "drives"), "--predictions", str(pred), "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    assert "L2 3 s (m)" in r.stdout and "0.200" in r.stdout
    m = json.loads((out / "metrics.json").read_text())
    assert all(key in m for key in REQUIRED) and m["plans"] == FRAMES // 2 and m["l2_3s"] == pytest.approx(0.2)
    assert m["bags"][0]["video"] == "overlay.mp4" and (out / "overlay.mp4").stat().st_size > 0
    page = (out / "report.html").read_text()
    assert 'src="overlay.mp4"' in page and "Surprise over time" in page
    assert not list(out.glob(".*")), "temporary files left behind"


def _no_odometry_bag(tmp_path: Path) -> Path:
    from pwm_model.data.bag_writer import write_drive
    from pwm_model.data.schema import Boxes, DriveSample, EgoState

    cfg = config()
    rng = np.random.default_rng(0)
    samples = [DriveSample(T0_NS + i * DT_NS, rng.integers(0, 255, (64, 128, 3), np.uint8),
                           EgoState(T0_NS + i * DT_NS, 0.0, 0.0, 0.0), 1, Boxes()) for i in range(20)]
    bag = write_drive(tmp_path / "no_odom_src", samples, cfg.camera, cfg.data.topics)
    # copy every topic but odometry
    from rosbags.highlevel import AnyReader

    ts = typestore()
    msgs = []
    with AnyReader([bag], default_typestore=ts) as reader:
        for conn, t_ns, raw in reader.messages():
            if conn.topic != cfg.data.topics.odometry:
                msgs.append((conn.topic, conn.msgtype, t_ns, reader.deserialize(raw, conn.msgtype)))
    return write_raw_bag(tmp_path / "no_odom", msgs)


def test_bag_without_odometry_gets_forecast_metrics_only_said_plainly(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    bag = _no_odometry_bag(tmp_path)
    pred = write_predictions(tmp_path / "pred", [T0_NS + i * DT_NS for i in range(20)], lambda t: truth_plan())
    out = tmp_path / "eval"
    r = _pwm_here(capsys, "eval-bag", str(bag), "--predictions", str(pred), "--out", str(out), "--quiet", "--no-video")
    assert r.returncode == 0, r.stderr
    assert "no odometry on /odom" in r.stdout and "forecast metrics only" in r.stdout
    m = json.loads((out / "metrics.json").read_text())
    assert m["planning_scored"] is False and m["l2_3s"] is None and m["plans"] == 20
    assert "forecast metrics only" in (out / "report.html").read_text()


def _truncated(tmp_path: Path) -> Path:
    bag = write_arc(tmp_path / "trunc")
    file = next(bag.glob("*.mcap"))
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])
    return bag


def _garbled(tmp_path: Path) -> Path:
    bag = write_arc(tmp_path / "garbled")
    file = next(bag.glob("*.mcap"))
    data = bytearray(file.read_bytes())
    data[8:264] = b"\xa5" * 256  # the records after the magic bytes
    file.write_bytes(bytes(data))
    return bag


def test_a_cut_off_recording_is_scored_up_to_the_cut_and_says_so(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    bag = _truncated(tmp_path)
    pred = write_predictions(tmp_path / "pred", STAMPS[::7], lambda t: truth_plan())
    out = tmp_path / "eval"
    r = _pwm_here(capsys, "eval-bag", str(bag), "--predictions", str(pred), "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    assert "cut off" in r.stdout  # the note under the table (and a logged warning)
    m = json.loads((out / "metrics.json").read_text())
    assert 0 < m["plans"] < len(STAMPS[::7]) and any("cut off" in n for b in m["bags"] for n in b["notes"])


def _no_camera(tmp_path: Path) -> Path:
    ts = typestore()
    return write_raw_bag(tmp_path / "no_camera", [
        ("/odom", "nav_msgs/msg/Odometry", T0_NS, odom_msg(ts, T0_NS, 0.0, 0.0, 0.0)),
        ("/chatter", "std_msgs/msg/String", T0_NS, ts.types["std_msgs/msg/String"](data="hi"))])


@pytest.mark.parametrize("case, expect", [
    ("garbled", "corrupt or truncated"), ("no_camera", "has no camera topic /camera/front/image_raw"),
    ("missing", "does not exist"), ("other_drive", "matches a camera frame"), ("not_predictions", "no planned"),
    ("wrong_dt", "waypoints 0.25 s apart")])
def test_bad_inputs_give_one_sentence_exit_2_and_write_nothing(tmp_path: Path, case: str, expect: str,
                                                               capsys: pytest.CaptureFixture) -> None:
    bag = {"garbled": _garbled, "no_camera": _no_camera}.get(case, lambda p: write_arc(p / "arc"))(tmp_path)
    pred = write_predictions(tmp_path / "pred", STAMPS[::7], lambda t: truth_plan(),
                             dt_s=0.25 if case == "wrong_dt" else 0.5)
    if case == "missing":
        bag = tmp_path / "nowhere"
    if case == "other_drive":
        pred = write_predictions(tmp_path / "pred_other", [s + 12_345 for s in STAMPS[::7]], lambda t: truth_plan())
    if case == "not_predictions":
        pred = bag
    out = tmp_path / "eval"
    r = _pwm_here(capsys, "eval-bag", str(bag), "--predictions", str(pred), "--out", str(out), "--quiet")
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], r.stderr
    assert not out.exists() or not any(out.iterdir()), "a failed evaluation left files behind"


def test_recorded_surprise_follows_its_trajectory(tmp_path: Path) -> None:
    pred = read_predictions(write_predictions(tmp_path / "pred", STAMPS[:5], lambda t: truth_plan(),
                                              surprise=lambda t: float((t - T0_NS) // DT_NS)))
    assert sorted(pred.plans) == STAMPS[:5] and pred.waypoint_dt_s == pytest.approx(0.5)
    assert [pred.plans[t].surprise for t in STAMPS[:5]] == [0.0, 1.0, 2.0, 3.0, 4.0]
    np.testing.assert_allclose(pred.plans[STAMPS[0]].waypoints_xyyaw, truth_plan(), atol=1e-6)
    with pytest.raises(DataError, match="does not exist"):
        read_predictions(tmp_path / "absent")


def test_recorded_with_wall_clock_receive_times_latency_is_not_scored(tmp_path: Path) -> None:
    bag = write_arc(tmp_path / "arc")
    # `ros2 bag record` without --use-sim-time stamps arrivals with the wall clock, weeks after the drive
    pred = write_predictions(tmp_path / "pred", STAMPS[:20:2], lambda t: truth_plan(),
                             latency_ns=3 * 7 * 24 * 3600 * 10**9)
    ev, m = _evaluate(bag, pred)
    assert m["latency_p50_ms"] is None and m["l2_3s"] == pytest.approx(0.0, abs=1e-4)
    assert any("use-sim-time" in n for n in ev.notes)


def test_topics_of_another_robot_are_named_with_topics(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from pwm_model.config import TopicsConfig
    from pwm_model.data.bag_writer import write_drive

    from .drive_helpers import arc_drive

    cfg = config()
    topics = TopicsConfig(image="/zed/left/image_rect", odometry="/odometry/filtered")
    bag = write_drive(tmp_path / "robot", arc_drive(40, 64, 128), cfg.camera, topics)
    pred = write_predictions(tmp_path / "pred", STAMPS[:10], lambda t: truth_plan() + [0.0, 0.4, 0.0])
    args = ["eval-bag", str(bag), "--predictions", str(pred), "--quiet", "--no-video"]
    r = _pwm_here(capsys, *args, "--out", str(tmp_path / "a"))
    assert r.returncode == 2 and "has no camera topic /camera/front/image_raw" in r.stderr
    r = _pwm_here(capsys, *args, "--out", str(tmp_path / "b"), "--camera-topic", "/zed/left/image_rect",
                  "--topics", "odometry=/odometry/filtered")
    assert r.returncode == 0, r.stderr
    assert "deprecated" not in r.stderr
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["l2_3s"] == pytest.approx(0.4, abs=1e-4)
    # the old spelling still works, with a warning that names the new one
    r = _pwm_here(capsys, *args, "--out", str(tmp_path / "d"), "--topics", "image=/zed/left/image_rect",
                  "odometry=/odometry/filtered")
    assert r.returncode == 0, r.stderr
    assert "warning: --topics image=/zed/left/image_rect is deprecated" in r.stderr and "--camera-topic" in r.stderr
    assert json.loads((tmp_path / "d" / "metrics.json").read_text())["l2_3s"] == pytest.approx(0.4, abs=1e-4)
    r = _pwm_here(capsys, *args, "--out", str(tmp_path / "e"), "--camera-topic", "/zed/left/image_rect",
                  "--topics", "image=/zed/left/image_rect", "odometry=/odometry/filtered")
    assert r.returncode == 2 and "name the camera once" in r.stderr
    r = _pwm_here(capsys, *args, "--out", str(tmp_path / "c"), "--topics", "camera=/zed")
    assert r.returncode == 2 and "must look like KEY=TOPIC" in r.stderr
    r = _pwm_here(capsys, *args, "--out", str(tmp_path / "f"), "--camera-topic", "zed/left")
    assert r.returncode == 2 and "--camera-topic 'zed/left' must be an absolute topic name" in r.stderr


def test_camera_topic_is_named_as_the_node_names_it() -> None:
    """--camera-topic (pwm index, pwm eval-bag, export_onnx.py) reads like pwm_node's camera_topic: raw Image on the
    topic, CompressedImage on <topic>/compressed; a topic ending in /compressed is the compressed one."""
    from pwm_model.commands.eval_bag import topic_items
    from pwm_model.data.bag_format import camera_topics
    from pwm_model.errors import ConfigError

    both = {"image": "/zed/left/image_rect", "compressed_image": "/zed/left/image_rect/compressed"}
    assert camera_topics("/zed/left/image_rect") == both
    assert camera_topics("/zed/left/image_rect/compressed") == both == camera_topics("/zed/left/image_rect/")
    for bad in ("zed", "/", "/compressed", "/a b"):
        with pytest.raises(ConfigError, match="absolute topic name"):
            camera_topics(bad)
    assert topic_items("/zed/left/image_rect", ["odometry=/o"]) == [
        "odometry=/o", "image=/zed/left/image_rect", "compressed_image=/zed/left/image_rect/compressed"]
    assert topic_items(None, ["image=/x", "odometry=/o"]) == ["image=/x", "odometry=/o"]  # the old meaning kept


def test_overlays_use_the_bag_s_own_camera_intrinsics(tmp_path: Path) -> None:
    import dataclasses

    from pwm_model.data.bag_writer import write_drive
    from pwm_model.eval.bag_truth import bag_camera

    from .drive_helpers import arc_drive

    cfg = config()
    narrow = dataclasses.replace(cfg.camera, hfov_deg=60.0)  # the recorded camera differs from the model's config
    bag = write_drive(tmp_path / "narrow", arc_drive(5, 64, 128), narrow, cfg.data.topics)
    configured = PinholeCamera.from_config(cfg.camera)
    cam = bag_camera(DriveReader(bag), configured)
    assert cam.fx == pytest.approx(PinholeCamera.from_config(narrow).fx) and cam.fx > configured.fx * 1.5
    assert cam.base_from_camera is configured.base_from_camera  # the mounting stays the configured one


def test_plans_csv_has_one_row_per_plan_with_its_values(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import csv

    from pwm_model.eval.plan_table import COLUMNS

    bag = write_arc(tmp_path / "arc")
    stamps = STAMPS[::3]  # 24 plans over the 6.9 s drive: the late ones have no truth 3 s (or 1 s) ahead
    pred = write_predictions(tmp_path / "pred", stamps, lambda t: truth_plan() + np.array([0.0, 0.4, 0.0]),
                             surprise=lambda t: (t - T0_NS) / 1e10)
    out = tmp_path / "eval"
    r = _pwm_here(capsys, "eval-bag", str(bag), "--predictions", str(pred), "--out", str(out), "--quiet",
                  "--no-video")
    assert r.returncode == 0, r.stderr
    assert "verdict: L2 up to 3 s: PWM better than constant velocity" in r.stdout
    rows = list(csv.DictReader((out / "plans.csv").open()))
    assert tuple(rows[0]) == COLUMNS and len(rows) == len(stamps)
    assert json.loads((out / "metrics.json").read_text())["plans_csv"] == "plans.csv"
    assert 'href="plans.csv"' in (out / "report.html").read_text()
    for row, t_ns in zip(rows, stamps):
        t_s = (t_ns - T0_NS) / 1e9
        assert row["drive"] == "arc" and int(row["t_ns"]) == t_ns and float(row["t_s"]) == pytest.approx(t_s)
        for h in (1, 2, 3):
            if t_s + h <= 6.9 + 1e-6:  # the truth reaches h s ahead: the plan is 0.4 m off all along
                assert float(row[f"l2_{h}s_m"]) == pytest.approx(0.4, abs=1e-3), (t_s, h)
            else:
                assert row[f"l2_{h}s_m"] == "", (t_s, h)
        if row["l2_3s_m"]:
            assert float(row["cv_l2_3s_m"]) == pytest.approx(cv_l2_up_to(3.0), abs=1e-3)
        assert float(row["surprise"]) == pytest.approx((t_ns - T0_NS) / 1e10, abs=1e-5)
        assert float(row["speed_mps"]) == pytest.approx(5.0) and float(row["yaw_rate_radps"]) == pytest.approx(0.2)
        i = (t_ns - T0_NS) // DT_NS
        assert row["command"] == ("straight" if i < 25 else "left" if i < 40 else "right")
        scored = t_s + 0.5 <= 6.9 + 1e-6  # its first waypoint has ground truth
        want = "0" if scored else ""  # the lead car is never in the way of the arc's own path
        assert row["collision"] == want and row["cv_collision"] == want, t_s
        assert float(row["latency_ms"]) == pytest.approx(30.0) and row["warming_up"] == "0"
    assert rows[-1]["l2_1s_m"] == "" and rows[-1]["collision"] == ""  # the last plan has no future at all


def test_the_inputs_used_are_in_the_metrics_and_the_report(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from pwm_model.config import TopicsConfig
    from pwm_model.data.bag_writer import write_drive

    from .drive_helpers import arc_drive

    cfg = config()
    topics = TopicsConfig(image="/zed/left/image_rect", odometry="/odometry/filtered", command="/nav/cmd")
    bag = write_drive(tmp_path / "robot", arc_drive(40, 64, 128, skip=(20,)), cfg.camera, topics,
                      encoding="bgr8")  # frame 20 dropped: one gap of 0.2 s in the camera stamps
    pred = write_predictions(tmp_path / "pred", STAMPS[:10], lambda t: truth_plan())
    out = tmp_path / "eval"
    r = _pwm_here(capsys, "eval-bag", str(bag), "--predictions", str(pred), "--out", str(out), "--quiet",
                  "--no-video", "--topics", "image=/zed/left/image_rect", "odometry=/odometry/filtered",
                  "command=/nav/cmd")
    assert r.returncode == 0, r.stderr
    inputs = json.loads((out / "metrics.json").read_text())["bags"][0]["inputs"]
    assert inputs["camera_topic"] == "/zed/left/image_rect" and inputs["camera_type"] == "sensor_msgs/msg/Image"
    assert inputs["encoding"] == "bgr8" and (inputs["width_px"], inputs["height_px"]) == (128, 64)
    assert inputs["model_input_px"] is None and inputs["configured_rate_hz"] is None  # no --model: not known
    assert inputs["frames"] == 39 and inputs["camera_stamp_gaps"] == 1 and inputs["camera_period_max_ms"] == 200.0
    assert inputs["camera_period_p50_ms"] == 100.0
    assert inputs["camera_stamp_rate_hz"] == pytest.approx(38 / 3.9, abs=1e-4)  # 38 intervals over 3.9 s
    assert inputs["input_rate_hz"] == pytest.approx(38 / 3.9, abs=1e-4)
    assert inputs["odometry_topic"] == "/odometry/filtered" and inputs["odometry_messages"] == 39
    assert inputs["command_topic"] == "/nav/cmd" and inputs["command_messages"] > 0
    page = (out / "report.html").read_text()
    section = page[page.index("<h2>Inputs</h2>"):page.index("<h2>Details</h2>")]
    for text in ("/zed/left/image_rect", "sensor_msgs/msg/Image", "bgr8", "128 × 64 px", "/odometry/filtered",
                 "/nav/cmd", "1 gaps", "9.74 Hz"):
        assert text in section, text
    # with the model's config (here: evaluate_bag with it) its input size and rate are named beside the camera's
    from pwm_model.eval.bag_eval import EvalOptions, RecordedPlans, evaluate_bag
    from pwm_model.eval.drives import parse_topics

    ev = evaluate_bag(bag, RecordedPlans(read_predictions(pred)), cfg, PinholeCamera.from_config(cfg.camera),
                      topics=parse_topics(["image=/zed/left/image_rect", "odometry=/odometry/filtered",
                                           "command=/nav/cmd"], cfg.data.topics),
                      options=EvalOptions(video=False, progress=False))
    assert ev.inputs["model_input_px"] == [cfg.tokenizer.ctx_width_px, cfg.tokenizer.ctx_height_px]
    assert ev.inputs["configured_rate_hz"] == cfg.camera.frame_rate_hz == 10.0


def test_stream_rate_from_stamps() -> None:
    from pwm_model.eval.bag_inputs import stream_rate

    r = stream_rate([0, 100, 200, 400, 400, 500])  # ns: a gap, a repeated stamp
    assert r["gaps"] == 1 and r["backwards"] == 1 and r["period_p50_ms"] == pytest.approx(1e-4)
    assert r["rate_hz"] == pytest.approx(4 / 500e-9)
    assert math.isnan(stream_rate([5])["rate_hz"])


def test_the_node_s_diagnostics_over_the_run_are_summed_up_and_shown(tmp_path: Path) -> None:
    from pwm_model.eval.report import write_report

    values = {"frames_received": "12", "frames_planned": "10", "stale_frames": "0", "input_rate_hz": "9.9",
              "plan_rate_hz": "9.8", "last_fault": ""}
    statuses = [
        (STAMPS[2], 1, "warming up: history not yet full", dict(values, input_rate_hz="0", plan_rate_hz="0")),
        (STAMPS[10], 0, "planning at 9.8 Hz", values),
        (STAMPS[20], 1, "12 frames older than max_frame_age_ms skipped (slow inference, clock offset, or use_sim_time "
                        "mismatch); forecast surprise 0.61 above 0.5", dict(values, stale_frames="12")),
        (STAMPS[30], 1, "3 frames older than max_frame_age_ms skipped (slow inference, clock offset, or use_sim_time "
                        "mismatch)", dict(values, stale_frames="15", input_rate_hz="10.1")),
        (STAMPS[40], 2, "no good plan since: engine failed", dict(values, stale_frames="15", engine_errors="1",
                                                                   last_fault="engine failed", input_rate_hz="0")),
    ]
    bag = write_arc(tmp_path / "arc")
    pred = write_predictions(tmp_path / "pred", STAMPS[:30:3], lambda t: truth_plan(), diagnostics=statuses)
    ev, m = _evaluate(bag, pred)
    d = ev.extra["node_diagnostics"]
    assert d["messages"] == 5 and d["levels"] == {"OK": 1, "WARN": 3, "ERROR": 1, "STALE": 0}
    stale = "# frames older than max_frame_age_ms skipped (slow inference, clock offset, or use_sim_time mismatch)"
    assert d["problems"] == {stale: 2, "forecast surprise # above #": 1, "no good plan since: engine failed": 1,
                             "warming up: history not yet full": 1}
    assert d["final_level"] == "ERROR" and d["final_message"] == "no good plan since: engine failed"
    assert d["counters"]["stale_frames"] == 15 and d["counters"]["engine_errors"] == 1
    assert d["last_fault"] == "engine failed" and d["span_s"] == pytest.approx(3.8)
    assert d["input_rate_p50_hz"] == pytest.approx(9.9)  # the statuses without frames flowing are left out
    assert m["bags"][0]["node_diagnostics"]["levels"]["WARN"] == 3  # in metrics.json
    # the demo's page: the offline evaluation, the live run's metrics in the "live node" column
    offline, om = _evaluate(bag, write_predictions(tmp_path / "plain", STAMPS[:30:3], lambda t: truth_plan()))
    page = write_report(tmp_path / "r.html", [offline], om, title="demo", compare={"live node": m}).read_text()
    section = page[page.index("Node diagnostics over the run"):page.index("<h2>Details</h2>")]
    for text in ("5 statuses over 3.8 s", "OK 1 · WARN 3 · ERROR 1 · STALE 0", "final level", ">ERROR<",
                 "no good plan since: engine failed", f"<td>{stale}</td><td>2</td>", "<td>stale_frames</td><td>15</td>",
                 "Median input rate 9.90 Hz"):
        assert text in section, text
    plain = write_report(tmp_path / "p.html", [offline], om, title="no live run").read_text()
    assert "Node diagnostics over the run" not in plain


def test_the_node_counters_read_back_are_the_node_s() -> None:
    from pwm_model.eval.predictions import NODE_COUNTERS
    from pwm_ros.diagnostics import COUNTERS

    assert NODE_COUNTERS == COUNTERS


def test_progress_lines_carry_the_elapsed_time_and_an_eta(tmp_path: Path) -> None:
    """eval-bag's progress lines (every tenth of the bag's frames) say how long it has taken and how long it will
    still take, from the rate of the frames done so far."""
    import contextlib
    import io

    from pwm_model.eval.bag_eval import EvalOptions, progress_line

    assert progress_line("", "drive_seed0", "offline", 30, 300, 3, 12.0) == \
        "eval-bag drive_seed0 (offline): frame 30/300, 3 plans, 12 s, ETA 1m48s"
    assert progress_line("      ", "b", "live", 150, 600, 15, 1900.0).endswith("31m40s, ETA 1h35m")
    last = progress_line("", "b", "offline", 300, 300, 30, 59.6)
    assert last == "eval-bag b (offline): frame 300/300, 30 plans, 1m00s"  # done: no ETA
    assert "ETA" not in progress_line("", "b", "offline", 0, 300, 0, 0.0)
    # the lines of a real run
    bag = write_arc(tmp_path / "arc")
    pred = write_predictions(tmp_path / "pred", STAMPS[:20:2], lambda t: truth_plan())
    cfg = config()
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        evaluate_bag(bag, RecordedPlans(read_predictions(pred)), cfg, PinholeCamera.from_config(cfg.camera),
                     options=EvalOptions(video=False, progress=True))
    lines = err.getvalue().strip().splitlines()
    assert len(lines) >= 9 and all(line.startswith("eval-bag arc (live): frame ") for line in lines)
    assert all(", ETA " in line for line in lines[:-1])
    assert lines[-1].startswith(f"eval-bag arc (live): frame {FRAMES}/") and "ETA" not in lines[-1]
