"""Export: ONNX graphs with static shapes and named I/O, manifest.json, verification, parity with PyTorch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pwm_model.config import RuntimeConfig
from test.conftest import REPO_ROOT
from test.export_helpers import CAMERA_SIZE, checkpoint, model_dir

torch.set_num_threads(2)


def _cfg_model():
    from pwm_model.tokenizer.model import load_tokenizer
    from pwm_model.world_model.checkpoint import load_world_model

    cfg, tok = load_tokenizer(str(checkpoint()))
    wm, cfg = load_world_model(checkpoint(), cfg)
    return cfg, tok, wm


def test_export_writes_static_named_graphs_and_manifest():
    import onnx

    from pwm_model.runtime.manifest import load_manifest, required_graphs
    from pwm_model.runtime.onnx_check import check_model_dir

    d = model_dir()
    m = load_manifest(d)
    m.verify_files()
    data = json.loads((d / "manifest.json").read_text())
    assert data["opset"] >= 17 and data["verification"]["status"] == "passed"
    assert set(required_graphs("unrolled", 5)) | {"ctx_guide_decoder", "dyn_decoder", "ctx_decoder"} == set(m.graphs)
    cfg = m.config
    tk = cfg.tokenizer
    assert m.image_hw == (CAMERA_SIZE[1], CAMERA_SIZE[0]) and m.resize_in_graph
    assert data["timing"]["model_dt_s"] == pytest.approx(0.2) and data["timing"]["forecast_frames"] == 5
    assert data["source"]["tokenizer_sha256"] and data["source"]["world_model_sha256"]
    rollout = m.graphs["rollout"]
    assert [t.name for t in rollout.inputs] == ["ctx_tokens", "dyn_history", "ego"]
    assert rollout.output("forecast_tokens").shape == (1, 5, tk.dyn_tokens)
    assert rollout.output("waypoints").shape == (1, 8, 3) and rollout.output("waypoints").meaning
    enc = m.graphs["ctx_encoder"].input("image_rgb")
    assert enc.shape == (128, 256, 3) and enc.dtype == "uint8"
    for name, info in m.graphs.items():
        model = onnx.load(str(d / info.file))
        onnx.checker.check_model(model, full_check=True)
        assert model.opset_import[0].version >= 17
        for vi in list(model.graph.input) + list(model.graph.output):
            dims = vi.type.tensor_type.shape.dim
            assert all(x.HasField("dim_value") and x.dim_value > 0 for x in dims), (name, vi.name)
    assert all(r.ok for r in check_model_dir(d).values())
    # the LFQ index arithmetic is named for the FP32 fallback of reduced-precision TensorRT builds
    enc_model = onnx.load(str(d / "ctx_encoder.onnx"))
    assert any(n.name.startswith("fp32/") and n.op_type == "ReduceSum" for n in enc_model.graph.node)
    assert data["tensorrt"]["fp32_layers"] == ["fp32/*"]


def test_export_graphs_match_the_model_rollout_and_training_preprocessing():
    from pwm_model.data.contract import resize_rgb
    from pwm_model.data.datasets import to_tensor
    from pwm_model.export.graphs import build_graphs

    cfg, tok, wm = _cfg_model()
    tk = cfg.tokenizer
    g = build_graphs(tok, wm, cfg, (CAMERA_SIZE[1], CAMERA_SIZE[0]), "unrolled")
    gs = build_graphs(tok, wm, cfg, (CAMERA_SIZE[1], CAMERA_SIZE[0]), "stepwise", preview=False)
    rng = np.random.default_rng(1)
    ctx = torch.from_numpy(rng.integers(0, tk.codebook_size, (1, tk.ctx_tokens)))
    hist = torch.from_numpy(rng.integers(0, tk.codebook_size, (1, cfg.data.history_frames, tk.dyn_tokens)))
    ego = torch.tensor([[7.5, 0.4, 0.0, 0.0, 1.0, 0.08, 1.2]])
    with torch.no_grad():
        ref_f, ref_w, ref_logits = wm.rollout(ctx, hist, ego, return_logits=True)
        f, bit_logp, w = g["rollout"].module(ctx, hist, ego)
        nt, step_logp, kv = gs["wm_prefill"].module(ctx, hist, ego)
        frames, logps = [nt], [step_logp]
        for k in range(cfg.world_model.forecast_frames - 1):
            nt, step_logp, kv = gs["wm_step"].module(frames[-1], torch.tensor([k]), kv)
            frames.append(nt)
            logps.append(step_logp)
        sw = gs["wm_plan"].module(kv, ego)
    assert torch.equal(f, ref_f) and torch.equal(torch.stack(frames, 1), ref_f)
    # the surprise output: each code bit's marginal of the forecast distribution, the same from either graph form
    bits = tk.codebook_bits
    assert bit_logp.shape == (1, cfg.world_model.forecast_frames, tk.dyn_tokens, bits, 2)
    torch.testing.assert_close(torch.stack(logps, 1), bit_logp, atol=1e-4, rtol=1e-4)
    msb_one = torch.softmax(ref_logits, -1)[..., tk.codebook_size // 2:].sum(-1)  # codes >= 2**(bits-1): bit 0 set
    torch.testing.assert_close(bit_logp[..., 0, 1].exp(), msb_one.clamp_min(1e-6), atol=1e-5, rtol=1e-4)
    assert (w - ref_w).abs().max() < 1e-5 and (sw - ref_w).abs().max() < 1e-5
    # the encoder graphs resize and normalise like the training data (cv2 area resize, x / 127.5 - 1)
    from pwm_model.data.frames import camera_frames

    rgb = next(camera_frames(None, cfg, 1))[0]
    assert rgb.shape[1::-1] == CAMERA_SIZE
    with torch.no_grad():
        tokens = g["ctx_encoder"].module(torch.from_numpy(rgb))[0]
        ctx_img = resize_rgb(rgb, tk.ctx_height_px, tk.ctx_width_px)
        want, _ = tok.encode_ctx(to_tensor(ctx_img)[None])
        got_img = g["ctx_encoder"].module.prep(torch.from_numpy(rgb))
    assert torch.equal(tokens, want)
    assert torch.allclose(got_img[0], to_tensor(ctx_img), atol=1e-6)


def test_parity_onnxruntime_vs_pytorch_on_real_frames():
    """Acceptance: forecast tokens equal on >= 99.5 % of the slots, waypoints within 1e-3 m (fp32)."""
    from pwm_model.data.frames import camera_frames
    from pwm_model.eval.parity import compare_runners
    from pwm_model.runtime.runner import PolicyRunner

    d = model_dir()
    with PolicyRunner.from_model_dir(d, RuntimeConfig(backend="onnxruntime")) as ort, \
            PolicyRunner.from_model_dir(d, RuntimeConfig(backend="torch", intra_op_threads=2)) as ref:
        rep = compare_runners(ort, ref, camera_frames(None, ort.config, 12))
    assert rep.frames == 12 and rep.tokens == 12 * 5 * ort.config.tokenizer.dyn_tokens
    assert rep.token_agreement >= 0.995
    assert rep.waypoint_max_abs_m <= 1e-3


def test_stepwise_export_plans_like_the_unrolled_graph():
    from pwm_model.data.frames import camera_frames
    from pwm_model.eval.parity import compare_runners
    from pwm_model.runtime.manifest import load_manifest
    from pwm_model.runtime.runner import PolicyRunner

    d = model_dir("stepwise")
    m = load_manifest(d)
    assert {"wm_prefill", "wm_step", "wm_plan"} <= set(m.graphs) and "rollout" not in m.graphs
    kv = m.graphs["wm_step"].input("kv")
    prof = m.graphs["wm_step"].profiles["kv"]
    assert isinstance(kv.shape[4], str) and prof["min"][4] < prof["max"][4]
    with PolicyRunner.from_model_dir(d, RuntimeConfig()) as step, \
            PolicyRunner.from_model_dir(model_dir(), RuntimeConfig()) as unrolled:
        rep = compare_runners(step, unrolled, camera_frames(None, m.config, 8))
    assert rep.token_agreement == 1.0 and rep.waypoint_max_abs_m < 1e-5


def _run_export(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / "export" / "export_onnx.py"), *args],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)


def test_export_cli_errors_are_one_sentence_and_leave_nothing(tmp_path: Path, capsys: pytest.CaptureFixture):
    from pwm_model.export.onnx import main

    out = tmp_path / "model"
    r = _run_export("--checkpoint", str(tmp_path / "missing"), "--out", str(out))  # the script itself, run as users do
    assert r.returncode == 2 and "error: checkpoint directory" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()
    assert main(["--checkpoint", str(checkpoint()), "--out", str(out), "--camera-size", "big"]) == 2
    assert "--camera-size must look like 1920x1080" in capsys.readouterr().err
    # a checkpoint with a tokenizer only cannot be exported
    partial = tmp_path / "tok_only"
    partial.mkdir()
    for f in ("config.yaml", "tokenizer.safetensors"):
        (partial / f).write_bytes((checkpoint() / f).read_bytes())
    assert main(["--checkpoint", str(partial), "--out", str(out)]) == 2
    assert "world_model.safetensors" in capsys.readouterr().err and not out.exists()
    assert not list(tmp_path.glob(".model.*"))  # no temporary directory left behind


def test_export_camera_topic_and_its_deprecated_spelling(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                          monkeypatch: pytest.MonkeyPatch):
    """--camera-topic names the --frames bag's camera (as pwm index and pwm eval-bag do); --frames-topic, its old
    name, still works with a warning; both at once are refused."""
    from pwm_model.export import onnx

    got = []
    monkeypatch.setattr(onnx, "export_model", lambda *a, **k: got.append(k["camera_topic"]) or {})
    base = ["--checkpoint", str(tmp_path / "ckpt"), "--out", str(tmp_path / "m"), "--frames", str(tmp_path / "bag")]
    assert onnx.main([*base, "--camera-topic", "/cam_left/image_raw"]) == 0
    assert "deprecated" not in capsys.readouterr().err
    assert onnx.main([*base, "--frames-topic", "/cam_left/image_raw/compressed"]) == 0
    err = capsys.readouterr().err
    assert "warning: --frames-topic is deprecated: use --camera-topic" in err
    assert got == ["/cam_left/image_raw", "/cam_left/image_raw/compressed"]
    assert onnx.main([*base, "--frames-topic", "/a", "--camera-topic", "/a"]) == 2
    assert "error: name the camera once" in capsys.readouterr().err and len(got) == 2


def test_failed_export_keeps_the_previous_model_dir(tmp_path: Path):
    from pwm_model.errors import DataError
    from pwm_model.export.onnx import export_model

    out = tmp_path / "model"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    with pytest.raises(DataError, match="neither a rosbag2 drive nor a clip store"):
        export_model(checkpoint(), out, frames=str(tmp_path), verify_frames=2, preview=False, echo=lambda *a: None)
    assert (out / "manifest.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary directory left


def test_resize_in_the_graph_plans_like_one_cv2_resize_on_the_cpu():
    """--camera-size puts the camera -> ctx resize into the graphs; without it the runner resizes with cv2 on the CPU.
    For the tiny camera (twice the ctx size) both give the same tokens, so the same plans."""
    from pwm_model.data.frames import camera_frames
    from pwm_model.eval.parity import compare_runners
    from pwm_model.runtime.manifest import load_manifest
    from pwm_model.runtime.runner import PolicyRunner

    cpu = model_dir(camera=False)
    m = load_manifest(cpu)
    assert not m.resize_in_graph and m.image_hw == (m.config.tokenizer.ctx_height_px, m.config.tokenizer.ctx_width_px)
    with PolicyRunner.from_model_dir(cpu, RuntimeConfig()) as a, \
            PolicyRunner.from_model_dir(model_dir(), RuntimeConfig()) as b:
        rep = compare_runners(a, b, camera_frames(None, m.config, 6))
    assert rep.token_agreement == 1.0 and rep.waypoint_max_abs_m == 0.0


def test_verification_on_ones_own_bag_names_its_camera_topic(tmp_path: Path):
    """--frames BAG with the camera on another topic: refused in one sentence without --camera-topic, verified
    on the bag's own frames with it."""
    import dataclasses

    from pwm_model.config import preset
    from pwm_model.data.bag_writer import write_drive
    from pwm_model.data.synthetic import simulate_drive
    from pwm_model.errors import PwmError
    from pwm_model.export.onnx import export_model

    cfg = preset("tiny")
    topics = dataclasses.replace(cfg.data.topics, image="/cam_left/image_raw")
    bag = write_drive(tmp_path / "own", list(simulate_drive(seed=5, seconds=2.0, camera=cfg.camera)), cfg.camera,
                      topics)
    with pytest.raises(PwmError, match="camera topic"):
        export_model(checkpoint(), tmp_path / "m1", frames=str(bag), preview=False, verify_frames=4,
                     echo=lambda *a, **k: None)
    assert not (tmp_path / "m1").exists()
    manifest = export_model(checkpoint(), tmp_path / "m2", frames=str(bag), camera_topic="/cam_left/image_raw",
                            preview=False, verify_frames=4, echo=lambda *a, **k: None)
    assert manifest["verification"]["status"] == "passed" and manifest["verification"]["frames"] == 4
    assert str(bag) in manifest["verification"]["source"]
