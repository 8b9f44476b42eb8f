"""One camera frame, every path into the model: the clip store, the torch datasets, the bag evaluator and the
runtime all give the model the same input (``pwm_model.data.contract``), whatever the camera's size or shape; a
camera of another aspect ratio is centre-cropped to the model's, never squashed (the aspect rule)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pwm_model.config import apply_overrides, preset
from pwm_model.data.contract import (
    EGO_DIM,
    MAX_COMMAND_AGE_S,
    CommandAge,
    EgoInput,
    camera_on_image,
    command_ages_s,
    ego_vectors,
    fit_note,
    fit_rgb,
    resize_rgb,
)
from test.export_helpers import SMALL_OVERRIDES, model_dir

torch.set_num_threads(2)

# (cols, rows) against the tiny preset's ctx input 128 x 64 and dyn input 64 x 32
CAMERAS = {
    "larger, whole factor": (256, 128),
    "larger, fractional": (300, 150),
    "smaller on both axes": (96, 48),
    "wider but shorter": (200, 40),
    "narrower but taller": (100, 80),
    "square": (160, 160),
    "16:9": (192, 108),
}


def _drive(tmp: Path, cols: int, rows: int):
    """A 6 s synthetic drive rendered at cols x rows, written as a bag; returns (cfg, bag, {t_ns: frame})."""
    from pwm_model.data.bag_writer import write_drive
    from pwm_model.data.synthetic import simulate_drive

    cfg = apply_overrides(preset("tiny"), [*SMALL_OVERRIDES, f"camera.width_px={cols}", f"camera.height_px={rows}"])
    samples = list(simulate_drive(seed=3, seconds=6.0, camera=cfg.camera))
    bag = write_drive(tmp / "drive", samples, cfg.camera, cfg.data.topics)
    return cfg, bag, {int(s.t_ns): s.image_rgb for s in samples}


@pytest.mark.parametrize("camera", list(CAMERAS), ids=list(CAMERAS))
def test_every_path_gives_the_model_the_same_input(tmp_path, camera):
    from pwm_model.data.clip_builder import build_clip_store
    from pwm_model.data.clips import ClipStore
    from pwm_model.data.datasets import CtxFrames, DynPairs, FrameBank, to_tensor
    from pwm_model.eval.bag_eval import OfflinePlanner, evaluate_bag
    from pwm_model.eval.bag_types import EvalOptions
    from pwm_model.runtime.backends import RecordingEngine
    from pwm_model.runtime.runner import PolicyRunner

    cols, rows = CAMERAS[camera]
    cfg, bag, frames = _drive(tmp_path, cols, rows)
    tk = cfg.tokenizer
    want_ctx = {t: fit_rgb(f, tk.ctx_height_px, tk.ctx_width_px) for t, f in frames.items()}
    assert all(f.shape == (rows, cols, 3) for f in frames.values())

    # the clip store: camera frames at the ctx resolution
    build_clip_store([bag], tmp_path / "store", cfg, progress=False)
    store = ClipStore(tmp_path / "store")
    assert len(store) > 0
    checked = 0
    for i in range(len(store)):
        clip = store[i]
        for rgb, t in zip(clip.frames_rgb, clip.frame_t_ns):
            np.testing.assert_array_equal(np.asarray(rgb), want_ctx[int(t)])
            checked += 1
    assert checked >= 10

    # the torch datasets: ctx frames, and dyn targets made from them (camera -> ctx -> dyn, as the token cache)
    bank = FrameBank.from_store(tmp_path / "store", tk, cfg.model_dt_s)
    ctx_items = CtxFrames(bank)
    for i in range(len(bank)):
        want = want_ctx[int(bank.t_ns[i])]
        assert torch.equal(ctx_items[i], to_tensor(want))
    pairs = DynPairs(bank, tk)
    for i in range(len(pairs)):
        _, target, _ = pairs[i]
        cur = int(bank.t_ns[bank.pairs[i][1]])
        want_dyn = resize_rgb(want_ctx[cur], tk.dyn_height_px, tk.dyn_width_px)
        assert torch.equal(target, to_tensor(want_dyn))

    # the bag evaluator driving the runtime: what reaches the encoder graphs (model exported for the ctx size, so
    # the runner resizes on the CPU) is the ctx frame of some camera frame, exactly
    runner = PolicyRunner.from_model_dir(model_dir(camera=False), cfg.runtime)
    try:
        for t, f in list(frames.items())[:3]:
            np.testing.assert_array_equal(runner.prepare(f), want_ctx[t])
        runner.engines["ctx_encoder"] = recorder = RecordingEngine(runner.engines["ctx_encoder"], keep_outputs=False)
        evaluate_bag(bag, OfflinePlanner(runner, 5.0, forecast_every=0), runner.config, runner.camera,
                     out_dir=tmp_path / "eval", options=EvalOptions(forecast_every=0, video=False, progress=False))
    finally:
        runner.close()
    expected = {want.tobytes() for want in want_ctx.values()}
    assert len(recorder.calls) >= 10
    assert all(call[0]["image_rgb"].tobytes() in expected for call in recorder.calls)


@pytest.mark.parametrize("camera", list(CAMERAS), ids=list(CAMERAS))
def test_the_exported_resize_matches_the_contract_within_a_grey_level(camera):
    from pwm_model.export.graphs import ImageInput

    cols, rows = CAMERAS[camera]
    cfg = preset("tiny")
    tk = cfg.tokenizer
    rng = np.random.default_rng(cols * rows)
    frame = rng.integers(0, 256, (rows, cols, 3), dtype=np.uint8)
    ctx = fit_rgb(frame, tk.ctx_height_px, tk.ctx_width_px)
    dyn = resize_rgb(ctx, tk.dyn_height_px, tk.dyn_width_px)
    for stages, want in (([(tk.ctx_height_px, tk.ctx_width_px)], ctx),
                         ([(tk.ctx_height_px, tk.ctx_width_px), (tk.dyn_height_px, tk.dyn_width_px)], dyn)):
        with torch.no_grad():
            x = ImageInput((rows, cols), stages)(torch.from_numpy(frame))  # (1, 3, h, w) in [-1, 1]
        grey = ((x[0].permute(1, 2, 0) + 1.0) * 127.5).round().numpy()
        assert np.abs(grey - want.astype(np.float64)).max() <= 1.0


def test_a_16_9_camera_is_centre_cropped_to_the_model_s_aspect_never_squashed():
    rng = np.random.default_rng(16)
    frame = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)  # 16:9 for a 2:1 model input of 64 x 128
    got = fit_rgb(frame, 64, 128)
    np.testing.assert_array_equal(got, resize_rgb(frame[40:680], 64, 128))  # rows 40-679: the centre 1280 x 640
    assert not np.array_equal(got, resize_rgb(frame, 64, 128))  # not the squashed whole
    marked = frame.copy()
    marked[:40], marked[680:] = 255, 0  # what the crop drops never reaches the model
    np.testing.assert_array_equal(fit_rgb(marked, 64, 128), got)
    assert fit_note((720, 1280), (64, 128)) == (
        "camera images are 1280x720 px (1.78:1) but the model takes 2:1 (128x64 px): each is centre-cropped to "
        "1280x640 px (rows 40-679), then resized (never squashed)")
    # a wider camera (3:1) loses columns at both sides
    wide = rng.integers(0, 256, (100, 300, 3), dtype=np.uint8)
    np.testing.assert_array_equal(fit_rgb(wide, 64, 128), resize_rgb(wide[:, 50:250], 64, 128))
    assert "centre-cropped to 200x100 px (columns 50-249)" in fit_note((100, 300), (64, 128))
    # within 2 % of the model's aspect ratio: resized whole, nothing said
    near = rng.integers(0, 256, (64, 130, 3), dtype=np.uint8)
    np.testing.assert_array_equal(fit_rgb(near, 32, 64), resize_rgb(near, 32, 64))
    assert fit_note((64, 130), (32, 64)) is None and fit_note((128, 256), (64, 128)) is None


def test_the_synthetic_camera_sees_the_centre_crop_of_another_aspect_ratio():
    from pwm_model.geometry import PinholeCamera

    cam = PinholeCamera.from_config(preset("tiny").camera)  # 256 x 128, 2:1
    on_wide = camera_on_image(cam, 720, 1280)
    assert on_wide.fx == on_wide.fy == pytest.approx(cam.fx * 5.0)  # square pixels: 1280 / 256 both ways
    ground = np.array([[8.0, 1.0, 0.0], [20.0, -2.0, 0.0], [40.0, 0.5, 0.0]])
    uv_model, _ = cam.project(ground)
    uv_wide, _ = on_wide.project(ground)
    np.testing.assert_allclose((uv_wide - [0.0, 40.0] + 0.5) / 5.0 - 0.5, uv_model, atol=1e-9)  # rows 40-679
    same = camera_on_image(cam, 64, 128)  # the same aspect ratio: resampled
    assert same.fx == pytest.approx(cam.fx / 2) and same.cy == pytest.approx((cam.cy + 0.5) / 2 - 0.5)


def test_the_ego_vector_is_written_once():
    v = ego_vectors(np.array([3.0, 0.0]), np.array([-1.0, 0.5]), np.array([0, 2]))  # no yaw rate: 0; no age: the cap
    cap = MAX_COMMAND_AGE_S
    np.testing.assert_array_equal(v, [[3.0, -1.0, 1, 0, 0, 0, cap], [0.0, 0.5, 0, 0, 1, 0, cap]])
    assert v.shape[1] == EGO_DIM and v.dtype == np.float32
    np.testing.assert_array_equal(EgoInput(3.0, -1.0, 0).as_vector(), v[0])
    w = ego_vectors(np.array([3.0, 0.0]), np.array([-1.0, 0.5]), np.array([0, 2]), np.array([0.25, -0.5]),
                    np.array([1.5, 99.0]))
    np.testing.assert_array_equal(w, [[3.0, -1.0, 1, 0, 0, 0.25, 1.5], [0.0, 0.5, 0, 0, 1, -0.5, cap]])
    np.testing.assert_array_equal(EgoInput(0.0, 0.5, 2, -0.5, 99.0).as_vector(), w[1])
    nan_age = ego_vectors(np.zeros(2), np.zeros(2), np.ones(2), None, np.array([np.nan, -1.0]))
    np.testing.assert_array_equal(nan_age[:, 6], [cap, 0.0])  # unknown reads as the cap; a negative age as 0


def test_command_age_counts_from_the_change_the_same_way_in_clips_bags_node_and_loop():
    from pwm_model.data.bag_tracks import Commands

    cap, step = MAX_COMMAND_AGE_S, 200_000_000  # clips 0.2 s apart
    t = np.arange(12) * step
    t[9:] += 10 * step  # a gap: the run after it has no known start
    cmd = np.array([1, 1, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    drive = np.zeros(12, int)
    # the first run's start is unknown (the cap); the clip where the command changed is 0 and counts on from it
    np.testing.assert_allclose(command_ages_s(t, drive, cmd), [cap, cap, 0, .2, .4, 0, .2, .4, 0, cap, cap, cap],
                               atol=1e-6)
    two = command_ages_s(np.concatenate([t[:5], t[:5]]), np.repeat([0, 1], 5), np.concatenate([cmd[:5]] * 2))
    np.testing.assert_allclose(two, [cap, cap, 0, .2, .4] * 2, atol=1e-6)  # drives are counted apart
    long_run = command_ages_s(np.arange(40) * step, np.zeros(40, int), np.r_[1, np.zeros(39, int)])
    assert long_run[-1] == cap and long_run[11] == pytest.approx(2.0)  # capped

    bag = Commands(t_ns=np.array([0, 1_000_000_000, 3_000_000_000]), value=np.array([1, 0, 1]))
    assert bag.age_s(500_000_000) == cap  # no change seen yet
    assert bag.age_s(1_500_000_000) == pytest.approx(0.5) and bag.age_s(3_250_000_000) == pytest.approx(0.25)
    assert bag.age_s(60_000_000_000) == cap

    live = CommandAge()
    live.see(1)
    assert live.age_s(0) == cap  # the first value: how long it has stood is unknown
    live.see(1)
    live.see(0)  # a change without a stamp takes the next camera stamp
    assert live.age_s(2_000_000_000) == 0.0 and live.age_s(2_700_000_000) == pytest.approx(0.7)
    live.see(2, 3_000_000_000)
    assert live.age_s(3_100_000_000) == pytest.approx(0.1) and live.age_s(2_000_000_000) == 0.0
    live.reset()
    assert live.value is None and live.age_s(5_000_000_000) == cap
