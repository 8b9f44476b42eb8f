"""INT8 by explicit quantization: Q/DQ graphs written by ONNX Runtime's static quantization, calibrated on real frames.

One quantized ONNX graph per model graph runs everywhere: ONNX Runtime's CPU kernels execute it directly, and
TensorRT builds it with explicit quantization (the Q/DQ nodes carry the scales; no calibrator on the device).

- What is quantized: the weights and input activations of ``Conv``, ``MatMul`` and ``Gemm`` (``QUANT_OPS``), signed
  int8 and symmetric (zero point 0, what TensorRT requires), weights per output channel, biases in float (TensorRT
  dequantizes INT8 tensors only). Everything else stays in
  float (fp32 in ONNX Runtime, fp16 in a TensorRT engine built with ``--precision int8``). The LFQ index arithmetic
  and the in-graph image resizing (``fp32/`` and ``/prep/`` names) are never quantized, nor the layers matching
  ``--fp32-layers`` (fnmatch patterns over node names, unrolled repeats' ``_N`` suffixes removed).
- Calibration: every input each graph receives while the fp32 ONNX Runtime runner plans on the first N camera frames
  of a clip store or a rosbag2 drive (``calibration.collect_inputs``); the activation ranges come from ONNX Runtime's
  calibrator (``minmax``, ``entropy`` or ``percentile``). Same frames, same ranges, same scales: the ranges are kept
  in a calibration file per graph, keyed by the graph's sha256, the method and a digest of the inputs; a corrupt or
  mismatched file is reported in one sentence and rebuilt.
- Files: ``MODEL_DIR/engines/int8/<graph>.int8.<key>.onnx`` (+ JSON sidecar, keyed like every engine), and the
  manifest's ``int8`` section, which names the quantized graph of every graph and its quantized and float layers.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pwm_model.errors import ConfigError, ModelError

QUANT_OPS = ("Conv", "MatMul", "Gemm")
NEVER_QUANTIZED = ("fp32/", "/prep/")  # name fragments of nodes that stay float (LFQ arithmetic, image resizing)
CALIB_METHODS = ("minmax", "entropy", "percentile")
CALIB_FORMAT, CALIB_VERSION = "pwm-int8-calibration", 1
INT8_DIR = "int8"  # under MODEL_DIR/engines
QDQ_FORMAT_VERSION = 2  # bump when the quantization settings below change (it enters the key)
TOKEN_TARGET = 0.98  # a quantized graph should reproduce this share of fp32's token slots (fp32 inputs)
# the encoders' tokens are sign bits of features (one flipped bit changes a token) and enter the history of the next
# H plans, so their flips compound: they must reproduce more
ENCODER_TOKEN_TARGET = 0.995
WAYPOINT_TARGET_M = 0.05  # and its waypoints within this (m / rad)
PIXEL_TOL = 8  # preview images: a pixel value counts as reproduced within this many grey levels


@dataclass(frozen=True)
class Int8Settings:
    """What decides a quantized graph (all of it enters the key)."""

    method: str = "minmax"
    per_channel: bool = True
    fp32_layers: tuple[str, ...] = ()

    def check(self) -> None:
        if self.method not in CALIB_METHODS:
            raise ConfigError(f"--calib-method must be one of {', '.join(CALIB_METHODS)}, got {self.method!r}")


@dataclass
class QuantizedGraph:
    """One written Q/DQ graph."""

    graph: str
    path: Path
    sha256: str
    quantized: list[str] = field(default_factory=list)  # node names computed in int8
    kept_float: list[str] = field(default_factory=list)  # QUANT_OPS nodes left in float


def normalised_name(node_name: str) -> str:
    """A node name without the ``_N`` suffixes of the unrolled rollout's repeats (``mlp.2_5`` -> ``mlp.2``)."""
    return re.sub(r"_\d+(?=/|$)", "", node_name)


def matches(node_name: str, patterns: list[str] | tuple[str, ...]) -> bool:
    norm = normalised_name(node_name)
    return any(fnmatch.fnmatchcase(node_name, p) or fnmatch.fnmatchcase(norm, p) for p in patterns)


def layer_group(node_name: str) -> str:
    """The sensitivity group of a node, as an fnmatch pattern: a transformer block's attention or MLP, an encoder or
    decoder stage, or a head."""
    parts = normalised_name(node_name).strip("/").split("/")[:-1]  # the op name itself goes
    if not parts:
        return node_name
    depth = 3 if parts[0] in ("transformer", "enc", "dec") else 1
    return "/" + "/".join(parts[:depth]) + "/*"


def quantizable_nodes(model: Any) -> list[str]:
    """Names of the nodes of ``QUANT_OPS`` that may be quantized (``NEVER_QUANTIZED`` excluded)."""
    return [n.name for n in model.graph.node
            if n.op_type in QUANT_OPS and not any(s in n.name for s in NEVER_QUANTIZED)]


