"""The forecast-reliance probes feed exactly the named future frames: a planner that reads them changes its plan,
one that cannot read them (plan-only) gives the same plan whatever it is fed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pwm_model.config import apply_overrides, preset
from pwm_model.eval.reliance import PROBES, probe_plans, reliance_table
from pwm_model.world_model.model import PolicyWorldModel
from test.export_helpers import SMALL_OVERRIDES
from test.model_utils import random_world_model

torch.set_num_threads(2)


def _model(forecast_frames: int) -> PolicyWorldModel:
    torch.manual_seed(0)
    cfg = apply_overrides(preset("tiny"), [*SMALL_OVERRIDES, f"world_model.forecast_frames={forecast_frames}"])
    return random_world_model(cfg).eval()


def _clips(model: PolicyWorldModel, n: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    c, h = model.codebook_size, model.history_frames
    ctx = rng.integers(0, c, (n, model.ctx_tokens))
    dyn = rng.integers(0, c, (n, h + 5, model.dyn_tokens))
    ego = np.tile(np.array([[8.0, 0.5, 0.0, 1.0, 0.0, 0.05, 5.0]], np.float32), (n, 1))
    return ctx, dyn, ego


def test_each_probe_feeds_its_own_frames(monkeypatch):
    model = _model(5)
    ctx, dyn, ego = _clips(model)
    fed: dict[str, list[np.ndarray]] = {}
    current: list[str] = []
    real_step = model.frame_step

    def spy(frames, index, kv, **kwargs):
        fed.setdefault(current[-1], []).append(frames.numpy().copy())
        return real_step(frames, index, kv, **kwargs)

    monkeypatch.setattr(model, "frame_step", spy)
    import pwm_model.eval.reliance as reliance

    real_future = reliance.probe_future

    def tracking(name, *args, **kwargs):
        current.append(name)
        return real_future(name, *args, **kwargs)

    monkeypatch.setattr(reliance, "probe_future", tracking)
    probe_plans(model, ctx, dyn, ego, batch_size=len(ctx))
    h = model.history_frames
    oracle = np.stack(fed["oracle"], axis=1)  # (N, F - 1, Ld)
    np.testing.assert_array_equal(oracle, dyn[:, h:h + 4])
    np.testing.assert_array_equal(np.stack(fed["copy_last"], axis=1), np.repeat(dyn[:, h - 1:h], 4, axis=1))
    rand = np.stack(fed["random"], axis=1)
    assert rand.shape == oracle.shape and not np.array_equal(rand, oracle)
    assert "none" not in fed  # no future frame at all


def test_a_planner_that_reads_the_future_changes_its_plan_and_one_that_cannot_does_not():
    reader = _model(5)
    ctx, dyn, ego = _clips(reader)
    plans = probe_plans(reader, ctx, dyn, ego)
    assert set(plans) == set(PROBES)
    for a in PROBES:
        for b in PROBES:
            if a < b:
                assert np.abs(plans[a] - plans[b]).max() > 1e-5, (a, b)
    blind = _model(0)  # plan-only: nothing of the future reaches its queries
    plans = probe_plans(blind, ctx, dyn, ego)
    for name in PROBES:
        np.testing.assert_array_equal(plans[name], plans["none"])
    own = blind.rollout(torch.from_numpy(ctx), torch.from_numpy(dyn[:, :blind.history_frames]),
                        torch.from_numpy(ego))[1].numpy()
    np.testing.assert_allclose(own, plans["none"], atol=1e-5)


def test_the_table_pairs_each_probe_with_the_own_plan():
    k = 8
    own = np.zeros((20, k, 3), np.float32)
    gt = np.zeros_like(own)
    labels = {"waypoints_xyyaw": gt, "waypoints_valid": np.ones((20, k), bool), "drive": np.repeat(np.arange(5), 4)}
    shifted = own.copy()
    shifted[..., 1] = 0.5  # every waypoint 0.5 m to the side
    table = reliance_table(own, {"oracle": own.copy(), "random": shifted}, labels, 0.5)
    assert table["own"] == (0.0, 0.0, 0.0)
    assert table["oracle"] == (0.0, 0.0, 0.0)
    assert table["random"] == pytest.approx((0.5, 0.5, 0.5))


def test_the_command_flip_swaps_left_and_right_and_scores_turn_clips_only():
    from pwm_model.eval.reliance import command_response, flip_command

    ego = np.array([[5.0, 0.1, 1, 0, 0, 0.1, 1.0], [5.0, 0.1, 0, 1, 0, 0.1, 5.0], [5.0, 0.1, 0, 0, 1, 0.1, 0.5]],
                   np.float32)
    np.testing.assert_array_equal(flip_command(ego)[:, 2:5], [[0, 0, 1], [0, 1, 0], [1, 0, 0]])
    np.testing.assert_array_equal(flip_command(ego)[:, 5:], ego[:, 5:])  # the yaw rate and the command age stay
    model = _model(5)
    ctx, dyn, ego6 = _clips(model)
    k = model.num_waypoints
    gt = np.zeros((6, k, 3), np.float32)
    labels = {"command": np.array([0, 1, 2, 1, 0, 1]), "waypoints_xyyaw": gt,
              "waypoints_valid": np.ones((6, k), bool)}
    own = model.rollout(torch.from_numpy(ctx), torch.from_numpy(dyn[:, :model.history_frames]),
                        torch.from_numpy(ego6))[1].numpy()
    out = command_response(model, ctx, dyn, ego6, own, labels, 0.5)
    assert out["command_clips"] == 3 and np.isfinite(out["command_flip_shift_3s_m"])
    assert out["command_flip_shift_3s_m"] >= 0 and np.isfinite(out["command_flip_lateral_3s_m"])
    labels["command"] = np.ones(6, np.int64)
    none = command_response(model, ctx, dyn, ego6, own, labels, 0.5)
    assert none["command_clips"] == 0 and np.isnan(none["command_flip_shift_3s_m"])
