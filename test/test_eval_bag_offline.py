"""Offline bag evaluation with a real model directory (tiny preset, random weights, ONNX Runtime on the CPU).

The runner plans at the configured rate on bag time, its forecasts are decoded and scored against the frames that
really came, and the same plans written into a predictions bag (as the live node's recording) score the same.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pwm_model.data.bag import DriveReader
from pwm_model.eval.bag_eval import EvalOptions, OfflinePlanner, RecordedPlans, evaluate_bag
from pwm_model.eval.bag_summary import summarize
from pwm_model.eval.predictions import read_predictions

from .eval_bag_helpers import write_arc, write_predictions
from .model_utils import tiny_model_dir

FRAMES = 36  # 3.6 s at 10 Hz
REQUIRED = ("l2_3s", "cv_l2_3s", "collision_rate", "psnr_forecast_1s_db", "latency_p50_ms", "plans")


@pytest.fixture(scope="module")
def runner():  # noqa: ANN201 - a PolicyRunner
    from pwm_model.runtime.runner import PolicyRunner

    model = tiny_model_dir()
    r = PolicyRunner.from_model_dir(model, _one_thread(model))
    r.warm_up(1)
    yield r
    r.close()


def _one_thread(model: Path):  # noqa: ANN202 - the exported RuntimeConfig, ONNX Runtime on one thread
    import dataclasses

    from pwm_model.eval.drives import model_config

    return dataclasses.replace(model_config(model).runtime, intra_op_threads=1)


@pytest.fixture(scope="module")
def arc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_arc(tmp_path_factory.mktemp("arc") / "arc", FRAMES)


def test_forecast_frames_are_the_preview_tiles(runner, arc: Path) -> None:  # noqa: ANN001
    from pwm_model.runtime.types import EgoInput

    runner.reset()
    _, t_ns, rgb = next(iter(DriveReader(arc).frames()))
    plan = runner.step(rgb, t_ns, EgoInput(5.0, 0.0, 1))
    frames = runner.forecast_frames(plan)
    tk, f = runner.config.tokenizer, runner.config.world_model.forecast_frames
    assert frames.shape == (f, tk.dyn_height_px, tk.dyn_width_px, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(np.concatenate(list(frames), axis=1), runner.preview(plan))


@pytest.mark.parametrize("rate_hz, expect_plans", [(10.0, FRAMES), (5.0, FRAMES // 2)])
def test_offline_plans_at_the_planning_rate_on_bag_time(runner, arc: Path, rate_hz: float,  # noqa: ANN001
                                                        expect_plans: int) -> None:
    cfg = runner.config
    ev = evaluate_bag(arc, OfflinePlanner(runner, rate_hz, forecast_every=4), cfg, runner.camera,
                      options=EvalOptions(video=False, progress=False))
    m = summarize([ev])
    assert m["plans"] == expect_plans and m["latency_kind"] == "runner" and m["latency_p50_ms"] > 0
    steps = np.diff(ev.plan_t_ns)
    assert np.all(steps == round(1e9 / rate_hz))
    # every 4th plan decoded (the last ones are scored on the horizons the drive still covers)
    assert len(ev.forecast_t_ns) == -(-expect_plans // 4)
    f = cfg.world_model.forecast_frames
    assert ev.forecast_psnr.shape == (len(ev.forecast_t_ns), f)
    assert np.isfinite(ev.forecast_psnr[0]).all() and 0 < m["psnr_forecast_1s_db"] < 100
    assert m["copy_last_psnr_1s_db"] is not None and m["l2_3s"] is not None and m["cv_l2_3s"] is not None


def test_recorded_copies_of_the_offline_plans_score_the_same(runner, arc: Path, tmp_path: Path) -> None:  # noqa: ANN001
    cfg = runner.config
    offline = evaluate_bag(arc, OfflinePlanner(runner, 10.0, forecast_every=0), cfg, runner.camera,
                           options=EvalOptions(video=False, progress=False))
    plans = dict(zip(offline.plan_t_ns.tolist(), offline.plans))
    pred = write_predictions(tmp_path / "pred", list(plans), lambda t: plans[t], dt_s=cfg.data.waypoint_dt_s)
    live = evaluate_bag(arc, RecordedPlans(read_predictions(pred)), cfg, runner.camera,
                        options=EvalOptions(video=False, progress=False))
    a, b = summarize([offline]), summarize([live])
    for key in ("l2_1s", "l2_2s", "l2_3s", "l2_uniad_3s", "cv_l2_3s", "collision_rate"):
        assert b[key] == pytest.approx(a[key], abs=1e-3), key


def test_cli_offline_writes_every_required_metric(arc: Path, tmp_path: Path) -> None:
    model = tiny_model_dir()
    out = tmp_path / "eval"
    r = subprocess.run([sys.executable, "-m", "pwm_model.cli", "eval-bag", str(arc), "--model", str(model), "--out",
                        str(out), "--planning-rate-hz", "5", "--quiet"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert all(m.get(k) is not None for k in REQUIRED), {k: m.get(k) for k in REQUIRED}
    assert m["plans"] == FRAMES // 2 and m["backend"] == "onnxruntime" and m["planning_rate_hz"] == 5.0
    assert (out / "report.html").stat().st_size > 10_000 and (out / "overlay.mp4").is_file()
    # one CSV row per plan, at the planning rate; the inputs with the model's own input size and rate
    import csv

    rows = list(csv.DictReader((out / "plans.csv").open()))
    assert len(rows) == FRAMES // 2 and [round(float(r["t_s"]), 3) for r in rows[:3]] == [0.0, 0.2, 0.4]
    assert all(r["speed_mps"] and r["yaw_rate_radps"] and r["command"] for r in rows)
    from pwm_model.eval.drives import model_config

    tk = model_config(model).tokenizer
    inputs = m["bags"][0]["inputs"]
    assert inputs["model_input_px"] == [tk.ctx_width_px, tk.ctx_height_px] and inputs["frames"] == FRAMES
    assert inputs["camera_stamp_rate_hz"] == pytest.approx(10.0) and inputs["camera_topic"].endswith("image_raw")
    assert "verdict: L2 up to 3 s: PWM " in r.stdout and "collision rate: " in r.stdout
    last = json.loads(r.stdout.strip().splitlines()[-1])  # the last line: one JSON object of the headline numbers
    assert last["l2_3s"] == pytest.approx(m["l2_3s"]) and last["plans"] == m["plans"]
    assert "surprise_warn_frac" in last and last["surprise_warn_frac"] == m["surprise_warn_frac"]


def test_sigterm_during_eval_bag_leaves_no_partial_files(tmp_path: Path) -> None:
    import signal
    import time

    long_drive = write_arc(tmp_path / "long", 300)  # 30 s: the overlay video is being written when the signal comes
    out = tmp_path / "eval"
    proc = subprocess.Popen([sys.executable, "-m", "pwm_model.cli", "eval-bag", str(long_drive), "--model",
                             str(tiny_model_dir()), "--out", str(out), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list(out.glob(".*partial*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "eval-bag finished before the test could signal it"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "terminated" in err, err[-2000:]
    assert not list(out.glob(".*")), sorted(p.name for p in out.iterdir())  # no hidden partial video
    assert not (out / "metrics.json").exists() and not (out / "report.html").exists()