def preprocess(src: Path, dst: Path) -> None:
    """Shape inference and ONNX Runtime's basic (portable, standard-operator) optimizations, as the quantizer wants."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    except Exception as exc:  # noqa: BLE001 - onnx / onnxruntime raise their own types
        raise ModelError(f"cannot prepare {src} for quantization ({str(exc).splitlines()[0][:200]})") from None


def inputs_digest(samples: list[dict[str, np.ndarray]]) -> str:
    """sha256 over the calibration inputs (names, shapes, dtypes and bytes, in order)."""
    h = hashlib.sha256()
    for s in samples:
        for name in sorted(s):
            a = np.ascontiguousarray(s[name])
            h.update(f"{name}:{a.dtype}:{a.shape};".encode())
            h.update(a.tobytes())
    return h.hexdigest()


def _ort_method(method: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[method]


class _Reader:
    """ONNX Runtime's ``CalibrationDataReader`` protocol over recorded inputs."""

    def __init__(self, samples: list[dict[str, np.ndarray]]) -> None:
        self.samples, self.i = samples, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.samples):
            return None
        self.i += 1
        return self.samples[self.i - 1]

    def __len__(self) -> int:
        return len(self.samples)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.samples, self.i = self.samples[start_index:end_index], 0


def calibrate(pre_path: Path, samples: list[dict[str, np.ndarray]], method: str) -> dict[str, Any]:
    """Activation ranges of the ``QUANT_OPS`` inputs of ``pre_path`` over ``samples``: ONNX Runtime's serialised
    ``TensorsData`` (a JSON object)."""
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    if not samples:
        raise ModelError(f"no calibration inputs for {pre_path.name}")
    with tempfile.TemporaryDirectory(prefix="pwm-calib-") as tmp:
        calibrator = create_calibrator(pre_path, list(QUANT_OPS),
                                       augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=_ort_method(method), extra_options={"symmetric": True})
        calibrator.collect_data(_Reader(samples))
        ranges = calibrator.compute_data()
        save_tensors_data(ranges, Path(tmp) / "ranges.json")
        return json.loads((Path(tmp) / "ranges.json").read_text())


def calibration_file(out_dir: Path, graph: str, graph_sha256: str, method: str) -> Path:
    return out_dir / f"{graph}.calibration.{method}.{graph_sha256[:16]}.json"


def load_calibration(path: Path, graph_sha256: str, method: str, digest: str) -> tuple[dict[str, Any] | None, str]:
    """The ranges of a calibration file when it is intact and made from these inputs; else (None, why)."""
    if not path.is_file():
        return None, "no calibration file yet"
    try:
        doc = json.loads(path.read_text())
        ok = (doc["format"] == CALIB_FORMAT and doc["version"] == CALIB_VERSION and isinstance(doc["ranges"], dict))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        return None, f"calibration file {path} is corrupt ({type(exc).__name__}); calibrating again"
    if not ok:
        return None, f"calibration file {path} is not a pwm INT8 calibration file; calibrating again"
    for what, want, words in (("graph_sha256", graph_sha256, "graph"), ("method", method, "calibration method"),
                              ("inputs_sha256", digest, "set of calibration frames")):
        if doc.get(what) != want:
            return None, (f"calibration file {path} was made for another {words} "
                          f"({str(doc.get(what))[:16]}, now {want[:16]}); calibrating again")
    return doc["ranges"], f"calibration file {path.name} reused"


def save_calibration(path: Path, graph_sha256: str, method: str, digest: str, frames: int, source: str,
                     ranges: dict[str, Any]) -> None:
    from pwm_model.io_utils import write_json_atomic

    write_json_atomic(path, {"format": CALIB_FORMAT, "version": CALIB_VERSION, "graph_sha256": graph_sha256,
                             "method": method, "inputs_sha256": digest, "frames": frames, "source": source,
                             "ranges": ranges})


