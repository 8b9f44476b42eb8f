"""Engines: cache keys, sidecars, reuse / rebuild decisions, atomic writes, build_engine.py, check-onnx, check-parity.

TensorRT is not installable here: what surrounds it is tested (keys, files, decisions, the error sentences, the
operator support check, the ONNX Runtime builds); the TensorRT calls themselves run where TensorRT is installed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from pwm_model.errors import ModelError
from pwm_model.runtime.engine_key import EngineKey, decide, describe_difference, find_engine, write_engine
from test.conftest import BIN_DIR, REPO_ROOT
from test.export_helpers import copy_model_dir, model_dir

SHA_A, SHA_B = "a" * 64, "b" * 64


def _key(**over) -> EngineKey:
    fields = {"backend": "tensorrt", "graph": "rollout", "onnx_sha256": SHA_A, "precision": "fp16",
              "runtime_version": "10.3.0", "device": "Orin", "compute_capability": "8.7",
              "flags": {"workspace_mb": 2048, "fp32_layers": ["fp32/*"]}}
    fields.update(over)
    return EngineKey.make(**fields)


def test_engine_key_changes_with_precision_onnx_file_tensorrt_version_gpu_and_flags():
    base = _key()
    assert base.digest() == _key().digest() and len(base.digest()) == 16
    assert _key(flags={"fp32_layers": ["fp32/*"], "workspace_mb": 2048}).digest() == base.digest()  # order-free
    variants = {"precision": _key(precision="int8"), "onnx": _key(onnx_sha256=SHA_B),
                "tensorrt": _key(runtime_version="10.7.0"), "gpu": _key(device="Orin NX"),
                "cc": _key(compute_capability="8.6"), "flags": _key(flags={"workspace_mb": 1024}),
                "graph": _key(graph="ctx_encoder")}
    digests = {name: k.digest() for name, k in variants.items()}
    assert base.digest() not in digests.values() and len(set(digests.values())) == len(digests)
    assert base.file_name == f"rollout.fp16.{base.digest()}.plan"
    assert base.target() == "TensorRT 10.3.0 on Orin (sm_87)"
    assert describe_difference(base, variants["tensorrt"]) == "TensorRT version 10.3.0 -> 10.7.0"
    assert describe_difference(base, variants["precision"]) == "precision fp16 -> int8"
    assert describe_difference(base, variants["onnx"]).startswith("the ONNX file changed (sha256 aaaaaaaaaaaa")
    assert "workspace_mb 2048 -> 1024" in describe_difference(base, variants["flags"])


def test_engines_are_stored_with_sidecars_reused_and_rebuilt_with_a_reason(tmp_path: Path):
    key = _key()
    d = decide(tmp_path, key)
    assert d.action == "build" and "no cached engine" in d.reason
    path = write_engine(tmp_path, key, b"plan-bytes" * 100, {"build_s": 1.5})
    side = json.loads(path.with_name(path.name + ".json").read_text())
    assert side["key"]["runtime_version"] == "10.3.0" and side["bytes"] == 1000 and side["digest"] == key.digest()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, path.name + ".json"])  # no temp files
    d = decide(tmp_path, key)
    assert d.action == "reuse" and d.path == path
    assert decide(tmp_path, key, force=True).action == "build"
    for other, words in ((_key(runtime_version="10.7.0"), "TensorRT version 10.3.0 -> 10.7.0"),
                         (_key(onnx_sha256=SHA_B), "the ONNX file changed"),
                         (_key(flags={"workspace_mb": 512}), "builder flags")):
        d = decide(tmp_path, other)
        assert d.action == "build" and words in d.reason and d.path != path
    # a damaged engine file is rebuilt, never loaded
    path.write_bytes(b"x" * 1000)
    assert "does not match the sha256 in its sidecar" in decide(tmp_path, key).reason
    path.write_bytes(b"x" * 10)
    assert "truncated" in decide(tmp_path, key).reason


def test_engine_writes_are_atomic(tmp_path: Path):
    key = _key()
    with pytest.raises(TypeError):
        write_engine(tmp_path, key, "not bytes")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []  # nothing half-written, no temporary file
    path = write_engine(tmp_path, key, b"1" * 10)
    with pytest.raises(TypeError):
        write_engine(tmp_path, key, object())  # type: ignore[arg-type]
    assert not path.with_name(path.name + ".json").exists()  # the old sidecar went first: the engine is not trusted
    assert decide(tmp_path, key).action == "build"


def test_runtime_names_the_gpu_or_tensorrt_version_an_engine_was_built_for(tmp_path: Path):
    write_engine(tmp_path, _key(), b"p" * 8)
    assert find_engine(tmp_path, _key()).key == _key()
    assert find_engine(tmp_path, _key(flags={"workspace_mb": 64})).key == _key()  # flags do not matter at load
    with pytest.raises(ModelError, match=r"was built for TensorRT 10.3.0 on Orin \(sm_87\) \(fp16\) but this machine "
                                         r"needs TensorRT 10.7.0 on Orin \(sm_87\) \(fp16\).*rebuild with"):
        find_engine(tmp_path, _key(runtime_version="10.7.0"))
    with pytest.raises(ModelError, match=r"needs TensorRT 10.3.0 on NVIDIA GeForce RTX 4090 \(sm_89\).*device Orin "
                                         r"-> NVIDIA GeForce RTX 4090"):
        find_engine(tmp_path, _key(device="NVIDIA GeForce RTX 4090", compute_capability="8.9"))
    with pytest.raises(ModelError, match="no int8 tensorrt engine for graph ctx_encoder"):
        find_engine(tmp_path, _key(graph="ctx_encoder", precision="int8"))


def _build(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / "export" / "build_engine.py"), *args],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)


def test_build_engine_without_tensorrt_exits_2_naming_what_to_install(capsys: pytest.CaptureFixture):
    from pwm_model.export.engines import main

    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("TensorRT is installed here")
    r = _build("--model", str(model_dir()))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    line = r.stderr.strip()
    assert line.startswith("error: TensorRT is not installed: install TensorRT 10") and "\n" not in line
    assert not (model_dir() / "engines" / "tensorrt").exists()
    assert main(["--model", str(model_dir()), "--backend", "onnxruntime", "--precision", "fp16"]) == 2
    assert "fp16 is a TensorRT precision" in capsys.readouterr().err


def test_onnxruntime_builds_are_keyed_reused_and_used_by_the_runner(tmp_path: Path, capsys: pytest.CaptureFixture):
    from pwm_model.config import RuntimeConfig
    from pwm_model.data.frames import camera_frames
    from pwm_model.eval.parity import compare_runners
    from pwm_model.export.engines import main
    from pwm_model.runtime.runner import PolicyRunner

    d = copy_model_dir(tmp_path / "m")
    args = ["--model", str(d), "--backend", "onnxruntime", "--graphs", "ctx_encoder", "rollout"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "ctx_encoder: building: no cached engine" in out and "2 engine(s) ready" in out
    built = sorted(p.name for p in (d / "engines" / "onnxruntime").iterdir())
    assert len(built) == 4 and all(n.endswith((".onnx", ".onnx.json")) for n in built)
    assert main(args) == 0 and capsys.readouterr().out.count("reusing") == 2
    with PolicyRunner.from_model_dir(d, RuntimeConfig()) as opt, \
            PolicyRunner.from_model_dir(model_dir(), RuntimeConfig()) as plain:
        assert opt.engines["rollout"].path.parent.name == "onnxruntime"
        assert opt.engines["dyn_encoder"].path.parent == d
        rep = compare_runners(opt, plain, camera_frames(None, opt.config, 5))
    assert rep.token_agreement >= 0.995 and rep.waypoint_max_abs_m <= 1e-3
    assert main(["--model", str(d), "--backend", "onnxruntime", "--graphs", "nope"]) == 2
    assert "--graphs names 'nope'" in capsys.readouterr().err


def test_calibration_inputs_are_what_each_graph_sees():
    from pwm_model.export.calibration import collect_inputs
    from pwm_model.runtime.manifest import load_manifest

    m = load_manifest(model_dir())
    samples = collect_inputs(model_dir(), None, 6)
    assert set(samples) == set(m.graphs)
    assert len(samples["ctx_encoder"]) == len(samples["dyn_encoder"]) == len(samples["rollout"]) == 6
    assert len(samples["dyn_decoder"]) == m.config.world_model.forecast_frames
    for name, info in m.graphs.items():
        for spec in info.inputs:
            arr = samples[name][-1][spec.name]
            assert arr.shape == tuple(spec.shape) and arr.dtype == np.dtype(spec.dtype)


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def test_check_onnx_flags_what_tensorrt_cannot_parse(tmp_path: Path):
    from pwm_model.runtime.onnx_check import check_graph, support_matrix

    assert support_matrix()["tensorrt_version"].startswith("10.")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    ok = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "g", [x], [y]),
                           opset_imports=[helper.make_opsetid("", 17)])
    assert check_graph(_save(ok, tmp_path / "ok.onnx")).ok
    # an operator TensorRT's parser does not support, and a custom domain
    idx = helper.make_tensor_value_info("i", TensorProto.FLOAT, [4])
    bad = helper.make_model(helper.make_graph(
        [helper.make_node("Unique", ["x"], ["i"], name="uniq"),
         helper.make_node("Relu", ["x"], ["y"], name="custom", domain="com.example")], "g", [x], [y, idx]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    problems = check_graph(_save(bad, tmp_path / "bad.onnx")).problems
    assert any("operator Unique (uniq) is not supported" in p for p in problems)
    assert any("com.example::Relu" in p for p in problems)
    # a varying dimension, a double input, an old opset
    xd = helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["batch", 4])
    yd = helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["batch", 4])
    old = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [xd], [yd]),
                            opset_imports=[helper.make_opsetid("", 13)])
    problems = check_graph(_save(old, tmp_path / "old.onnx")).problems
    assert any("opset 13 is below 17" in p for p in problems)
    assert any("non-static dimension 0 (batch)" in p for p in problems)
    assert any("has type DOUBLE" in p for p in problems)
    declared = check_graph(tmp_path / "old.onnx", {"x": {"0": "batch"}, "y": {"0": "batch"}}).problems
    assert not any("non-static" in p for p in declared) and any("opset 13" in p for p in declared)
    # axes TensorRT needs as constants, taken from the graph
    axes = helper.make_tensor_value_info("axes", TensorProto.INT64, [1])
    r = helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, 1])
    red = helper.make_model(helper.make_graph([helper.make_node("ReduceSum", ["x", "axes"], ["r"], name="rs")],
                                              "g", [x, axes], [r]), opset_imports=[helper.make_opsetid("", 17)])
    assert any("ReduceSum (rs) takes input 1" in p for p in check_graph(_save(red, tmp_path / "r.onnx")).problems)
    (tmp_path / "junk.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(ModelError, match="is not a readable ONNX file"):
        check_graph(tmp_path / "junk.onnx")


def test_pwm_check_onnx_and_check_parity_commands():
    r = subprocess.run([str(BIN_DIR / "pwm"), "check-onnx", str(model_dir())], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "TensorRT 10." in r.stdout and "rollout" in r.stdout and "all 6 graph(s)" in r.stdout
    r = subprocess.run([str(BIN_DIR / "pwm"), "check-parity", str(model_dir()), "--backend", "onnxruntime",
                        "--reference", "onnxruntime", "--max-frames", "4"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["ok"] and res["frames"] == 4 and res["forecast_token_agreement"] >= 0.995
    r = subprocess.run([str(BIN_DIR / "pwm"), "check-onnx", "/nonexistent/model"], capture_output=True, text=True)
    assert r.returncode == 2 and "error: model directory /nonexistent/model does not exist" in r.stderr
