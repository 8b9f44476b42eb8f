"""INT8 calibration inputs: real graph inputs from clip-store frames (for the Q/DQ graphs of quantize.py), and the
deprecated TensorRT entropy calibrator over them (``--trt-implicit-calibration``, for TensorRT 8).

The inputs are what each graph sees on the vehicle: the camera frames of a clip store (or a rosbag2 drive) go
through the fp32 ONNX Runtime ``PolicyRunner`` (ring buffer, guide maps, history selection included) and every call
of every graph is recorded. ``EntropyCalibrator`` (a ``tensorrt.IInt8EntropyCalibrator2``) hands them to the builder
one at a time and stores TensorRT's calibration table in a cache file, which later builds reuse (delete it, or pass
``--force``, to calibrate again).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from pwm_model.errors import DataError

CALIB_FRAMES = 64  # camera frames run for calibration (TensorRT's guidance: a few hundred samples at most)


def calibration_cache_path(engine_dir: str | os.PathLike[str], graph: str, onnx_sha256: str) -> Path:
    return Path(engine_dir) / f"{graph}.int8-calibration.{onnx_sha256[:16]}.cache"


def collect_inputs(model_dir: str | os.PathLike[str], source: str | os.PathLike[str] | None, max_frames: int,
                   graphs: list[str] | None = None) -> dict[str, list[dict[str, np.ndarray]]]:
    """Every input each graph received while the fp32 ONNX Runtime runner planned on ``max_frames`` frames of
    ``source`` (a clip store, a rosbag2 drive, or None for a synthetic drive); previews decode the last plan."""
    from pwm_model.config import RuntimeConfig
    from pwm_model.data.frames import camera_frames
    from pwm_model.runtime.backends import RecordingEngine, open_engines
    from pwm_model.runtime.manifest import load_manifest
    from pwm_model.runtime.runner import PolicyRunner

    m = load_manifest(model_dir)
    m.verify_files()
    engines = {n: RecordingEngine(e, keep_outputs=False)
               for n, e in open_engines(m, RuntimeConfig(backend="onnxruntime", device="cpu")).items()}
    runner = PolicyRunner(m, RuntimeConfig(backend="onnxruntime", device="cpu"), engines)  # type: ignore[arg-type]
    plan = None
    ctx_codes = []
    for rgb, t_ns, ego in camera_frames(source, m.config, max_frames):
        plan = runner.step(rgb, t_ns, ego)
        ctx_codes.append(plan.ctx_tokens)
    if plan is None:
        raise DataError(f"no camera frames for calibration in {source}")
    if m.has_preview and len(plan.forecast_tokens):
        runner.preview(plan)
    decoder = engines.get("ctx_decoder")
    if decoder is not None and not decoder.calls:  # the runner decodes only for a novelty prior: feed every frame
        for codes in ctx_codes:
            decoder.run({"ctx_tokens": np.asarray(codes, np.int64)[None]})
    runner.close()
    return {n: [inp for inp, _ in e.calls] for n, e in engines.items() if graphs is None or n in graphs}


def make_calibrator(trt: Any, cudart: Any, samples: list[dict[str, np.ndarray]], cache_path: Path) -> Any:
    """An ``IInt8EntropyCalibrator2`` over ``samples`` (batch 1 each) that caches its table at ``cache_path``."""
    from pwm_model.runtime.trt_engine import check

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.index = 0
            self.device: dict[str, Any] = {}
            for name, arr in (samples[0].items() if samples else ()):
                self.device[name] = check(cudart.cudaMalloc(max(np.ascontiguousarray(arr).nbytes, 1)))

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.index >= len(samples):
                return None
            sample = samples[self.index]
            self.index += 1
            h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
            ptrs = []
            for name in names:
                arr = np.ascontiguousarray(sample[name])
                check(cudart.cudaMemcpy(self.device[name], arr.ctypes.data, arr.nbytes, h2d))
                ptrs.append(int(self.device[name]))
            return ptrs

        def read_calibration_cache(self) -> bytes | None:
            return cache_path.read_bytes() if cache_path.is_file() else None

        def write_calibration_cache(self, cache: Any) -> None:
            from pwm_model.io_utils import write_bytes_atomic

            write_bytes_atomic(cache_path, bytes(cache))

        def free(self) -> None:
            for ptr in self.device.values():
                cudart.cudaFree(ptr)
            self.device = {}

    return EntropyCalibrator()