def quantize(pre_path: Path, out_path: Path, ranges: dict[str, Any], settings: Int8Settings,
             only: list[str] | None = None) -> tuple[list[str], list[str]]:
    """Write the Q/DQ graph of ``pre_path`` to ``out_path`` from calibrated ``ranges``; ``only`` restricts the
    quantized nodes to these names (the sensitivity pass). Returns (quantized node names, kept-float node names)."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    model = onnx.load(str(pre_path), load_external_data=False)
    candidates = quantizable_nodes(model)
    allowed = None if only is None else set(only)
    chosen = [n for n in candidates if not matches(n, settings.fp32_layers) and (allowed is None or n in allowed)]
    chosen_set = set(chosen)
    kept = [n for n in candidates if n not in chosen_set]
    if not chosen:
        raise ConfigError(f"no layer of {pre_path.stem} is left to quantize (every one matches --fp32-layers)")
    all_nodes = [n.name for n in model.graph.node]
    with tempfile.TemporaryDirectory(prefix="pwm-qdq-") as tmp:
        cache = Path(tmp) / "ranges.json"
        cache.write_text(json.dumps(ranges))
        quantize_static(str(pre_path), str(out_path), None, quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(QUANT_OPS), per_channel=settings.per_channel,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        nodes_to_quantize=chosen, nodes_to_exclude=[n for n in all_nodes if n not in chosen_set],
                        calibrate_method=_ort_method(settings.method), calibration_cache_path=str(cache),
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                       "QDQKeepRemovableActivations": True,
                                       # biases stay float: TensorRT dequantizes INT8 (not INT32) tensors only
                                       "QuantizeBias": False})
    return chosen, kept


def quantized_graph_digest(settings: Int8Settings, ranges: dict[str, Any]) -> str:
    """What enters the engine key beyond the graph's sha256: the settings and the calibrated ranges."""
    blob = json.dumps({"settings": [settings.method, settings.per_channel, sorted(settings.fp32_layers)],
                       "ranges": ranges, "qdq": QDQ_FORMAT_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def run_graph(path: Path, samples: list[dict[str, np.ndarray]], threads: int = 0) -> list[dict[str, np.ndarray]]:
    """Outputs of one ONNX graph (ONNX Runtime, CPU) for each recorded input."""
    from pwm_model.runtime.backends import OrtEngine

    eng = OrtEngine(path.stem, path, ["CPUExecutionProvider"], threads)
    try:
        return [eng.run(s) for s in samples]
    finally:
        eng.close()


def token_target(graph: str) -> float:
    """The share of token slots the quantized ``graph`` must reproduce."""
    return ENCODER_TOKEN_TARGET if graph.endswith("_encoder") else TOKEN_TARGET


def damage(ref: list[dict[str, np.ndarray]], got: list[dict[str, np.ndarray]],
           token_target: float = TOKEN_TARGET) -> dict[str, float]:
    """How far quantized outputs are from fp32's: the share of reproduced integer outputs (token slots equal, preview
    pixels within ``PIXEL_TOL`` grey levels), the largest waypoint difference (m / rad), the largest feature-map
    difference relative to fp32's range, and ``score``: the worst of the first two against their targets (> 1: a
    target is missed)."""
    equal = total = 0
    wp = feat = 0.0
    for r, g in zip(ref, got):
        for name, a in r.items():
            b = g[name]
            if a.dtype == np.uint8:
                equal += int((np.abs(a.astype(np.int16) - b.astype(np.int16)) <= PIXEL_TOL).sum())
                total += a.size
            elif a.dtype.kind in "iu":
                equal += int((a == b).sum())
                total += a.size
            elif name == "waypoints":
                wp = max(wp, float(np.abs(a - b).max()))
            elif a.dtype.kind == "f" and a.size:
                feat = max(feat, float(np.abs(a - b).max() / (np.abs(a).max() + 1e-6)))
    agreement = equal / total if total else 1.0
    score = max((1.0 - agreement) / (1.0 - token_target), wp / WAYPOINT_TARGET_M)
    return {"token_agreement": agreement, "waypoint_max_m": wp, "feature_rel": feat, "score": score}


def sensitivity(pre_path: Path, ranges: dict[str, Any], settings: Int8Settings,
                held_out: list[dict[str, np.ndarray]], reference: list[dict[str, np.ndarray]],
                label: str = "", echo: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Quantize one layer group at a time and measure the damage on held-out inputs, worst first."""
    import onnx

    nodes = [n for n in quantizable_nodes(onnx.load(str(pre_path), load_external_data=False))
             if not matches(n, settings.fp32_layers)]
    groups: dict[str, list[str]] = {}
    for n in nodes:
        groups.setdefault(layer_group(n), []).append(n)
    rows = []
    with tempfile.TemporaryDirectory(prefix="pwm-sens-") as tmp:
        for i, (group, members) in enumerate(groups.items()):
            out = Path(tmp) / f"{i}.onnx"
            quantize(pre_path, out, ranges, settings, only=members)
            d = damage(reference, run_graph(out, held_out), token_target(label or pre_path.stem))
            rows.append({"group": group, "layers": len(members), **d})
            echo(f"  {label or pre_path.stem} {group:44s} {len(members):3d} layers  tokens "
                 f"{100 * d['token_agreement']:6.2f} %  waypoints {d['waypoint_max_m']:.4f} m  score {d['score']:.2f}")
            out.unlink()
    return sorted(rows, key=lambda r: (-r["score"], -r["feature_rel"]))
