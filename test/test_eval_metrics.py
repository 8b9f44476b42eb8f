"""Planning and forecast metrics (numpy) and the baselines, against hand-computed numbers."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from pwm_model.data.contract import EGO_DIM
from pwm_model.eval import metrics as M
from pwm_model.eval.baselines import constant_velocity, copy_last_frame
from pwm_model.eval.ego_mlp import EgoMLP

DT = 0.5  # waypoint spacing: 1/2/3 s are waypoints 2/4/6
torch.set_num_threads(1)


def test_vehicle_side_eval_modules_import_no_torch() -> None:
    code = ("import sys, pwm_model.eval.metrics, pwm_model.eval.baselines, pwm_model.eval.bag_eval; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_l2_both_protocols_by_hand() -> None:
    gt = np.zeros((2, 8, 3))
    gt[:, :, 0] = np.arange(1, 9)
    pred = gt.copy()
    pred[0, :, 1] = np.arange(1, 9) * 0.1  # lateral error 0.1 m per waypoint index
    pred[1, :, 1] = 1.0  # constant 1 m error
    out = M.l2_metrics(pred, gt, None, DT)
    # at T (UniAD): clip 0 error k*0.1, clip 1 error 1.0 -> mean (0.1k + 1) / 2 at k = 2, 4, 6
    assert out["l2_uniad_1s"] == pytest.approx((0.2 + 1) / 2)
    assert out["l2_uniad_3s"] == pytest.approx((0.6 + 1) / 2)
    # mean up to T (VAD): clip 0 mean of 0.1..0.1k, clip 1 always 1.0
    assert out["l2_1s"] == pytest.approx((0.1 + 0.2 + 1 + 1) / 4)
    assert out["l2_2s"] == pytest.approx((0.1 + 0.2 + 0.3 + 0.4 + 4) / 8)
    assert out["l2_avg"] == pytest.approx((out["l2_1s"] + out["l2_2s"] + out["l2_3s"]) / 3)
    valid = np.ones((2, 8), bool)
    valid[1] = False  # only clip 0 counts
    out = M.l2_metrics(pred, gt, valid, DT)
    assert out["l2_uniad_2s"] == pytest.approx(0.4) and out["l2_1s"] == pytest.approx(0.15)
    short = M.l2_metrics(pred[:, :4], gt[:, :4], None, DT)  # 2 s of waypoints: 3 s is undefined
    assert math.isnan(short["l2_3s"]) and math.isnan(short["l2_uniad_3s"])


def _straight(speed: float, k: int = 8) -> np.ndarray:
    t = np.zeros((1, k, 3))
    t[0, :, 0] = speed * DT * np.arange(1, k + 1)
    return t


def test_collision_swept_box_by_hand() -> None:
    k = 8
    boxes = np.zeros((1, k, 1, 7))
    valid = np.zeros((1, k, 1), bool)
    # a parked car 12 m ahead, in the lane, present at every waypoint time
    boxes[0, :, 0] = [12.0, 0.0, 0.75, 4.5, 1.9, 1.5, 0.0]
    valid[0, :, 0] = True
    fast = _straight(4.0)  # reaches 12 m at 1.5 s (waypoint 3)
    hits = M.sweep_collisions(fast, boxes, valid)
    # ego box front = x + 1.4 + 2.042; the car's rear is at 9.75 m: first hit when x >= 6.31 m, i.e. waypoint 4 (8 m)
    assert hits[0].tolist() == [False, False, False, True, True, True, True, True]
    stop = _straight(0.5)  # 4 m after 4 s: front at 7.44 m, never reaches 9.75 m
    assert not M.sweep_collisions(stop, boxes, valid).any()
    # swept: a jump from 0 m straight to 30 m within one waypoint passes through the car
    jump = np.zeros((1, k, 3))
    jump[0, :, 0] = 30.0
    assert M.sweep_collisions(jump, boxes, valid)[0, 0]
    lateral = fast.copy()
    lateral[0, :, 1] = 3.5  # one lane to the left: clear
    assert not M.sweep_collisions(lateral, boxes, valid).any()
    out = M.collision_metrics(fast, stop, None, boxes, valid, DT)
    assert out["collision_rate"] == 1.0 and out["collision_gt_excluded"] == 0
    assert out["collision_uniad_1s_pct"] == 0.0 and out["collision_uniad_2s_pct"] == 100.0
    assert out["collision_2s_pct"] == pytest.approx(25.0)  # 1 of the 4 waypoints up to 2 s
    # where the ground truth itself overlaps a box, that waypoint is left out
    out = M.collision_metrics(fast, fast, None, boxes, valid, DT)
    assert out["collision_rate"] == 0.0 and out["collision_gt_excluded"] == 5
    two_col = M.collision_metrics(fast[..., :2], stop, None, boxes, valid, DT)  # yaw from the path
    assert two_col["collision_rate"] == 1.0
    assert M.collision_metrics_with_hits(fast, stop, None, boxes, valid, DT)[1].tolist() == [True]
    assert M.collision_metrics_with_hits(fast, fast, None, boxes, valid, DT)[1].tolist() == [False]


def test_collision_kinds_and_the_whole_plan_horizon() -> None:
    k = 8
    boxes = np.zeros((1, k, 1, 7))
    valid = np.zeros((1, k, 1), bool)
    boxes[0, :, 0] = [12.0, 0.0, 0.75, 4.5, 1.9, 1.5, 0.0]  # parked in the ego's lane, 12 m ahead
    valid[0, :, 0] = True
    fast = _straight(4.0)
    kinds = M.sweep_collision_kinds(fast, boxes, valid)[0]
    assert set(kinds[3:].tolist()) == {M.HIT_LONGITUDINAL} and not kinds[:3].any()
    out = M.collision_metrics(fast, _straight(0.5), None, boxes, valid, DT)
    assert out["collision_longitudinal_rate"] == 1.0 and out["collision_lateral_rate"] == 0.0
    # drifting left into a car driving beside the ego in the next lane: a lateral hit
    beside = np.zeros((1, k, 1, 7))
    beside[0, :, 0] = [0.0, 3.5, 0.75, 4.5, 1.9, 1.5, 0.0]
    beside[0, :, 0, 0] = 1.4 + np.arange(1, k + 1) * DT * 8.0  # keeps pace with the ego at 8 m/s
    drift = _straight(8.0)
    drift[0, :, 1] = np.linspace(0.4, 3.2, k)
    kinds = M.sweep_collision_kinds(drift, beside, valid)[0]
    assert kinds.any() and kinds[np.argmax(kinds != M.NO_HIT)] == M.HIT_LATERAL  # once in its lane: from behind
    out = M.collision_metrics(drift, _straight(8.0), None, beside, valid, DT)
    assert out["collision_lateral_rate"] == 1.0 and out["collision_longitudinal_rate"] == 0.0
    # a hit at the last waypoint only (4 s) counts over the whole plan, not up to 3 s
    late = np.zeros((1, k, 1, 7))
    late_valid = np.zeros((1, k, 1), bool)
    late[0, -1, 0] = [8.0 * k * DT + 1.4, 0.0, 0.75, 4.5, 1.9, 1.5, 0.0]  # where the ego's box is at 4 s
    late_valid[0, -1, 0] = True
    out = M.collision_metrics(_straight(8.0), _straight(0.5), None, late, late_valid, DT)
    assert out["collision_rate"] == 1.0 and out["collision_rate_3s"] == 0.0


def test_collision_rate_interval_and_paired_test_by_hand() -> None:
    lo, hi = M.wilson_interval(55, 1000)  # the Wilson score interval, worked out by hand: 4.25 % .. 7.09 %
    assert lo == pytest.approx(0.042497, abs=1e-5) and hi == pytest.approx(0.070908, abs=1e-5)
    assert M.wilson_interval(0, 10) == (0.0, pytest.approx(0.277533, abs=1e-5))
    assert all(math.isnan(v) for v in M.wilson_interval(0, 0))
    a = np.array([1, 0, 0, 0, 1, 1, 0, 0, 0, 0], bool)
    b = np.array([0, 1, 1, 1, 1, 0, 0, 0, 0, 0], bool)  # discordant: 2 clips only a, 3 only b
    pair = M.paired_collisions(a, b)
    assert (pair["only_a"], pair["only_b"]) == (2.0, 3.0)
    assert pair["p_value"] == pytest.approx(2 * (1 + 5 + 10) / 32)  # 2 * P(X <= 2), X ~ Binomial(5, 1/2)
    assert M.paired_collisions(a, a)["p_value"] == 1.0
    lopsided = M.paired_collisions(np.ones(30, bool), np.zeros(30, bool))
    assert lopsided["p_value"] == pytest.approx(2 / 2**30)
    big = M.paired_collisions(np.arange(4000) % 2 == 0, np.arange(4000) % 2 == 1)  # 4000 discordant: no overflow
    assert big["p_value"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shapes"):
        M.paired_collisions(a, b[:5])


def test_psnr_and_ssim() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (2, 16, 32, 3)).astype(np.uint8)
    b = a.astype(np.int16)
    b[0] += 10  # every pixel off by 10 -> MSE 100
    b = np.clip(b, 0, 255).astype(np.uint8)
    mse0 = ((a[0].astype(float) - b[0]) ** 2).mean()
    psnr = M.psnr_db(b, a)
    assert psnr[0] == pytest.approx(10 * math.log10(255**2 / mse0))
    assert psnr[1] == M.PSNR_CAP_DB  # identical
    s = M.ssim(b, a)
    assert s[1] == pytest.approx(1.0) and 0.0 < s[0] < 1.0
    noisy = np.clip(a.astype(int) + rng.normal(0, 40, a.shape), 0, 255).astype(np.uint8)
    assert M.ssim(noisy, a)[0] < s[0]
    assert M.per_horizon_mean(np.array([[1.0, np.nan], [3.0, 4.0]])) == [2.0, 4.0]


def test_baselines() -> None:
    cv = constant_velocity(np.array([0.0, 10.0]), 4, DT)
    assert cv.shape == (2, 4, 3) and cv[1, :, 0].tolist() == [5.0, 10.0, 15.0, 20.0] and not cv[:, :, 1:].any()
    frames = copy_last_frame(np.arange(6).reshape(2, 3), 4)
    assert frames.shape == (2, 4, 3) and (frames[:, 3] == np.arange(6).reshape(2, 3)).all()
    # the ego MLP learns x = v * t from the speed and y from the command
    rng = np.random.default_rng(0)
    n = 256
    speed = rng.uniform(0, 15, n)
    cmd = rng.integers(0, 3, n)
    ego = np.zeros((n, EGO_DIM), np.float32)
    ego[:, 0] = speed
    ego[np.arange(n), 2 + cmd] = 1
    wp = constant_velocity(speed, 4, DT)
    wp[:, :, 1] = (1 - cmd)[:, None] * np.arange(1, 5) * 0.5  # left +, right -
    mlp = EgoMLP.fit(ego, wp, np.ones((n, 4), bool), steps=600)
    err = np.abs(mlp.predict(ego) - wp).mean()
    assert err < 0.5, err
