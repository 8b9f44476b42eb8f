"""`pwm demo`'s parts: the live run (pwm_node + pwm_replay as subprocesses over real DDS, plans recorded into a real
rosbag2 bag) scored beside the offline evaluation of the same drive, and the export staleness check.

The whole `make demo` (venv, sample drive, export of models/pwm-tiny) is timed from a fresh clone, not here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pwm_model.commands.demo import export_is_current, write_node_params

from .eval_bag_helpers import write_arc
from .model_utils import tiny_model_dir


def test_export_is_current_only_for_the_very_weights_it_recorded(tmp_path: Path) -> None:
    import hashlib

    ckpt, model = tmp_path / "ckpt", tmp_path / "model"
    ckpt.mkdir()
    model.mkdir()
    for name in ("tokenizer", "world_model"):
        (ckpt / f"{name}.safetensors").write_bytes(name.encode() * 1000)
    assert not export_is_current(ckpt, model)  # no manifest
    source = {f"{n}_sha256": hashlib.sha256((ckpt / f"{n}.safetensors").read_bytes()).hexdigest()
              for n in ("tokenizer", "world_model")}
    (model / "manifest.json").write_text(json.dumps({"source": source}))
    assert export_is_current(ckpt, model)
    (ckpt / "world_model.safetensors").write_bytes(b"retrained")
    assert not export_is_current(ckpt, model)
    (model / "manifest.json").write_text("{not json")
    assert not export_is_current(ckpt, model)


def test_node_params_file_is_ros2_yaml_for_pwm_node(tmp_path: Path) -> None:
    import yaml

    params = yaml.safe_load(write_node_params(tmp_path / "p.yaml", tmp_path / "model").read_text())
    values = params["pwm_node"]["ros__parameters"]
    assert values["model_dir"] == str((tmp_path / "model").resolve())
    assert values["use_sim_time"] is True and values["autostart"] is True and values["backend"] == "onnxruntime"


def test_bad_arguments_exit_2_with_one_sentence(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "pwm_model.cli", "demo", "--rate", "0", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == "error: --rate must be positive, got 0.0"


def test_live_run_records_the_node_and_scores_beside_offline(tmp_path: Path) -> None:
    pytest.importorskip("rclpy", reason="rclpy is not installed (pip install -e .[ros])")
    from pwm_model.commands.demo import live_run
    from pwm_model.eval.drives import evaluate_drives
    from pwm_model.eval.predictions import read_predictions

    model = tiny_model_dir()
    bag = write_arc(tmp_path / "arc", 40)
    predictions = live_run(bag, model, tmp_path / "demo", rate=1.0, node_timeout_s=120.0)
    pred = read_predictions(predictions)
    stamps = {1_700_000_000_000_000_000 + i * 100_000_000 for i in range(40)}
    assert pred.topic == "/pwm_node/trajectory" and len(pred.plans) >= 5 and set(pred.plans) <= stamps
    assert pred.diagnostics.get("frames_planned") and int(pred.diagnostics["frames_received"]) > 0
    run = pred.diagnostics_run  # every status the node published over the run, as recorded
    assert run["messages"] >= 2 and sum(run["levels"].values()) == run["messages"]
    assert run["final_level"] in run["levels"] and run["levels"][run["final_level"]] > 0
    assert run["counters"]["frames_received"] == int(pred.diagnostics["frames_received"]) > 0
    assert run["input_rate_p50_hz"] and run["input_rate_p50_hz"] > 0
    _, live = evaluate_drives([str(bag)], model=str(model), out=tmp_path / "live", predictions=[str(predictions)],
                              video=False, progress=False)
    _, offline = evaluate_drives([str(bag)], model=str(model), out=tmp_path / "offline", video=False,
                                 forecast_every=0, progress=False)
    assert live["plans"] == len(pred.plans) and offline["plans"] == 40
    assert live["latency_kind"] == "end-to-end" and live["latency_p50_ms"] > 0
    assert live["l2_3s"] is not None and offline["l2_3s"] is not None
    assert live["bags"][0]["node_diagnostics"] == run
    from pwm_model.commands.demo import diagnostics_line

    assert diagnostics_line(run).startswith(f"node diagnostics: {run['messages']} statuses (OK ")
    logs = tmp_path / "demo" / "logs"
    assert (logs / "pwm_node.log").stat().st_size > 0 and "recorded" in (logs / "pwm_replay.log").read_text()


def test_live_run_stops_early_with_the_node_s_reason_when_the_model_cannot_load(tmp_path: Path) -> None:
    pytest.importorskip("rclpy", reason="rclpy is not installed (pip install -e .[ros])")
    import shutil
    import time

    from pwm_model.commands.demo import live_run
    from pwm_model.errors import PwmError

    broken = tmp_path / "broken_model"
    shutil.copytree(tiny_model_dir(), broken)
    graph = next(broken.glob("*.onnx"))
    graph.write_bytes(graph.read_bytes() + b"tampered")  # its sha256 no longer matches manifest.json
    bag = write_arc(tmp_path / "arc", 20)
    t0 = time.monotonic()
    with pytest.raises(PwmError, match="pwm_node could not load .*does not match manifest.json"):
        live_run(bag, broken, tmp_path / "demo", rate=1.0, node_timeout_s=120.0)
    assert time.monotonic() - t0 < 60.0, "the demo waited for a node that had already failed"


def test_diagnostics_line_says_the_levels_the_final_status_and_the_most_named_problems() -> None:
    from pwm_model.commands.demo import diagnostics_line

    run = {"messages": 7, "levels": {"OK": 4, "WARN": 2, "ERROR": 1, "STALE": 0}, "final_level": "WARN",
           "final_message": "no camera frame on /camera/front/image_raw for 1.2 s: check the topic name",
           "problems": {"warming up: history not yet full": 2, "no good plan since: x": 1}}
    line = diagnostics_line(run)
    assert line.startswith("node diagnostics: 7 statuses (OK 4, WARN 2, ERROR 1, STALE 0), final level WARN: no "
                           "camera frame") and "warming up: history not yet full (2)" in line
    assert "none recorded" in diagnostics_line({})
