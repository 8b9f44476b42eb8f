"""One camera frame, every path into the model: the clip store, the torch datasets, the bag evaluator and the
runtime all give the model the same input (``pwm_model.data.contract``), whatever the camera's size or shape."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pwm_model.config import apply_overrides, preset
from pwm_model.data.contract import EGO_DIM, EgoInput, ego_vectors, resize_rgb
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
    want_ctx = {t: resize_rgb(f, tk.ctx_height_px, tk.ctx_width_px) for t, f in frames.items()}
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
    ctx = resize_rgb(frame, tk.ctx_height_px, tk.ctx_width_px)
    dyn = resize_rgb(ctx, tk.dyn_height_px, tk.dyn_width_px)
    for stages, want in (([(tk.ctx_height_px, tk.ctx_width_px)], ctx),
                         ([(tk.ctx_height_px, tk.ctx_width_px), (tk.dyn_height_px, tk.dyn_width_px)], dyn)):
        with torch.no_grad():
            x = ImageInput((rows, cols), stages)(torch.from_numpy(frame))  # (1, 3, h, w) in [-1, 1]
        grey = ((x[0].permute(1, 2, 0) + 1.0) * 127.5).round().numpy()
        assert np.abs(grey - want.astype(np.float64)).max() <= 1.0


def test_the_ego_vector_is_written_once():
    v = ego_vectors(np.array([3.0, 0.0]), np.array([-1.0, 0.5]), np.array([0, 2]))  # no yaw rate: 0
    np.testing.assert_array_equal(v, [[3.0, -1.0, 1, 0, 0, 0], [0.0, 0.5, 0, 0, 1, 0]])
    assert v.shape[1] == EGO_DIM and v.dtype == np.float32
    np.testing.assert_array_equal(EgoInput(3.0, -1.0, 0).as_vector(), v[0])
    w = ego_vectors(np.array([3.0, 0.0]), np.array([-1.0, 0.5]), np.array([0, 2]), np.array([0.25, -0.5]))
    np.testing.assert_array_equal(w, [[3.0, -1.0, 1, 0, 0, 0.25], [0.0, 0.5, 0, 0, 1, -0.5]])
    np.testing.assert_array_equal(EgoInput(0.0, 0.5, 2, -0.5).as_vector(), w[1])
