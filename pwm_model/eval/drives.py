"""Several recorded drives scored through one planner (``pwm eval-bag``, ``pwm demo``): the multi-bag evaluator.

    evals, metrics = evaluate_drives(["out/sample_drive"], model="out/models/pwm-tiny-onnx", out="out/eval/x")
    write_outputs("out/eval/x", evals, metrics)    # metrics.json + report.html

Offline the model runs here through ``PolicyRunner``; with ``predictions`` the plans are those a live node
published while the bag was replayed. ``bag_eval.evaluate_bag`` scores one drive; ``bag_summary`` pools them.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

TOPIC_KEYS = ("image", "compressed_image", "camera_info", "odometry", "command", "objects", "scenario")


def parse_topics(items: list[str], base: Any) -> Any:
    """``KEY=TOPIC`` items applied to a ``TopicsConfig`` (validated)."""
    from pwm_model.errors import ConfigError

    changes = {}
    for item in items:
        key, sep, topic = item.partition("=")
        if not sep or key not in TOPIC_KEYS:
            raise ConfigError(f"--topics item {item!r} must look like KEY=TOPIC with KEY one of "
                              f"{', '.join(TOPIC_KEYS)}")
        changes[key] = topic
    topics = dataclasses.replace(base, **changes)
    topics.validate("--topics")
    return topics


def model_config(model_dir: str | Path) -> Any:
    """The config a model directory (manifest.json) or a checkpoint directory (config.yaml) was made with."""
    from pwm_model.config import load_yaml
    from pwm_model.errors import ModelError

    d = Path(model_dir)
    if (d / "manifest.json").is_file():
        from pwm_model.runtime.manifest import load_manifest

        return load_manifest(d).config
    if (d / "config.yaml").is_file():
        return load_yaml(d / "config.yaml")
    raise ModelError(f"{d} is not a model directory (no manifest.json) or a checkpoint (no config.yaml)")


def evaluate_drives(bags: list[str], *, model: str | None, out: str | Path, predictions: list[str] | None = None,
                    prediction_topic: str | None = None, backend: str | None = None, device: str | None = None,
                    precision: str | None = None, topics: list[str] | None = None,
                    planning_rate_hz: float | None = None, forecast_every: int = 5,
                    video: bool = True, video_codec: str = "auto", progress: bool | str = True,
                    camera: Any = None) -> tuple[list[Any], dict[str, Any]]:
    """Evaluate ``bags`` (the overlay videos go to ``out``); returns the ``BagEvaluation``s and the metrics.

    ``write_outputs`` then writes metrics.json and report.html. ``progress``: progress lines on stderr (a string:
    with that prefix). ``camera``: the overlay camera given on the command line (``overlay_camera.CameraOptions``).
    How the camera's images are fitted to the model and which camera the overlays use are said once each on stderr.
    """
    from pwm_model.config import preset
    from pwm_model.data.bag import find_bags
    from pwm_model.errors import ConfigError
    from pwm_model.eval.bag_eval import EvalOptions, OfflinePlanner, RecordedPlans, evaluate_bag
    from pwm_model.eval.bag_summary import summarize
    from pwm_model.eval.overlay_camera import mounted
    from pwm_model.eval.predictions import read_predictions

    bags = [str(p) for p in find_bags(bags)]  # a folder of bags (pwm gen-data's output) stands for every bag in it
    predictions = predictions or []
    if predictions and len(predictions) != len(bags):
        raise ConfigError(f"give one --predictions bag per drive: {len(bags)} drives, {len(predictions)} predictions")
    if not predictions and not model:
        raise ConfigError("--model is required to run the planner (or give --predictions recorded from a live run)")
    if forecast_every < 0:
        raise ConfigError(f"--forecast-every must not be negative, got {forecast_every}")
    out = Path(out)
    runner = None
    if predictions:
        cfg = model_config(model) if model else preset("tiny")
    else:
        from pwm_model.runtime.runner import PolicyRunner

        cfg = model_config(model)
        rt = dataclasses.replace(cfg.runtime, **{k: v for k, v in (("backend", backend), ("device", device),
                                                                    ("precision", precision)) if v is not None})
        runner = PolicyRunner.from_model_dir(model, rt)
        cfg = runner.config
        try:
            runner.warm_up()
            if topics:
                cfg.data.topics = parse_topics(topics, cfg.data.topics)
        except BaseException:
            runner.close()
            raise
    if topics and runner is None:
        cfg.data.topics = parse_topics(topics, cfg.data.topics)
    overlay = mounted(cfg.camera, camera)
    rate = planning_rate_hz if planning_rate_hz is not None else cfg.runtime.planning_rate_hz
    opts = EvalOptions(forecast_every=forecast_every, video=video, video_codec=video_codec, progress=bool(progress),
                       progress_prefix=progress if isinstance(progress, str) else "",
                       camera_intrinsics_px=camera.intrinsics_px if camera is not None else None)
    evals = []
    try:
        for j, bag in enumerate(bags):
            if predictions:
                pred = read_predictions(predictions[j], prediction_topic)
                _check_predictions(pred, cfg)
                source: Any = RecordedPlans(pred)
            else:
                source = OfflinePlanner(runner, rate, forecast_every)
            name = "overlay.mp4" if len(bags) == 1 else f"overlay_{j:02d}_{Path(bag).name}.mp4"
            evals.append(evaluate_bag(bag, source, cfg, overlay, out_dir=out, topics=cfg.data.topics, options=opts,
                                      video_name=name))
            if predictions and not model:  # the config is a stand-in preset: it says nothing of the model's inputs
                evals[-1].inputs.update(model_input_px=None, model_input_fit=None, configured_rate_hz=None)
    finally:
        if runner is not None:
            runner.close()
    say_cameras(evals, camera)
    metrics = summarize(evals)
    metrics.update(surprise_warn_metrics(evals, model))
    metrics.update(model=str(model) if model else None,
                   backend=(backend or cfg.runtime.backend) if not predictions else "recorded (live node)",
                   precision=(precision or cfg.runtime.precision) if not predictions else None,
                   planning_rate_hz=rate if not predictions else None)
    return evals, metrics


def say_cameras(evals: list[Any], camera: Any = None) -> None:
    """One stderr line each: how the camera's images were fitted to the model (where cropped), and that overlays
    fell back to the synthetic camera (bags without CameraInfo and no --camera-intrinsics), or ignored it."""
    import sys

    from pwm_model.eval.overlay_camera import CAMERA_INFO, SYNTHETIC

    fits = sorted({str(e.inputs.get("model_input_fit")) for e in evals if e.inputs.get("model_input_fit")})
    for fit in fits:
        print(f"note: {fit}", file=sys.stderr)
    sources = [str((e.inputs.get("overlay_camera") or {}).get("source")) for e in evals]
    if SYNTHETIC in sources:
        which = "the bag" if len(evals) == 1 else f"{sources.count(SYNTHETIC)} of the {len(evals)} bags"
        print(f"note: no camera_info in {which} and no --camera-intrinsics: overlays use the synthetic camera's "
              "intrinsics", file=sys.stderr)
    elif camera is not None and camera.intrinsics_px is not None and sources.count(CAMERA_INFO) == len(evals):
        print("note: every bag has its camera_info: overlays use it and --camera-intrinsics is ignored",
              file=sys.stderr)


def write_outputs(out: str | Path, evals: list[Any], metrics: dict[str, Any], *, title: str | None = None,
                  compare: dict[str, dict[str, Any]] | None = None, notes: list[str] | None = None) -> Path:
    """``out``/metrics.json, ``out``/report.html and ``out``/plans.csv (each written atomically); returns the
    report's path."""
    from pwm_model.eval.plan_table import CSV_NAME
    from pwm_model.eval.report import write_report
    from pwm_model.io_utils import write_json_atomic

    out = Path(out)
    metrics["plans_csv"] = CSV_NAME  # written beside the report by write_report
    write_json_atomic(out / "metrics.json", metrics)
    return write_report(out / "report.html", evals, metrics,
                        title=title or f"pwm drive evaluation: {', '.join(Path(e.bag).name for e in evals)}",
                        model=str(metrics.get("model") or ""), backend=str(metrics.get("backend") or ""),
                        compare=compare, extra_notes=notes or [])


