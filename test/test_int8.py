"""INT8 by explicit quantization: Q/DQ graphs calibrated on real frames, deterministic, cached, run by the runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from test.export_helpers import copy_model_dir

CALIB = ["--backend", "onnxruntime", "--precision", "int8", "--calib", "synthetic:7", "--calib-frames", "6"]


def _build(d: Path, *extra: str) -> int:
    from pwm_model.export.engines import main

    return main(["--model", str(d), *CALIB, *extra])


def test_int8_graphs_are_recorded_checked_and_run_by_the_runtime(tmp_path: Path, capsys: pytest.CaptureFixture):
    from pwm_model.config import RuntimeConfig
    from pwm_model.data.frames import camera_frames
    from pwm_model.eval.parity import compare_runners
    from pwm_model.runtime.manifest import load_manifest
    from pwm_model.runtime.onnx_check import check_model_dir
    from pwm_model.runtime.runner import PolicyRunner

    d = copy_model_dir(tmp_path / "m")
    with pytest.raises(Exception, match="no INT8 graphs; build them with"):
        PolicyRunner.from_model_dir(d, RuntimeConfig(precision="int8"))
    assert _build(d, "--fp32-layers", "/transformer/blocks.0/mlp/*", "--graphs", "ctx_encoder", "dyn_encoder",
                  "rollout") == 0
    out = capsys.readouterr().out
    m = load_manifest(d)
    section = m.int8
    assert set(section["graphs"]) == {"ctx_encoder", "dyn_encoder", "rollout"}
    assert section["settings"]["method"] == "minmax"
    rollout = section["graphs"]["rollout"]
    assert rollout["quantized"] and all("/transformer/blocks.0/mlp/" in n for n in rollout["kept_float"])
    assert any("/transformer/blocks.0/mlp/" in n for n in rollout["kept_float"])
    assert "rollout: wrote engines/int8/rollout.int8." in out
    import onnx

    q = onnx.load(str(m.int8_path("rollout")))
    ops = {n.op_type for n in q.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    for n in q.graph.node:  # symmetric: every zero point is 0 (TensorRT's requirement), and INT8
        if n.op_type == "QuantizeLinear" and len(n.input) > 2:
            zp = next(i for i in q.graph.initializer if i.name == n.input[2])
            assert zp.data_type == onnx.TensorProto.INT8 and not onnx.numpy_helper.to_array(zp).any()
    reports = check_model_dir(d)  # TensorRT's parser takes the Q/DQ graphs (no INT32 bias dequantization)
    assert "rollout (int8)" in reports and all(r.ok for r in reports.values()), \
        [p for r in reports.values() for p in r.problems][:3]
    with PolicyRunner.from_model_dir(d, RuntimeConfig(precision="int8")) as i8, \
            PolicyRunner.from_model_dir(d, RuntimeConfig(precision="fp32")) as f32:
        assert i8.engines["rollout"].path.parent.name == "int8"
        assert f32.engines["rollout"].path.parent == d and i8.engines["dyn_decoder"].path.parent == d
        rep = compare_runners(i8, f32, camera_frames(None, i8.config, 8))
    assert 0.5 <= rep.token_agreement and rep.waypoint_max_abs_m < 1.0  # close to fp32, not bit-equal
    assert rep.token_agreement < 1.0 or rep.waypoint_max_abs_m > 1e-6  # and really quantized


def test_calibration_is_deterministic_and_a_corrupt_or_mismatched_file_is_rebuilt(
        tmp_path: Path, capsys: pytest.CaptureFixture):
    from pwm_model.export.engines import main
    from pwm_model.runtime.manifest import load_manifest

    a = copy_model_dir(tmp_path / "a")
    graphs = ["--graphs", "rollout"]
    assert _build(a, *graphs) == 0
    first = load_manifest(a).int8["graphs"]["rollout"]["sha256"]
    cal = next((a / "engines" / "int8").glob("rollout.calibration.minmax.*.json"))
    ranges = json.loads(cal.read_text())["ranges"]
    capsys.readouterr()
    assert _build(a, *graphs) == 0
    out = capsys.readouterr().out
    assert "calibration file rollout.calibration" in out and "reused" in out and "reusing rollout.int8." in out
    cal.write_text('{"format": "pwm-int8-calibration", "vers')  # cut off mid-write
    assert _build(a, *graphs) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("rollout: calibration file")]
    assert len(lines) == 1 and "is corrupt" in lines[0] and "calibrating again" in lines[0]
    # calibrated again from the same frames: the same ranges, the same scales, the same graph byte for byte
    assert json.loads(cal.read_text())["ranges"] == ranges
    assert load_manifest(a).int8["graphs"]["rollout"]["sha256"] == first
    assert main(["--model", str(a), *CALIB[:-3], "synthetic:8", "--calib-frames", "6", *graphs]) == 0
    out = capsys.readouterr().out
    assert "was made for another set of calibration frames" in out  # other frames: calibrated again, a different graph
    assert load_manifest(a).int8["graphs"]["rollout"]["sha256"] != first
    assert load_manifest(a).int8["calibration"]["source"] == "synthetic:8"
    with pytest.raises(SystemExit):
        main(["--model", str(a), *CALIB, "--calib-method", "nope"])


def test_sensitivity_measures_each_group_and_keeps_the_worst_in_float(tmp_path: Path, capsys: pytest.CaptureFixture):
    from pwm_model.export import quantize as q
    from pwm_model.runtime.manifest import load_manifest

    assert q.normalised_name("/transformer/blocks.3/mlp/mlp.2_5/MatMul") == "/transformer/blocks.3/mlp/mlp.2/MatMul"
    assert q.layer_group("/transformer/blocks.1/attn/qkv_2/MatMul") == "/transformer/blocks.1/attn/*"
    assert q.layer_group("/frame_head_3/MatMul") == "/frame_head/*"
    assert q.matches("/transformer/blocks.1/attn/qkv_2/MatMul", ["/transformer/blocks.1/*"])
    d = copy_model_dir(tmp_path / "m")
    assert _build(d, "--graphs", "ctx_encoder", "--int8-sensitivity") == 0
    out = capsys.readouterr().out
    table = load_manifest(d).int8["graphs"]["ctx_encoder"]["sensitivity"]
    assert len(table) >= 3 and len({r["group"] for r in table}) == len(table)
    scores = [r["score"] for r in table]
    assert scores == sorted(scores, reverse=True)  # worst first
    assert all(0.0 <= r["token_agreement"] <= 1.0 for r in table)
    assert "ctx_encoder with 0 group(s) in float" in out
    rec = load_manifest(d).int8["graphs"]["ctx_encoder"]
    if rec.get("float_graph"):  # no quantized form met the targets: the graph stays float, and the runtime uses it
        assert rec["best"]["score"] > 1.0 and "the whole graph stays in float" in out
        assert load_manifest(d).int8_path("ctx_encoder") is None
    else:
        kept = load_manifest(d).int8["settings"]["fp32_layers"]
        assert all(any(q.matches(n, [g]) for g in kept) for n in rec["kept_float"])


def test_damage_counts_tokens_pixels_and_waypoints():
    from pwm_model.export.quantize import damage

    ref = [{"tok": np.array([1, 2, 3, 4]), "waypoints": np.zeros((2, 3), np.float32),
            "img": np.full((2, 2), 100, np.uint8)}]
    got = [{"tok": np.array([1, 2, 0, 4]), "waypoints": np.full((2, 3), 0.1, np.float32),
            "img": np.array([[100, 108], [109, 90]], np.uint8)}]
    d = damage(ref, got)
    assert d["token_agreement"] == pytest.approx(5 / 8) and d["waypoint_max_m"] == pytest.approx(0.1)
    assert d["score"] == pytest.approx(max((3 / 8) / 0.02, 0.1 / 0.05))
