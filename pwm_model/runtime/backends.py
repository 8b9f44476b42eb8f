"""Inference backends behind the ``Engine`` protocol (types.py) and the one function that picks them.

    engines = open_engines(manifest, runtime_cfg)   # {graph name: Engine}, checked against manifest.json
    outputs = engines["rollout"].run({"ctx_tokens": ..., "dyn_history": ..., "ego": ...})

- ``onnxruntime``: CPU or CUDA execution provider; uses the ORT-optimized graphs written by
  ``export/build_engine.py --backend onnxruntime`` when their key matches, else the exported ONNX graphs; with
  ``runtime.precision: int8`` the Q/DQ graphs the manifest's ``int8`` section names (``--precision int8``).
- ``tensorrt``: TensorRT 10 engines from ``engines/tensorrt`` (trt_engine.py), found by key.
- ``torch``: the PyTorch modules the graphs were exported from, built from the checkpoint the manifest names: the
  reference. It lives in ``pwm_model/export/torch_backend.py`` (torch, model code) and is imported by name only
  when chosen, so nothing here imports torch.

The backend is chosen by ``RuntimeConfig.backend`` alone (no environment switches). Each backend logs its name and
version once.
"""

from __future__ import annotations

import importlib
import logging
import platform
from pathlib import Path
from typing import Any

import numpy as np

from pwm_model.config import RuntimeConfig
from pwm_model.errors import ModelError
from pwm_model.runtime.engine_key import EngineKey, StoredEngine, find_engine
from pwm_model.runtime.manifest import Manifest, TensorSpec, check_signature
from pwm_model.runtime.types import Engine

log = logging.getLogger("pwm.runtime")

ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
              "tensor(int32)": "int32", "tensor(uint8)": "uint8", "tensor(int8)": "int8", "tensor(bool)": "bool",
              "tensor(double)": "float64"}
TORCH_BACKEND_MODULE = "pwm_model.export.torch_backend"
ORT_OFFLINE_LEVEL = "extended"  # optimizations saved by build_engine: portable across machines of one architecture


class OrtEngine:
    """One ONNX graph in an onnxruntime ``InferenceSession``."""

    def __init__(self, name: str, path: str | Path, providers: list[Any], threads: int = 0) -> None:
        import onnxruntime as ort

        self.name = name
        self.path = Path(path)
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3  # errors only
        # no busy-waiting worker threads: on the vehicle the CPU is shared with ROS executors and camera drivers, and
        # spinning threads slow everything down as soon as cores are oversubscribed
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.path), so, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types for bad files
            raise ModelError(f"onnxruntime cannot load graph {self.path} ({str(exc).splitlines()[0][:200]}); the "
                             "file is corrupt or not an ONNX model") from None
        self.output_names = [o.name for o in self.session.get_outputs()]

    def signature(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        conv = lambda arg: TensorSpec(arg.name, tuple(d if isinstance(d, int) else str(d) for d in arg.shape),  # noqa: E731
                                      ORT_DTYPES.get(arg.type, arg.type))
        return [conv(a) for a in self.session.get_inputs()], [conv(a) for a in self.session.get_outputs()]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(self.output_names, inputs)))

    def close(self) -> None:
        self.session = None


class RecordingEngine:
    """Wraps an engine and keeps a copy of every call's inputs and outputs (export verification, calibration)."""

    def __init__(self, engine: Engine, keep_outputs: bool = True) -> None:
        self.engine, self.name = engine, engine.name
        self.keep_outputs = keep_outputs
        self.calls: list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]] = []

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.engine.run(inputs)
        kept = {k: v.copy() for k, v in out.items()} if self.keep_outputs else {}
        self.calls.append(({k: np.array(v, copy=True) for k, v in inputs.items()}, kept))
        return out

    def close(self) -> None:
        close = getattr(self.engine, "close", None)
        if close is not None:
            close()


# ----------------------------------------------------------------------------------------------------
# ONNX Runtime