def _check_predictions(pred: Any, cfg: Any) -> None:
    from pwm_model.errors import DataError

    dt = pred.waypoint_dt_s
    if math.isfinite(dt) and abs(dt - cfg.data.waypoint_dt_s) > 1e-3:
        raise DataError(f"the recorded plans in {pred.path} have waypoints {dt:g} s apart, but the model config says "
                        f"data.waypoint_dt_s = {cfg.data.waypoint_dt_s:g} (pass the --model they came from)")
    k = {len(p.waypoints_xyyaw) for p in pred.plans.values()}
    if k != {cfg.data.num_waypoints}:
        raise DataError(f"the recorded plans in {pred.path} have {', '.join(map(str, sorted(k)))} waypoints, but the "
                        f"model config says data.num_waypoints = {cfg.data.num_waypoints} (pass the --model they "
                        "came from)")


def surprise_warn_metrics(evals: list[Any], model: str | None) -> dict[str, Any]:
    """``surprise_warn``: the model's calibrated warning threshold (manifest.json), ``surprise_warn_frac``: the share
    of plans whose surprise is above it (None without a model or a calibration)."""
    import numpy as np

    from pwm_model.runtime.manifest import load_manifest

    if not model or not (Path(model) / "manifest.json").is_file():  # none, or a checkpoint: no calibration
        return {"surprise_definition": None, "surprise_warn": None, "surprise_warn_frac": None}
    m = load_manifest(model)
    warn = m.surprise_warn(-1.0)
    values = np.concatenate([np.asarray(e.surprise, float) for e in evals]) if evals else np.zeros(0)
    values = values[np.isfinite(values)]
    frac = float((values > warn).mean()) if warn is not None and values.size else None
    return {"surprise_definition": m.surprise_definition, "surprise_warn": warn, "surprise_warn_frac": frac}
