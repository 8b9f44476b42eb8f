"""PolicyRunner: ring buffer, history by stamp, forecast surprise, previews, errors; the runtime imports no torch."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pwm_model.config import RuntimeConfig
from pwm_model.errors import DataError, ModelError
from pwm_model.runtime.history import FrameEntry, FrameHistory
from pwm_model.runtime.surprise import SurpriseMonitor, bit_nll, bits_of, weighted_mismatch
from pwm_model.runtime.types import EgoInput
from test.conftest import REPO_ROOT
from test.export_helpers import copy_model_dir, model_dir

MS = 1_000_000


def _runner(d: Path | None = None, **rt):
    from pwm_model.runtime.runner import PolicyRunner

    return PolicyRunner.from_model_dir(d or model_dir(), RuntimeConfig(**rt))


def _frames(cfg, n):
    from pwm_model.data.frames import camera_frames

    return list(camera_frames(None, cfg, n))


def test_runtime_imports_no_torch():
    code = ("import sys, pwm_model.runtime.runner, pwm_model.runtime.backends, pwm_model.runtime.trt_engine, "
            "pwm_model.runtime.onnx_check, pwm_model.runtime.engine_key, pwm_model.eval.parity; "
            "print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert r.stdout.strip() == "False"


def test_each_frame_encoded_once_history_by_stamp_and_plan_fields():
    with _runner() as runner:
        cfg = runner.config
        runner.warm_up()
        assert runner.stats["frames"] == 0
        frames = _frames(cfg, 12)
        plans = [runner.step(rgb, t, ego) for rgb, t, ego in frames]
        assert runner.stats["ctx_encodes"] == runner.stats["dyn_encodes"] == runner.stats["rollouts"] == 12
    # tiny: model frames 0.2 s apart = every 2nd camera frame; H = 4 history frames; frame 0 guides itself, so the
    # history is complete (and properly guided) from the frame whose oldest history frame has a predecessor
    h, stride = cfg.data.history_frames, cfg.data.frame_stride
    first_full = h * stride
    assert [p.warming_up for p in plans] == [i < first_full for i in range(12)]
    p = plans[-1]
    tk = cfg.tokenizer
    assert p.t_ns == frames[-1][1]
    assert p.waypoints_xyyaw.shape == (8, 3) and p.waypoints_xyyaw.dtype == np.float32
    assert np.all(np.isfinite(p.waypoints_xyyaw))
    assert list(p.waypoint_t_ns - p.t_ns) == [k * 500 * MS for k in range(1, 9)]
    assert p.forecast_tokens.shape == (5, tk.dyn_tokens) and p.forecast_tokens.dtype == np.int64
    assert p.forecast_tokens.min() >= 0 and p.forecast_tokens.max() < tk.codebook_size
    assert p.ctx_tokens.shape == (tk.ctx_tokens,)
    assert set(p.timings_ms) == {"preprocess", "ctx_encoder", "dyn_encoder", "rollout", "novelty", "total"}
    assert p.timings_ms["total"] >= p.timings_ms["rollout"] > 0


def test_ring_buffer_plans_equal_reencoding_the_whole_history():
    """Tokens from the ring buffer (each frame encoded once, guided by its predecessor) = re-encoding every
    history frame against its own predecessor, as the tokenizer was trained."""
    with _runner() as runner:
        cfg = runner.config
        h, stride = cfg.data.history_frames, cfg.data.frame_stride
        frames = _frames(cfg, 12)
        for rgb, t, ego in frames:
            plan = runner.step(rgb, t, ego)
        e = runner.engines
        images = [runner.prepare(rgb) for rgb, _, _ in frames][-1 - h * stride::stride]
        ctx = [e["ctx_encoder"].run({"image_rgb": img}) for img in images]
        guides = [n for n in ctx[0] if n.startswith("guide_enc_")]
        dyn = [e["dyn_encoder"].run({"image_rgb": images[i + 1], **{n: ctx[i][n] for n in guides}})["dyn_tokens"]
               for i in range(h)]
        out = e["rollout"].run({"ctx_tokens": ctx[-1]["ctx_tokens"], "dyn_history": np.concatenate(dyn)[None],
                                "ego": frames[-1][2].as_vector()[None]})
        assert np.array_equal(out["forecast_tokens"][0], plan.forecast_tokens)
        assert np.array_equal(out["waypoints"][0], plan.waypoints_xyyaw)
        # guided by the wrong frame (the previous camera frame, 0.1 s earlier) the tokens differ
        wrong = e["dyn_encoder"].run({"image_rgb": images[-1], **{
            n: e["ctx_encoder"].run({"image_rgb": runner.prepare(frames[-2][0])})[n] for n in guides}})
        assert not np.array_equal(wrong["dyn_tokens"], dyn[-1])


def test_frame_history_selects_by_stamp_repeats_oldest_and_forgets():
    dt = 200 * MS
    hist = FrameHistory(dt, history_frames=3)

    def mk(t_ns: int, guided: bool = True) -> FrameEntry:
        return FrameEntry(t_ns, np.full(4, t_ns // MS), np.zeros(2, np.int64), {"g": np.ones(1)}, guided)

    for t in (0, 100, 200, 300, 400):
        hist.add(mk(t * MS, guided=t >= 200))
    picks, warming = hist.select(400 * MS)
    assert [p.t_ns // MS for p in picks] == [0, 200, 400] and warming  # frame 0 had no predecessor
    hist.add(mk(500 * MS))
    hist.add(mk(600 * MS))
    picks, warming = hist.select(600 * MS)
    assert [p.t_ns // MS for p in picks] == [200, 400, 600] and not warming
    assert hist.guide_for(700 * MS).t_ns == 500 * MS
    # frames older than the history (plus tolerance) are evicted; guide maps only kept while a later frame may need them
    assert min(e.t_ns for e in hist._entries) >= 0 and hist.nearest(0) is None
    assert hist.nearest(300 * MS).guide_enc is None and hist.nearest(500 * MS).guide_enc is not None
    # a dropped frame leaves a hole: the oldest frame found is repeated and the plan is warming up
    hist.add(mk(1000 * MS))
    hist.add(mk(1200 * MS))
    picks, warming = hist.select(1200 * MS)
    assert [p.t_ns // MS for p in picks] == [1000, 1000, 1200] and warming
    # stamps within a quarter model frame count as on time
    hist.add(mk(1440 * MS))
    picks, _ = hist.select(1440 * MS)
    assert [p.t_ns // MS for p in picks] == [1000, 1200, 1440]
    with pytest.raises(ValueError, match="stamps must increase"):
        hist.add(mk(1440 * MS))


def test_forecast_surprise_weighs_changed_tokens():
    prev = np.array([1, 2, 3, 4])
    actual = np.array([1, 2, 9, 9])  # two tokens changed since the previous model frame
    assert weighted_mismatch(actual, actual, prev, 1.0, 0.4) == 0.0
    static = weighted_mismatch(prev, actual, prev, 1.0, 0.4)  # "nothing moves": wrong exactly where it changed
    assert static == pytest.approx(2.0 / 2.8)
    wrong_static = weighted_mismatch(np.array([5, 2, 9, 9]), actual, prev, 1.0, 0.4)
    assert wrong_static == pytest.approx(0.4 / 2.8) and wrong_static < static
    mon = SurpriseMonitor(200 * MS, forecast_frames=2, tolerance_ns=20 * MS, changed_weight=1.0, unchanged_weight=0.4)
    assert math.isnan(mon.score(0, actual, prev))
    mon.record(0, np.stack([actual, prev]))  # plan at t=0 forecasts t=0.2 s and t=0.4 s
    mon.record(100 * MS, np.stack([prev, prev]))  # forecasts 0.3 s and 0.5 s
    assert mon.score(200 * MS, actual, prev) == 0.0  # the newest plan covering 0.2 s is the one made at 0
    assert mon.score(400 * MS, actual, prev) == pytest.approx(static)
    assert math.isnan(mon.score(250 * MS, actual, prev))  # no forecast for this moment


def test_bit_log_probs_are_the_code_distributions_bit_marginals_and_score_the_surprise():
    import torch

    from pwm_model.tokenizer.lfq import code_bit_log_probs

    bits = 4
    logits = torch.randn(3, 2 ** bits, generator=torch.Generator().manual_seed(0)) * 3
    p = torch.softmax(logits, -1).numpy()
    got = np.exp(code_bit_log_probs(logits, bits).numpy())  # (3, bits, 2)
    codes = np.arange(2 ** bits)
    code_bits = bits_of(codes, bits)  # (C, bits), the most significant first
    assert code_bits[5].tolist() == [0, 1, 0, 1]
    for b in range(bits):
        want_one = p[:, code_bits[:, b] == 1].sum(-1)
        np.testing.assert_allclose(got[:, b, 1], want_one, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[:, b, 0], 1 - want_one, rtol=1e-5, atol=1e-6)
    # surprise of observed codes: ~0 where the forecast was sure and right, bits * ln 2 where it was uniform, large
    # where it was sure and wrong
    sure = torch.full((2, 2 ** bits), -30.0)
    sure[:, 6] = 30.0
    logp_sure = code_bit_log_probs(sure, bits).numpy()
    assert bit_nll(logp_sure, np.array([6, 6])) == pytest.approx(0.0, abs=1e-5)
    assert bit_nll(logp_sure, np.array([6, 7])) == pytest.approx(0.5 * -math.log(1e-6), rel=1e-3)  # one bit off
    uniform = code_bit_log_probs(torch.zeros(2, 2 ** bits), bits).numpy()
    assert bit_nll(uniform, np.array([0, 15])) == pytest.approx(bits * math.log(2.0), rel=1e-5)
    mon = SurpriseMonitor(200 * MS, forecast_frames=2, tolerance_ns=20 * MS, changed_weight=1.0, unchanged_weight=0.4)
    mon.record(0, np.array([[6, 6], [6, 6]]), np.stack([logp_sure, uniform]))
    assert mon.score(200 * MS, np.array([6, 6]), None) == pytest.approx(0.0, abs=1e-5)
    assert mon.score(400 * MS, np.array([0, 15]), None) == pytest.approx(bits * math.log(2.0), rel=1e-5)


def test_runner_surprise_preview_reset_and_other_camera_sizes():
    with _runner() as runner:
        cfg = runner.config
        frames = _frames(cfg, 8)
        plans = [runner.step(rgb, t, ego) for rgb, t, ego in frames]
        assert math.isnan(plans[0].surprise) and math.isnan(plans[1].surprise)  # nothing forecast them
        assert all(0.0 <= p.surprise <= 13.82 * cfg.tokenizer.codebook_bits for p in plans[2:])  # nats per token
        assert all(math.isnan(p.novelty) for p in plans)  # exported without a novelty prior
        tiles = runner.preview(plans[-1])
        tk = cfg.tokenizer
        assert tiles.shape == (tk.dyn_height_px, 5 * tk.dyn_width_px, 3) and tiles.dtype == np.uint8
        assert runner.stats["previews"] == 1
        with pytest.raises(DataError, match="not newer than the previous frame"):
            runner.step(*frames[3])
        runner.reset()
        again = runner.step(*frames[3])
        assert again.warming_up and math.isnan(again.surprise)
        # a camera of another size is resized on the CPU (one cv2.resize) and still planned from
        big = np.ascontiguousarray(np.repeat(np.repeat(frames[4][0], 2, 0), 2, 1))
        p = runner.step(big, frames[4][1], frames[4][2])
        assert np.all(np.isfinite(p.waypoints_xyyaw))


def test_preview_matches_the_reference_backend_and_the_eval_decoding():
    import torch

    from pwm_model.tokenizer.forecast import decode_forecast
    from pwm_model.tokenizer.model import load_tokenizer
    from test.export_helpers import checkpoint

    with _runner() as ort, _runner(backend="torch", intra_op_threads=2) as ref:
        for rgb, t, ego in _frames(ort.config, 6):
            a, b = ort.step(rgb, t, ego), ref.step(rgb, t, ego)
        assert np.array_equal(a.forecast_tokens, b.forecast_tokens)
        ta, tb = ort.preview(a), ref.preview(b)
    _, tok = load_tokenizer(str(checkpoint()))
    frames = decode_forecast(tok, torch.from_numpy(np.asarray(a.ctx_tokens, np.int64))[None],
                             torch.from_numpy(np.asarray(a.forecast_tokens, np.int64))[None])[0]
    tc = np.concatenate(list(frames), axis=1)  # what `pwm eval` scores
    assert ta.shape == tb.shape == tc.shape
    # every forecast frame is decoded against frame t's ctx tokens: the same pixels within rounding
    for other in (tb, tc):
        assert (np.abs(ta.astype(int) - other.astype(int)) > 2).mean() < 0.01
    # each frame depends on its own tokens and frame t only (not on the frames decoded before it)
    last = decode_forecast(tok, torch.from_numpy(np.asarray(a.ctx_tokens, np.int64))[None],
                           torch.from_numpy(np.asarray(a.forecast_tokens, np.int64))[None, -1:])[0, 0]
    np.testing.assert_array_equal(last, frames[-1])


def test_bad_inputs_give_one_sentence():
    with _runner() as runner:
        rgb, t, ego = _frames(runner.config, 1)[0]
        with pytest.raises(DataError, match=r"an \(H, W, 3\) uint8 RGB array"):
            runner.step(rgb.astype(np.float32), t, ego)
        with pytest.raises(DataError, match=r"an \(H, W, 3\) uint8 RGB array"):
            runner.step(rgb[..., 0], t, ego)
        with pytest.raises(DataError, match="command must be 0"):
            runner.step(rgb, t, EgoInput(3.0, 0.0, 7))
        with pytest.raises(DataError, match="must be finite"):
            runner.step(rgb, t, EgoInput(float("nan"), 0.0, 1))
        with pytest.raises(DataError, match="yaw rate must be finite"):
            runner.step(rgb, t, EgoInput(3.0, 0.0, 1, float("inf")))
        assert runner.stats["frames"] == 0


def test_broken_model_directories_give_one_sentence(tmp_path: Path):
    from pwm_model.runtime.runner import PolicyRunner

    with pytest.raises(ModelError, match="is not a model directory: it has no manifest.json"):
        PolicyRunner.from_model_dir(tmp_path)
    d = copy_model_dir(tmp_path / "m")
    (d / "dyn_decoder.onnx").unlink()
    with pytest.raises(ModelError, match="dyn_decoder.onnx named in manifest.json is missing"):
        PolicyRunner.from_model_dir(d)
    shutil.rmtree(d)
    d = copy_model_dir(tmp_path / "m")
    data = bytearray((d / "rollout.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (d / "rollout.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match manifest.json .*changed or is corrupt"):
        PolicyRunner.from_model_dir(d)
    shutil.rmtree(d)
    # a manifest that does not match its graphs: another dtype, another shape
    d = copy_model_dir(tmp_path / "m")
    man = json.loads((d / "manifest.json").read_text())
    man["graphs"]["rollout"]["inputs"][2]["dtype"] = "float16"
    (d / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ModelError, match="input 'ego' is float32 in the graph and float16 in the manifest"):
        PolicyRunner.from_model_dir(d)
    man["graphs"]["rollout"]["inputs"][2]["dtype"] = "float32"
    man["graphs"]["rollout"]["outputs"][-1]["shape"] = [1, 9, 3]
    (d / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ModelError, match="does not match its config: rollout waypoints has shape"):
        PolicyRunner.from_model_dir(d)
    man["graphs"]["rollout"]["outputs"][-1]["shape"] = [1, 8, 3]
    man["graphs"]["rollout"]["inputs"][2]["shape"] = [1, 8]
    (d / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ModelError, match=r"rollout ego has shape \(1, 8\), not \(1, 7\)"):
        PolicyRunner.from_model_dir(d)
    (d / "manifest.json").write_text("{ not json")
    with pytest.raises(ModelError, match="manifest.json is corrupt"):
        PolicyRunner.from_model_dir(d)
    # graph files swapped under a manifest that agrees with their hashes: the graph's own signature disagrees
    shutil.rmtree(d)
    d = copy_model_dir(tmp_path / "m")
    man = json.loads((d / "manifest.json").read_text())
    man["graphs"]["ctx_guide_decoder"]["file"] = "dyn_encoder.onnx"
    man["graphs"]["ctx_guide_decoder"]["sha256"] = man["graphs"]["dyn_encoder"]["sha256"]
    (d / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ModelError, match="dyn_encoder.onnx does not match manifest.json"):
        PolicyRunner.from_model_dir(d)


def _narrow_ego(d: Path, width: int = 5) -> Path:
    """Turn model directory ``d`` into one exported before the yaw rate (``width`` 5) or the command age (6): its
    rollout takes a (1, width) ego, padded with zeros inside the graph (what an old checkpoint computes: it loads with
    a zero weight on the entries it predates)."""
    import onnx
    from onnx import helper, numpy_helper

    from pwm_model.io_utils import file_sha256

    path = d / "rollout.onnx"
    model = onnx.load(str(path))
    for node in model.graph.node:
        node.input[:] = ["ego_padded" if n == "ego" else n for n in node.input]
    next(i for i in model.graph.input if i.name == "ego").type.tensor_type.shape.dim[1].dim_value = width
    pads = np.array([0, 0, 0, 7 - width], np.int64)
    model.graph.initializer.append(numpy_helper.from_array(pads, "ego_pads"))
    model.graph.node.insert(0, helper.make_node("Pad", ["ego", "ego_pads"], ["ego_padded"]))
    onnx.save(model, str(path))
    man = json.loads((d / "manifest.json").read_text())
    man["graphs"]["rollout"]["inputs"][2]["shape"] = [1, width]
    man["graphs"]["rollout"]["sha256"] = file_sha256(path)
    (d / "manifest.json").write_text(json.dumps(man))
    shutil.rmtree(d / "engines", ignore_errors=True)
    return d


@pytest.mark.parametrize("width", [5, 6])
def test_a_model_exported_before_the_yaw_rate_or_the_command_age_takes_the_first_ego_entries(tmp_path: Path,
                                                                                             width: int):
    import dataclasses

    from pwm_model.data.contract import EGO_DIM
    from pwm_model.runtime.runner import ego_vector

    ego = EgoInput(4.0, 0.5, 0, 0.7, 1.2)
    assert ego_vector(ego).tolist() == pytest.approx([4.0, 0.5, 1.0, 0.0, 0.0, 0.7, 1.2]) and EGO_DIM == 7
    assert ego_vector(ego, width).tolist() == pytest.approx([4.0, 0.5, 1.0, 0.0, 0.0, 0.7][:width])
    with _runner() as new, _runner(_narrow_ego(copy_model_dir(tmp_path / "m"), width)) as old:
        assert new.manifest.ego_width == EGO_DIM and old.manifest.ego_width == width
        for rgb, t, e in _frames(new.config, 6):
            e = dataclasses.replace(e, yaw_rate_radps=0.7, command_age_s=1.2)
            got = old.step(rgb, t, e)  # the entries it predates are left out, not an error
            want = new.step(rgb, t, dataclasses.replace(e, yaw_rate_radps=0.7 if width == 6 else 0.0,
                                                       command_age_s=0.0))
            np.testing.assert_allclose(got.waypoints_xyyaw, want.waypoints_xyyaw, rtol=0, atol=1e-6)
            np.testing.assert_array_equal(got.forecast_tokens, want.forecast_tokens)


def test_tensorrt_backend_without_tensorrt_says_what_to_install():
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("TensorRT is installed here")
    with pytest.raises(ModelError, match="TensorRT is not installed: install TensorRT 10"):
        _runner(backend="tensorrt", device="cuda")


def test_warm_up_runs_at_the_exported_camera_size_and_keeps_the_resize_warning_for_real_frames(tmp_path: Path,
                                                                                               caplog):
    """A model exported for a 320x160 camera (the config's camera is 256x128) warms up without resizing; the first
    real frame of another size is what warns."""
    import logging

    from pwm_model.export.onnx import export_model
    from pwm_model.runtime.runner import PolicyRunner
    from test.export_helpers import checkpoint

    export_model(checkpoint(), tmp_path / "m320", camera_size=(320, 160), preview=False, verify_frames=2,
                 echo=lambda *a, **k: None)
    runner = PolicyRunner.from_model_dir(tmp_path / "m320", RuntimeConfig())
    try:
        assert runner.manifest.image_hw == (160, 320)
        with caplog.at_level(logging.WARNING, logger="pwm.runtime"):
            runner.warm_up()
            assert not [r for r in caplog.records if "resizing on the CPU" in r.getMessage()]
            runner.step(np.zeros((128, 256, 3), np.uint8), 1, EgoInput())
            runner.step(np.zeros((128, 256, 3), np.uint8), 2, EgoInput())
        warned = [r for r in caplog.records if "resizing on the CPU" in r.getMessage()]
        assert len(warned) == 1 and "256x128" in warned[0].getMessage()
    finally:
        runner.close()
