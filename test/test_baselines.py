"""Kinematic baselines against closed forms, and the drive-clustered bootstrap on hand-made examples."""

from __future__ import annotations

import numpy as np
import pytest

from pwm_model.eval.baselines import constant_velocity, kinematic
from pwm_model.eval.intervals import cluster_bootstrap, paired_difference

K, DT = 8, 0.5


def test_ctrv_and_ctra_on_a_constant_turn_follow_the_arc():
    v, w = 8.0, 0.2
    wp = kinematic("ctra", np.array([v]), np.array([0.0]), np.array([w]), K, DT)[0]
    t = np.arange(1, K + 1) * DT
    arc = np.stack([v / w * np.sin(w * t), v / w * (1 - np.cos(w * t)), w * t], axis=1)
    np.testing.assert_allclose(wp, arc, atol=1e-3)
    np.testing.assert_allclose(kinematic("ctrv", np.array([v]), np.array([3.0]), np.array([w]), K, DT)[0], arc,
                               atol=1e-3)


def test_ctra_closed_form_while_accelerating_and_stopping_without_reversing():
    v, a, w = 5.0, 1.0, -0.3
    wp = kinematic("ctra", np.array([v]), np.array([a]), np.array([w]), K, DT)[0]
    t = np.arange(1, K + 1) * DT
    vt = v + a * t
    x = (vt * w * np.sin(w * t) + a * np.cos(w * t) - a) / w**2
    y = (-vt * w * np.cos(w * t) + a * np.sin(w * t) + v * w) / w**2
    np.testing.assert_allclose(wp[:, 0], x, atol=1e-3)
    np.testing.assert_allclose(wp[:, 1], y, atol=1e-3)
    braking = kinematic("ca", np.array([4.0]), np.array([-2.0]), np.array([0.5]), K, DT)[0]
    assert braking[-1, 0] == pytest.approx(4.0, abs=1e-3)  # v^2 / (2 |a|) = 4 m, then it stands still
    assert np.all(np.diff(braking[:, 0]) >= -1e-6) and np.all(braking[:, 1] == 0)
    turning_stop = kinematic("ctra", np.array([4.0]), np.array([-2.0]), np.array([0.5]), K, DT)[0]
    assert turning_stop[-1, 2] == pytest.approx(0.5 * 2.0, abs=0.02)  # turns only during the 2 s it moves
    assert turning_stop[-1, 2] == turning_stop[-3, 2] and np.allclose(turning_stop[-3:, :2], turning_stop[-1, :2])


def test_cv_matches_constant_velocity():
    speeds = np.array([0.0, 3.0, 12.5])
    np.testing.assert_allclose(kinematic("cv", speeds, np.ones(3), np.ones(3), K, DT),
                               constant_velocity(speeds, K, DT), atol=1e-4)
    with pytest.raises(ValueError, match="unknown kinematic model"):
        kinematic("bicycle", speeds, speeds, speeds, K, DT)


def test_the_bootstrap_resamples_drives_not_clips():
    # 10 drives of 50 clips each; within a drive every clip has the same value: 500 clips, 10 independent samples
    rng = np.random.default_rng(0)
    drive_values = rng.normal(0.0, 1.0, 10)
    values = np.repeat(drive_values, 50)
    clusters = np.repeat(np.arange(10), 50)
    mean, lo, hi = cluster_bootstrap(values, clusters, seed=1)
    assert mean == pytest.approx(drive_values.mean())
    naive_half_width = 1.96 * values.std() / np.sqrt(len(values))  # as if the 500 clips were independent
    drive_half_width = 1.96 * drive_values.std() / np.sqrt(10)
    assert (hi - lo) / 2 == pytest.approx(drive_half_width, rel=0.3)
    assert (hi - lo) / 2 > 3 * naive_half_width
    # one drive: nothing to resample; NaN clips are left out
    assert cluster_bootstrap(np.array([1.0, 2.0, np.nan]), np.zeros(3)) == (1.5, 1.5, 1.5)
    assert np.isnan(cluster_bootstrap(np.array([np.nan]), np.zeros(1))[0])


def test_a_paired_difference_is_clustered_by_drive():
    clusters = np.repeat(np.arange(20), 5)
    a = np.linspace(1.0, 2.0, 100)
    mean, lo, hi = paired_difference(a, a - 0.25, clusters)
    assert (mean, lo, hi) == pytest.approx((0.25, 0.25, 0.25))
    with pytest.raises(ValueError, match="same length"):
        cluster_bootstrap(np.zeros(3), np.zeros(4))