def ort_providers(device: str) -> list[Any]:
    import onnxruntime as ort

    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ModelError("runtime.device is cuda but this onnxruntime has no CUDAExecutionProvider; install "
                             "onnxruntime-gpu or set device to cpu")
        return [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def ort_key(m: Manifest, graph: str, device: str) -> EngineKey:
    """Key of an ORT-optimized graph: ONNX Runtime version, provider, CPU architecture, optimization level."""
    import onnxruntime as ort

    provider = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
    return EngineKey.make("onnxruntime", graph, m.graphs[graph].sha256, "fp32", ort.__version__,
                          f"{provider} {platform.machine()}", "", {"level": ORT_OFFLINE_LEVEL})


def _ort_graph(m: Manifest, graph: str, device: str) -> Path:
    """The ORT-optimized graph when one with a matching key exists, else the exported ONNX graph."""
    try:
        return find_engine(m.engines_dir / "onnxruntime", ort_key(m, graph, device)).path
    except ModelError:
        return m.path(graph)


# ----------------------------------------------------------------------------------------------------
# the one place that picks a backend

def open_engines(m: Manifest, rt: RuntimeConfig, graphs: list[str] | None = None,
                 checkpoint: str | Path | None = None) -> dict[str, Engine]:
    """Open ``graphs`` (default: all) of a checked manifest with the backend ``rt.backend`` names."""
    graphs = list(graphs or m.graphs)
    if rt.backend == "onnxruntime":
        import onnxruntime as ort

        providers = ort_providers(rt.device)
        engines: dict[str, Engine] = {}
        int8 = rt.precision == "int8"
        if int8 and not m.int8.get("graphs"):
            raise ModelError(f"runtime.precision is int8 but {m.model_dir} has no INT8 graphs; build them with "
                             f"`python export/build_engine.py --model {m.model_dir} --precision int8 --calib STORE "
                             "--backend onnxruntime` (or set precision to fp32)")
        for g in graphs:
            path = m.int8_path(g) if int8 and g in m.int8["graphs"] else None  # None: this graph stays float
            path = path or _ort_graph(m, g, rt.device)
            eng = OrtEngine(g, path, providers, rt.intra_op_threads)
            check_signature(m, g, *eng.signature(), where=f"graph {path}")
            engines[g] = eng
        optimized = sum(1 for e in engines.values() if isinstance(e, OrtEngine) and e.path.parent.name == "onnxruntime")
        n_int8 = sum(1 for e in engines.values() if isinstance(e, OrtEngine) and e.path.parent.name == "int8")
        log.info("backend onnxruntime %s (%s), %d graphs (%d ORT-optimized, %d INT8 Q/DQ)", ort.__version__,
                 providers[0] if isinstance(providers[0], str) else providers[0][0], len(engines), optimized, n_int8)
        return engines
    if rt.backend == "tensorrt":
        from pwm_model.runtime import trt_engine

        engines = {}
        try:
            for g in graphs:
                stored: StoredEngine = trt_engine.find_trt_engine(m, g, rt.precision)
                eng = trt_engine.TrtEngine(g, stored.path)
                check_signature(m, g, *eng.signature(), where=f"engine {stored.path}")
                engines[g] = eng
        except BaseException:
            for e in engines.values():
                e.close()
            raise
        log.info("backend tensorrt %s (%s), %d engines (%s)", trt_engine.tensorrt_version(),
                 trt_engine.gpu_description(), len(engines), rt.precision)
        return engines
    if rt.backend == "torch":
        # the reference backend builds the graphs' PyTorch modules: it lives with the export, loaded by name here
        torch_backend = importlib.import_module(TORCH_BACKEND_MODULE)
        return torch_backend.open_torch_engines(m, rt, graphs, checkpoint)
    raise ModelError(f"unknown runtime backend {rt.backend!r}: choose onnxruntime, tensorrt or torch")
