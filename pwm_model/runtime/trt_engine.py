"""The TensorRT 10 backend: one deserialized engine per graph, run with ``execute_async_v3`` on its own CUDA stream.

Needs the TensorRT 10 Python bindings (``import tensorrt``) and cuda-python (``cuda.bindings.runtime``, or the
older ``cuda.cudart``); both are imported lazily, so this module imports without them.

- Device buffers are allocated and bound (``set_tensor_address``) once; host I/O goes through pinned buffers with
  asynchronous copies on the engine's stream.
- After ``CUDA_GRAPH_AFTER_RUNS`` runs (warm-up) an engine with static shapes captures copy-in, enqueue and
  copy-out into a CUDA graph and replays it; if capture fails (some GPUs / drivers / layers) it says so once and
  keeps enqueueing.
- Inputs with a varying axis (the stepwise rollout's KV cache) are sized per call with ``set_input_shape`` within
  the optimization profile the engine was built with; their buffers are allocated for the profile's largest shape.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path
from typing import Any

import numpy as np

from pwm_model.errors import ModelError
from pwm_model.runtime.engine_key import BUILD_HINT, EngineKey, StoredEngine, find_engine
from pwm_model.runtime.manifest import Manifest, TensorSpec

log = logging.getLogger("pwm.runtime")

CUDA_GRAPH_AFTER_RUNS = 3  # runs before capture: TensorRT needs one enqueue to finish deferred set-up
INSTALL_HINT = ("install TensorRT 10 with its Python bindings and cuda-python (JetPack 6 on a Jetson: "
                "`sudo apt install python3-libnvinfer` and `pip install cuda-python`; on an x86 GPU machine: "
                "`pip install tensorrt cuda-python`)")


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError:
        raise ModelError(f"TensorRT is not installed: {INSTALL_HINT}") from None
    return trt


def import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            raise ModelError(f"cuda-python is not installed: {INSTALL_HINT}") from None
    return cudart


def check(result: Any) -> Any:
    """Unpack a cuda-python ``(error, value...)`` result, raising on an error."""
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA call failed: {err}")
    return rest[0] if len(rest) == 1 else (tuple(rest) if rest else None)


def tensorrt_version() -> str:
    return str(import_tensorrt().__version__)


def gpu_facts(device: int = 0) -> tuple[str, str]:
    """(GPU name, compute capability 'major.minor') of a CUDA device."""
    cudart = import_cudart()
    props = check(cudart.cudaGetDeviceProperties(device))
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return name.strip("\x00 ").strip(), f"{props.major}.{props.minor}"


def gpu_description() -> str:
    name, cc = gpu_facts()
    return f"{name}, sm_{cc.replace('.', '')}"


def current_key(m: Manifest, graph: str, precision: str, flags: dict[str, Any] | None = None) -> EngineKey:
    """The key an engine of ``graph`` needs on this machine (TensorRT version, GPU, ONNX file, precision)."""
    version = tensorrt_version()
    name, cc = gpu_facts()
    return EngineKey.make("tensorrt", graph, m.graphs[graph].sha256, precision, version, name, cc, flags)


def find_trt_engine(m: Manifest, graph: str, precision: str) -> StoredEngine:
    return find_engine(m.engines_dir / "tensorrt", current_key(m, graph, precision))


class TrtEngine:
    """One TensorRT engine with bound device buffers, pinned host buffers and optional CUDA-graph replay."""

    def __init__(self, name: str, path: str | Path, *, cuda_graph: bool = True) -> None:
        trt, self._cudart = import_tensorrt(), import_cudart()
        self.name, self.path = name, Path(path)
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise ModelError(f"TensorRT {trt.__version__} could not load engine {self.path}: it was built by another "
                             f"TensorRT version or for another GPU, or it is corrupt; {BUILD_HINT}")
        self.context = self.engine.create_execution_context()
        cudart = self._cudart
        self.stream = check(cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking))
        self._buffers: list[dict[str, Any]] = []
        self._graph_exec = None
        self._use_graph = cuda_graph
        self.runs = 0
        try:
            names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
            for tname in names:  # size varying inputs at their profile's largest shape first: outputs follow them
                if self.engine.get_tensor_mode(tname) == trt.TensorIOMode.INPUT and any(
                        d < 0 for d in self.engine.get_tensor_shape(tname)):
                    self.context.set_input_shape(tname, tuple(self.engine.get_tensor_profile_shape(tname, 0)[2]))
            for tname in names:
                self._buffers.append(self._allocate(tname))
        except BaseException:
            self.close()
            raise
        self.dynamic = any(b["dynamic"] for b in self._buffers)

    def _allocate(self, tname: str) -> dict[str, Any]:
        trt, cudart, eng = self._trt, self._cudart, self.engine
        is_input = eng.get_tensor_mode(tname) == trt.TensorIOMode.INPUT
        shape = tuple(eng.get_tensor_shape(tname))
        dtype = np.dtype(trt.nptype(eng.get_tensor_dtype(tname)))
        dynamic = any(d < 0 for d in shape)
        max_shape = shape
        if dynamic and is_input:
            max_shape = tuple(eng.get_tensor_profile_shape(tname, 0)[2])
        elif dynamic:  # outputs: sized for the largest inputs (set in __init__)
            max_shape = tuple(self.context.get_tensor_shape(tname))
        nbytes = max(int(np.prod(max_shape)) * dtype.itemsize, 1)
        dptr = check(cudart.cudaMalloc(nbytes))
        hptr = check(cudart.cudaMallocHost(nbytes))
        host = np.frombuffer((ctypes.c_byte * nbytes).from_address(int(hptr)), dtype=np.uint8)
        self.context.set_tensor_address(tname, int(dptr))
        return {"name": tname, "input": is_input, "shape": shape, "dtype": dtype, "dynamic": dynamic,
                "device": dptr, "host_ptr": hptr, "host": host, "nbytes": nbytes}

    def signature(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        spec = lambda b: TensorSpec(b["name"], tuple(d if d >= 0 else "dynamic" for d in b["shape"]),  # noqa: E731
                                    b["dtype"].name)
        return [spec(b) for b in self._buffers if b["input"]], [spec(b) for b in self._buffers if not b["input"]]

    def _enqueue(self, shapes: dict[str, tuple[int, ...]]) -> None:
        cudart = self._cudart
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for b in self._buffers:
            if b["input"]:
                n = int(np.prod(shapes[b["name"]])) * b["dtype"].itemsize
                check(cudart.cudaMemcpyAsync(b["device"], b["host_ptr"], n, h2d, self.stream))
        if not self.context.execute_async_v3(int(self.stream)):
            raise RuntimeError(f"TensorRT failed to enqueue engine {self.path.name}")
        for b in self._buffers:
            if not b["input"]:
                n = int(np.prod(shapes[b["name"]])) * b["dtype"].itemsize
                check(cudart.cudaMemcpyAsync(b["host_ptr"], b["device"], n, d2h, self.stream))

    def _capture(self, shapes: dict[str, tuple[int, ...]]) -> None:
        cudart = self._cudart
        try:
            check(cudart.cudaStreamBeginCapture(self.stream,
                                                cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))
            try:
                self._enqueue(shapes)
            finally:
                graph = check(cudart.cudaStreamEndCapture(self.stream))
            self._graph_exec = check(cudart.cudaGraphInstantiate(graph, 0))
            check(cudart.cudaGraphDestroy(graph))
        except Exception as exc:  # noqa: BLE001 - capture is an optimisation; enqueueing keeps working
            self._graph_exec, self._use_graph = None, False
            log.warning("engine %s: CUDA graph capture failed (%s); running without CUDA graphs", self.path.name, exc)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        shapes: dict[str, tuple[int, ...]] = {}
        for b in self._buffers:
            if not b["input"]:
                continue
            arr = np.ascontiguousarray(inputs[b["name"]], dtype=b["dtype"])
            if b["dynamic"]:
                self.context.set_input_shape(b["name"], arr.shape)
            if arr.nbytes > b["nbytes"]:
                raise ModelError(f"input {b['name']} of engine {self.path.name} has shape {arr.shape}, larger than "
                                 "the engine's optimization profile allows")
            b["host"][: arr.nbytes] = arr.reshape(-1).view(np.uint8)
            shapes[b["name"]] = arr.shape
        for b in self._buffers:
            if not b["input"]:
                shapes[b["name"]] = tuple(self.context.get_tensor_shape(b["name"])) if b["dynamic"] else b["shape"]
        cudart = self._cudart
        if self._graph_exec is not None:
            check(cudart.cudaGraphLaunch(self._graph_exec, self.stream))
        else:
            self._enqueue(shapes)
        check(cudart.cudaStreamSynchronize(self.stream))
        self.runs += 1
        if self._use_graph and not self.dynamic and self._graph_exec is None and self.runs >= CUDA_GRAPH_AFTER_RUNS:
            self._capture(shapes)
        out = {}
        for b in self._buffers:
            if not b["input"]:
                n = int(np.prod(shapes[b["name"]])) * b["dtype"].itemsize
                out[b["name"]] = b["host"][:n].view(b["dtype"]).reshape(shapes[b["name"]]).copy()
        return out

    def close(self) -> None:
        cudart = getattr(self, "_cudart", None)
        if cudart is None:
            return
        if self._graph_exec is not None:
            cudart.cudaGraphExecDestroy(self._graph_exec)
            self._graph_exec = None
        for b in self._buffers:
            cudart.cudaFree(b["device"])
            cudart.cudaFreeHost(b["host_ptr"])
        self._buffers = []
        if getattr(self, "stream", None) is not None:
            cudart.cudaStreamDestroy(self.stream)
            self.stream = None
        self.context = self.engine = None
        self._cudart = None
