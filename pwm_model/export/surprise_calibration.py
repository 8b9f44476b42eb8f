"""Calibrating the forecast surprise at export: its distribution over held-out drives, written to manifest.json.

The exported graphs run in the fp32 ONNX Runtime ``PolicyRunner`` over the camera frames of held-out drives (rosbag2
drives, folders of them, clip stores or ``synthetic:SEED``), exactly as on the vehicle, and every finite surprise
(runtime/surprise.py) is kept. The section records its percentiles and the warning threshold (the
``WARN_PERCENTILE``-th), which the node uses when its ``surprise_warn`` parameter is negative (the default): on
drives like the held-out ones about 1 % of plans then raise the surprise WARN.
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
    """Each source as given, except a folder that is neither a bag nor a clip store: the bags inside it, sorted."""
    from pwm_model.data.bag import is_bag_path
    from pwm_model.data.frames import synthetic_seed

    out: list[str] = []
    for src in sources:
        text = str(src)
        path = Path(text)
        if synthetic_seed(text) is not None or is_bag_path(path) or (path / "index.json").is_file():
            out.append(text)
            continue
        if not path.exists():
            raise DataError(f"surprise calibration source {text} does not exist")
        bags = sorted(str(p) for p in path.iterdir() if p.is_dir() and is_bag_path(p))
        if not bags:
            raise DataError(f"{text} holds no rosbag2 drive, clip store or bags to calibrate the surprise on")
        out.extend(bags)
    return out


def surprise_values(model_dir: str | os.PathLike[str], sources: list[str], frames_per_drive: int,
                    echo: Callable[[str], None] = print) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Finite surprise of every plan the fp32 ONNX Runtime runner makes on each source (history reset between)."""
    from pwm_model.config import RuntimeConfig
    from pwm_model.data.frames import camera_frames
    from pwm_model.runtime.runner import PolicyRunner

    values: list[float] = []
    drives: list[dict[str, Any]] = []
    runner = PolicyRunner.from_model_dir(model_dir, RuntimeConfig(backend="onnxruntime", device="cpu"))
    try:
        for i, src in enumerate(sources):
            t0 = time.monotonic()
            runner.reset()
            got: list[float] = []
            for rgb, t_ns, ego in camera_frames(src, runner.config, frames_per_drive):
                s = runner.step(rgb, t_ns, ego).surprise
                if np.isfinite(s):
                    got.append(float(s))
            values += got
            drives.append({"source": src, "values": len(got),
                           "median": round(float(np.median(got)), 4) if got else None})
            echo(f"  surprise calibration [{i + 1}/{len(sources)}] {src}: {len(got)} plans, median "
                 f"{np.median(got) if got else float('nan'):.3f} ({time.monotonic() - t0:.0f} s)")
    finally:
        runner.close()
    return np.asarray(values, np.float64), drives


def calibration_section(values: np.ndarray, drives: list[dict[str, Any]], definition: str,
                        frames_per_drive: int) -> dict[str, Any]:
    """The manifest's ``surprise_calibration`` section from the held-out surprise values."""
    if values.size < MIN_VALUES:
        raise DataError(f"surprise calibration got {values.size} surprise values (at least {MIN_VALUES} needed): "
                        "give longer or more drives")
    pct = {f"p{p:g}": round(float(np.percentile(values, p)), 5) for p in PERCENTILES}
    return {"definition": definition, "unit": "nats per token" if definition == "bit_nll" else "share of slots",
            "values": int(values.size), "mean": round(float(values.mean()), 5), "percentiles": pct,
            "warn_percentile": WARN_PERCENTILE, "warn": round(float(np.percentile(values, WARN_PERCENTILE)), 5),
            "frames_per_drive": int(frames_per_drive), "drives": drives,
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def calibrate_surprise(model_dir: str | os.PathLike[str], sources: Iterable[str | os.PathLike[str]],
                       frames_per_drive: int = CALIB_FRAMES_PER_DRIVE, echo: Callable[[str], None] = print
                       ) -> dict[str, Any]:
    """Score the surprise on held-out drives and return the ``surprise_calibration`` section (not yet written)."""
    from pwm_model.runtime.manifest import load_manifest

    if frames_per_drive < 2:
        raise DataError("--surprise-calib-frames must be at least 2")
    srcs = expand_sources(sources)
    m = load_manifest(model_dir)
    echo(f"calibrating the forecast surprise on {len(srcs)} held-out drive(s), {frames_per_drive} frames each")
    values, drives = surprise_values(model_dir, srcs, frames_per_drive, echo)
    section = calibration_section(values, drives, m.surprise_definition, frames_per_drive)
    echo(f"  surprise over {section['values']} plans: median {section['percentiles']['p50']:.3f}, p99 "
         f"{section['warn']:.3f} {section['unit']} (the node's default warning threshold)")
    return section
