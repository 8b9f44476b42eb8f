"""Calibrating the monitors at export: the forecast surprise and the scene novelty over held-out drives, written to
manifest.json; and the novelty prior from the training drives.

The exported graphs run in the fp32 ONNX Runtime ``PolicyRunner`` over the camera frames of held-out drives (rosbag2
drives, folders of them, clip stores or ``synthetic:SEED``), as on the vehicle (fp32 ONNX Runtime; a TensorRT fp16 or
int8 build scores within its parity), and every finite surprise
(runtime/surprise.py) and novelty (runtime/novelty.py) is kept. Each section records the percentiles and the warning
threshold (the ``WARN_PERCENTILE``-th), which the node uses (for the surprise, when its ``surprise_warn`` parameter is
negative, the default): on drives like the held-out ones about 1 % of plans then raise the WARN.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from pwm_model.errors import DataError

WARN_PERCENTILE = 99.0  # the node's default surprise warning threshold: this percentile of the held-out surprise
PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)
CALIB_FRAMES_PER_DRIVE = 300  # camera frames scored per drive (30 s at 10 Hz)
MIN_VALUES = 50  # fewer finite surprise values than this cannot place a 99th percentile


def expand_sources(sources: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Each source as given when it is ``synthetic:SEED`` or a clip store, else the rosbag2 bags it names (a bag, a
    .mcap / .db3 file, or a folder searched for them: ``find_bags``)."""
    from pwm_model.data.bag import find_bags
    from pwm_model.data.frames import synthetic_seed

    out: list[str] = []
    for src in sources:
        text = str(src)
        if synthetic_seed(text) is not None or (Path(text) / "index.json").is_file():
            out.append(text)
        else:
            out.extend(str(p) for p in find_bags([text]))
    return out


def monitor_values(model_dir: str | os.PathLike[str], sources: list[str], frames_per_drive: int,
                   echo: Callable[[str], None] = print, camera_topic: str | None = None
                   ) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """Finite surprise and novelty of every plan the fp32 ONNX Runtime runner makes on each source (history reset
    between drives)."""
    from pwm_model.config import RuntimeConfig
    from pwm_model.data.frames import camera_frames
    from pwm_model.runtime.runner import PolicyRunner

    values: dict[str, list[float]] = {"surprise": [], "novelty": [], "code_nll": [], "reconstruction": []}
    drives: list[dict[str, Any]] = []
    runner = PolicyRunner.from_model_dir(model_dir, RuntimeConfig(backend="onnxruntime", device="cpu"))
    try:
        for i, src in enumerate(sources):
            t0 = time.monotonic()
            runner.reset()
            got: dict[str, list[float]] = {"surprise": [], "novelty": [], "code_nll": [], "reconstruction": []}
            for rgb, t_ns, ego in camera_frames(src, with_camera_topic(runner.config, camera_topic),
                                                frames_per_drive):
                plan = runner.step(rgb, t_ns, ego)
                parts = (plan.novelty_code_nll, plan.novelty_reconstruction)
                if all(np.isfinite(parts)):  # the novelty's parts, kept together (combined after calibration)
                    got["code_nll"].append(float(parts[0]))
                    got["reconstruction"].append(float(parts[1]))
                for name in ("surprise", "novelty"):
                    v = float(getattr(plan, name))
                    if np.isfinite(v):
                        got[name].append(v)
            drive: dict[str, Any] = {"source": src, "values": len(got["surprise"])}
            for name, v in got.items():
                values[name] += v
                drive[f"{name}_median"] = round(float(np.median(v)), 4) if v else None
            drives.append(drive)
            echo(f"  calibration [{i + 1}/{len(sources)}] {src}: {len(got['surprise'])} plans, median surprise "
                 f"{drive['surprise_median']}, novelty {drive['novelty_median']} ({time.monotonic() - t0:.0f} s)")
    finally:
        runner.close()
    return {k: np.asarray(v, np.float64) for k, v in values.items()}, drives


def calibration_section(values: np.ndarray, drives: list[dict[str, Any]], definition: str,
                        frames_per_drive: int, what: str = "surprise") -> dict[str, Any]:
    """A monitor's calibration section (``surprise_calibration``, ``novelty_calibration``) from held-out values."""
    if values.size < MIN_VALUES:
        raise DataError(f"{what} calibration got {values.size} values (at least {MIN_VALUES} needed): give longer or "
                        "more drives")
    pct = {f"p{p:g}": round(float(np.percentile(values, p)), 5) for p in PERCENTILES}
    unit = "share of slots" if definition == "weighted_mismatch" else "nats per token"
    return {"definition": definition, "unit": unit, "values": int(values.size), "mean": round(float(values.mean()), 5),
            "percentiles": pct, "warn_percentile": WARN_PERCENTILE,
            "warn": round(float(np.percentile(values, WARN_PERCENTILE)), 5), "frames_per_drive": int(frames_per_drive),
            "drives": drives, "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def with_camera_topic(cfg: Any, camera_topic: str | None) -> Any:
    """``cfg`` reading the camera of bags recorded under ``camera_topic`` (named as the node's), or as it is."""
    if not camera_topic:
        return cfg
    import dataclasses

    from pwm_model.data.bag_format import camera_topics

    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, topics=dataclasses.replace(
        cfg.data.topics, **camera_topics(camera_topic))))


