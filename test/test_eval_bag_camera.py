"""`pwm eval-bag`'s overlay camera on real rosbag2 files: the bag's CameraInfo where it has one, else
--camera-intrinsics (with --camera-mount / --camera-pitch-down-deg), else the synthetic camera, said once on stderr;
bad values are one sentence and exit 2."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from pwm_model.data.bag import DriveReader
from pwm_model.data.bag_writer import write_drive
from pwm_model.eval.bag_eval import EvalOptions, RecordedPlans, evaluate_bag
from pwm_model.eval.overlay_camera import camera_options, mounted, overlay_camera
from pwm_model.eval.overlay_video import draw_overlay
from pwm_model.eval.predictions import read_predictions
from pwm_model.geometry import PinholeCamera

from .drive_helpers import T0_NS, arc_drive
from .eval_bag_helpers import config, truth_plan, write_predictions
from .test_eval_bag import _pwm_here

STAMPS = [T0_NS + i * 100_000_000 for i in range(40)]
SYNTHETIC_NOTE = "note: no camera_info in the bag and no --camera-intrinsics: overlays use the synthetic camera's " \
                 "intrinsics"
INTRINSICS = "90,92,60.5,30.5"  # px at the bags' 128 x 64 images


def _bag(tmp: Path, name: str, camera_info: bool, hfov_deg: float = 90.0) -> Path:
    cfg = config()
    cam = dataclasses.replace(cfg.camera, hfov_deg=hfov_deg)
    return write_drive(tmp / name, arc_drive(40, 64, 128), cam, cfg.data.topics, camera_info=camera_info)


def _run(capsys: pytest.CaptureFixture, tmp: Path, bag: Path, *extra: str):
    pred = tmp / f"pred_{bag.name}"
    if not pred.exists():
        write_predictions(pred, STAMPS[::4], lambda t: truth_plan() + [0.0, 0.4, 0.0])
    out = tmp / f"eval_{bag.name}_{len(extra)}"
    r = _pwm_here(capsys, "eval-bag", str(bag), "--predictions", str(pred), "--out", str(out), "--quiet",
                  "--no-video", *extra)
    return r, out


def _overlay(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())["bags"][0]["inputs"]["overlay_camera"]


def test_the_bag_s_camera_info_comes_first(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bag = _bag(tmp_path, "with_info", camera_info=True, hfov_deg=60.0)
    want = PinholeCamera.from_config(dataclasses.replace(config().camera, hfov_deg=60.0))
    r, out = _run(capsys, tmp_path, bag)
    assert r.returncode == 0, r.stderr
    cam = _overlay(out)
    assert cam["source"] == "camera_info" and cam["fx_px"] == pytest.approx(want.fx, abs=1e-3)
    assert "synthetic" not in r.stderr
    r, out = _run(capsys, tmp_path, bag, "--camera-intrinsics", INTRINSICS)  # given, but the bag has its own
    assert r.returncode == 0, r.stderr
    assert _overlay(out)["source"] == "camera_info"
    assert r.stderr.count("--camera-intrinsics is ignored") == 1


def test_without_camera_info_the_command_line_then_the_synthetic_camera(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    bag = _bag(tmp_path, "no_info", camera_info=False)
    assert not DriveReader(bag).summary.has_camera_info
    r, out = _run(capsys, tmp_path, bag)
    assert r.returncode == 0, r.stderr
    assert [ln for ln in r.stderr.splitlines() if not ln.startswith("wrote ")] == [SYNTHETIC_NOTE]  # said once
    cam = _overlay(out)
    # the stand-in tiny preset's 256 x 128 camera (hfov 90 degrees) on the 128 x 64 images: fx = 64 px
    assert cam["source"] == "synthetic" and cam["fx_px"] == pytest.approx(64.0) and cam["width_px"] == 128
    assert "the model&#x27;s synthetic camera (no camera_info in the bag" in (out / "report.html").read_text()
    r, out = _run(capsys, tmp_path, bag, "--camera-intrinsics", INTRINSICS, "--camera-mount", "1.2,0.1,1.3",
                  "--camera-pitch-down-deg", "6")
    assert r.returncode == 0, r.stderr
    assert "synthetic" not in r.stderr
    cam = _overlay(out)
    assert cam["source"] == "--camera-intrinsics"
    assert (cam["fx_px"], cam["fy_px"], cam["cx_px"], cam["cy_px"]) == (90.0, 92.0, 60.5, 30.5)
    assert cam["mount_xyz_m"] == [1.2, 0.1, 1.3]


def test_the_overlay_is_drawn_with_the_chosen_camera(tmp_path: Path) -> None:
    """The report's pictures are drawn through the command-line camera: the same pixels as drawing it by hand, and
    not those of the synthetic camera."""
    cfg = config()
    bag = _bag(tmp_path, "no_info", camera_info=False)
    pred = write_predictions(tmp_path / "pred", STAMPS[::4], lambda t: truth_plan() + [0.0, 0.4, 0.0])
    opts = camera_options(INTRINSICS, "1.2,0.1,1.3", 6.0)
    configured = mounted(cfg.camera, opts)
    ev = evaluate_bag(bag, RecordedPlans(read_predictions(pred)), cfg, configured,
                      options=EvalOptions(video=False, progress=False, camera_intrinsics_px=opts.intrinsics_px))
    chosen, source = overlay_camera(DriveReader(bag), configured, opts.intrinsics_px)
    assert source == "--camera-intrinsics" and (chosen.fx, chosen.cy) == (90.0, 30.5)
    assert chosen.base_from_camera.translation.tolist() == [1.2, 0.1, 1.3]
    frames = {t: rgb for _, t, rgb in DriveReader(bag).frames()}
    moment = ev.moments[0]
    i = moment.index
    plan_xy, truth_xy = ev.plans[i][:, :2], ev.truth[i][ev.truth_valid[i], :2]
    by_hand = draw_overlay(frames[moment.t_ns], chosen, plan_xy, truth_xy, caption_bar=False)
    np.testing.assert_array_equal(moment.thumb_rgb, by_hand)
    synthetic = draw_overlay(frames[moment.t_ns], PinholeCamera.from_config(cfg.camera), plan_xy, truth_xy,
                             caption_bar=False)
    assert not np.array_equal(moment.thumb_rgb, synthetic)


@pytest.mark.parametrize("args, words", [
    (("--camera-intrinsics", "0,90,60,30"), "focal length that is not positive"),
    (("--camera-intrinsics=-5,90,60,30",), "focal length that is not positive"),  # '=': a value starting with '-'
    (("--camera-intrinsics", "nan,90,60,30"), "not a finite number"),
    (("--camera-intrinsics", "90,90,60"), "must be 4 numbers FX,FY,CX,CY"),
    (("--camera-intrinsics", "90,90,900,30"), "principal point at (900, 30) px, outside the 128x64 px images"),
    (("--camera-mount", "1.5,0,-1"), "not above the ground"),
    (("--camera-pitch-down-deg", "80"), "within +-45"),
    (("--camera-pitch-down-deg", "nan"), "within +-45"),
])
def test_bad_camera_values_are_one_sentence_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                       args: tuple[str, ...], words: str) -> None:
    bag = _bag(tmp_path, "no_info", camera_info=False)
    r, out = _run(capsys, tmp_path, bag, *args)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], r.stderr
    assert not out.exists() or not any(out.iterdir())