def check_calibration_args(sources: Iterable[str | os.PathLike[str]], frames_per_drive: int,
                           forecast_frames: int) -> list[str]:
    """The calibration's sources, checked before any work: one sentence for what cannot be calibrated."""
    if frames_per_drive < 2:
        raise DataError("--surprise-calib-frames must be at least 2")
    if forecast_frames == 0:
        raise DataError("a model without forecast frames (forecast_frames 0) has no forecast surprise to calibrate")
    return expand_sources(sources)


def calibrate_monitors(model_dir: str | os.PathLike[str], sources: Iterable[str | os.PathLike[str]],
                       frames_per_drive: int = CALIB_FRAMES_PER_DRIVE, echo: Callable[[str], None] = print,
                       camera_topic: str | None = None) -> dict[str, dict[str, Any]]:
    """Score the monitors on held-out drives: {"surprise_calibration": ..., "novelty_calibration": ... (with a
    novelty prior)}, not yet written."""
    from pwm_model.runtime.manifest import load_manifest

    m = load_manifest(model_dir)
    srcs = check_calibration_args(sources, frames_per_drive, m.config.world_model.forecast_frames)
    echo(f"calibrating the forecast surprise{' and the scene novelty' if m.data.get('novelty') else ''} on "
         f"{len(srcs)} held-out drive(s), {frames_per_drive} frames each")
    values, drives = monitor_values(model_dir, srcs, frames_per_drive, echo, camera_topic)
    out = {"surprise_calibration": calibration_section(values["surprise"], drives, m.surprise_definition,
                                                       frames_per_drive)}
    out["surprise_calibration"]["runtime"] = "onnxruntime fp32 (cpu)"  # TensorRT fp16 / int8 may shift it a little
    if m.data.get("novelty") and len(values["reconstruction"]) >= MIN_VALUES:
        from pwm_model.runtime.novelty import combine, component_scales

        parts = {"code_nll": values["code_nll"], "reconstruction": values["reconstruction"]}
        scales = component_scales(parts)
        combined = np.array([combine(a, b, scales) for a, b in zip(parts["code_nll"], parts["reconstruction"])])
        out["novelty_calibration"] = calibration_section(combined, drives, "ctx_code_nll+reconstruction",
                                                         frames_per_drive, "novelty")
        out["novelty_calibration"].update(components=scales, unit="calibrated units (0 = both parts at their median)")
    elif m.data.get("novelty"):
        out["novelty_calibration"] = calibration_section(values["novelty"], drives, "ctx_code_nll",
                                                         frames_per_drive, "novelty")
    for key, sec in out.items():
        echo(f"  {key.split('_')[0]} over {sec['values']} plans: median {sec['percentiles']['p50']:.3f}, p99 "
             f"{sec['warn']:.3f} {sec['unit']} (the node's default warning threshold)")
    return out


def write_novelty_prior(model_dir: Path, store: str | os.PathLike[str], tokenizer_dir: str | os.PathLike[str],
                        cfg: Any, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Build the novelty table from the training store's ctx codes (its token cache, built first when missing) into
    ``model_dir``; returns the manifest's ``novelty`` record."""
    from pwm_model.data.tokens import token_cache
    from pwm_model.io_utils import file_sha256
    from pwm_model.runtime.novelty import PRIOR_BETA, PRIOR_FILE, build_prior

    if not (Path(store) / "index.json").is_file():
        raise DataError(f"--novelty-prior needs a clip store (pwm index) of the training drives; {store} is none")
    cache = token_cache(store, tokenizer_dir, cfg)
    table = build_prior(np.asarray(cache.ctx), cfg.tokenizer.codebook_size)
    path = model_dir / PRIOR_FILE
    np.save(path, table)
    echo(f"  {PRIOR_FILE}: ctx code frequencies of the current frames of {len(cache.ctx)} training clips of {store} "
         f"({path.stat().st_size / 1e6:.2f} MB)")
    return {"file": PRIOR_FILE, "sha256": file_sha256(path), "frames": int(len(cache.ctx)), "beta": PRIOR_BETA,
            "store": str(store), "definition": "ctx_code_nll"}


def copy_novelty_prior(checkpoint: Path, model_dir: Path, cfg: Any, echo: Callable[[str], None] = print
                       ) -> dict[str, Any]:
    """The checkpoint's own ``novelty_prior.npy`` (shipped with its weights) into ``model_dir``, checked; returns the
    manifest's ``novelty`` record."""
    import shutil

    from pwm_model.io_utils import file_sha256
    from pwm_model.runtime.novelty import PRIOR_BETA, PRIOR_FILE, NoveltyPrior

    NoveltyPrior.load(checkpoint / PRIOR_FILE, cfg.tokenizer.ctx_tokens, cfg.tokenizer.codebook_size)
    shutil.copyfile(checkpoint / PRIOR_FILE, model_dir / PRIOR_FILE)
    echo(f"  {PRIOR_FILE}: the checkpoint's own (ctx code frequencies of its training drives)")
    return {"file": PRIOR_FILE, "sha256": file_sha256(model_dir / PRIOR_FILE), "beta": PRIOR_BETA,
            "store": f"{checkpoint}/{PRIOR_FILE}", "definition": "ctx_code_nll"}
