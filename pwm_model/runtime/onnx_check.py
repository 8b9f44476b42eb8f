"""Will TensorRT's ONNX parser take this graph? A check that needs only the ``onnx`` package.

Against ``trt_onnx_ops.json`` (TensorRT's ONNX-parser operator support matrix, kept with the TensorRT version it was
read from) each graph is checked for:

- opset: at least ``MIN_OPSET`` (17, what the exporter writes) and within the parser's opset range;
- operators: every node of the default ONNX domain is a supported operator (no custom domains);
- dtypes: graph inputs and outputs of supported types; UINT8 only as a graph input or output; per operator, the
  data input is of a type the matrix lists for that operator;
- constants: inputs the matrix requires to be build-time constants (Reduce* / Squeeze / Unsqueeze axes, TopK's K,
  CumSum's axis) are initializers or Constant nodes; Resize uses a supported mode and no antialiasing;
- shapes: every graph input and output has static dimensions, except axes the manifest declares as varying (those
  become TensorRT optimization profiles).

``check_graph(path)`` returns the problems found (empty: fine); ``check_model_dir(dir)`` checks every graph of a
model directory.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from pwm_model.errors import ModelError

MIN_OPSET = 17
OPS_FILE = Path(__file__).with_name("trt_onnx_ops.json")
IO_TYPES = {"FLOAT": "FP32", "FLOAT16": "FP16", "BFLOAT16": "BF16", "INT32": "INT32", "INT64": "INT64",
            "INT8": "INT8", "UINT8": "UINT8", "BOOL": "BOOL"}
# ONNX TensorProto type name -> the names of the support matrix
MATRIX_TYPES = {**IO_TYPES, "DOUBLE": "DOUBLE", "FLOAT8E4M3FN": "FP8", "INT4": "INT4"}
CONSTANT_INPUTS = {  # operator -> (input index, since opset) that must be a build-time constant
    **{op: (1, 18) for op in ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
                              "ReduceMin", "ReduceProd", "ReduceSumSquare")},
    "ReduceSum": (1, 13), "Squeeze": (1, 13), "Unsqueeze": (1, 13), "TopK": (1, 10), "CumSum": (1, 11),
}
TYPE_INPUT = {"Where": 1, "Range": 0}  # which input carries the data type the matrix lists (default 0)
RESIZE_MODES = {"nearest", "linear"}
RESIZE_TRANSFORMS = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}


@lru_cache(maxsize=1)
def support_matrix() -> dict[str, Any]:
    """The operator support matrix (``trt_onnx_ops.json``)."""
    return json.loads(OPS_FILE.read_text())


@dataclass
class GraphReport:
    """What ``check_graph`` found for one graph."""

    path: Path
    opset: int = 0
    operators: dict[str, int] = field(default_factory=dict)  # op type -> count
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _type_name(elem_type: int) -> str:
    import onnx

    return onnx.TensorProto.DataType.Name(elem_type)


def check_graph(path: str | os.PathLike[str], dynamic_axes: dict[str, dict[str, str]] | None = None) -> GraphReport:
    """Check one ONNX file; ``dynamic_axes`` (tensor -> {axis: name}) lists the axes allowed to vary."""
    import onnx

    path = Path(path)
    report = GraphReport(path)
    if not path.is_file():
        raise ModelError(f"ONNX file {path} does not exist")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - onnx raises DecodeError and others for a corrupt file
        raise ModelError(f"{path} is not a readable ONNX file ({type(exc).__name__}: {str(exc)[:120]})") from None
    matrix = support_matrix()
    ops = matrix["operators"]
    dynamic_axes = dynamic_axes or {}
    p = report.problems

    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    report.opset = int(opsets.get("ai.onnx", 0))
    if report.opset < MIN_OPSET:
        p.append(f"opset {report.opset} is below {MIN_OPSET}")
    if report.opset > matrix["opset_max"]:
        p.append(f"opset {report.opset} is above {matrix['opset_max']}, the newest TensorRT "
                 f"{matrix['tensorrt_version']}'s parser reads")
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # noqa: BLE001 - fall back to the stored value_info
        inferred = model
    graph = inferred.graph
    types: dict[str, str] = {}
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = _type_name(vi.type.tensor_type.elem_type)
    constants = {init.name for init in graph.initializer}
    for init in graph.initializer:
        types[init.name] = _type_name(init.data_type)
    for node in graph.node:
        if node.op_type == "Constant":
            constants.update(node.output)

    io_names = set()
    for side, values in (("input", graph.input), ("output", graph.output)):
        for vi in values:
            if vi.name in constants:
                continue
            io_names.add(vi.name)
            t = _type_name(vi.type.tensor_type.elem_type)
            if t not in IO_TYPES:
                p.append(f"graph {side} {vi.name!r} has type {t}, which TensorRT does not take")
            allowed = {int(a) for a in dynamic_axes.get(vi.name, {})}
            for axis, d in enumerate(vi.type.tensor_type.shape.dim):
                if d.HasField("dim_value") and d.dim_value > 0:
                    continue
                if axis not in allowed:
                    p.append(f"graph {side} {vi.name!r} has a non-static dimension {axis} "
                             f"({d.dim_param or 'unknown'}) that the manifest does not declare as varying")
    for name, t in types.items():
        if t == "UINT8" and name not in io_names:
            p.append(f"tensor {name!r} is UINT8 inside the graph; TensorRT takes UINT8 only as graph input or output")
            break

    counts: dict[str, int] = {}
    for node in graph.node:
        domain = node.domain or "ai.onnx"
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
        if domain not in ("ai.onnx", "ai.onnx.ml"):
            p.append(f"node {node.name or node.op_type} uses operator {domain}::{node.op_type}, a custom domain "
                     "the TensorRT parser does not know")
            continue
        entry = ops.get(node.op_type)
        if entry is None or not entry["supported"]:
            p.append(f"operator {node.op_type} ({node.name}) is not supported by TensorRT's ONNX parser")
            continue
        _check_node_types(node, entry, types, p)
        _check_node_constants(node, constants, report.opset, p)
        if node.op_type == "Resize":
            _check_resize(node, p)
    report.operators = dict(sorted(counts.items()))
    return report


def _check_node_types(node: Any, entry: dict[str, Any], types: dict[str, str], p: list[str]) -> None:
    allowed = set(entry.get("types", []))
    if node.op_type == "ConstantOfShape":
        names = list(node.output[:1])
    elif node.op_type in ("Cast", "CastLike"):
        names = [node.input[0], node.output[0]]
    else:
        i = TYPE_INPUT.get(node.op_type, 0)
        names = [node.input[i]] if len(node.input) > i and node.input[i] else []
    for name in names:
        t = types.get(name)
        if t is None:
            continue
        if MATRIX_TYPES.get(t, t) not in allowed:
            p.append(f"operator {node.op_type} ({node.name}) runs on {t}, which TensorRT supports for it only as "
                     f"{', '.join(sorted(allowed)) or 'nothing'}")


def _check_node_constants(node: Any, constants: set[str], opset: int, p: list[str]) -> None:
    rule = CONSTANT_INPUTS.get(node.op_type)
    if rule is None:
        return
    index, since = rule
    if opset >= since and len(node.input) > index and node.input[index] and node.input[index] not in constants:
        p.append(f"operator {node.op_type} ({node.name}) takes input {index} ({node.input[index]!r}) from the graph; "
                 "TensorRT needs it to be a constant")


def _check_resize(node: Any, p: list[str]) -> None:
    attrs = {a.name: a for a in node.attribute}
    mode = attrs["mode"].s.decode() if "mode" in attrs else "nearest"
    transform = attrs["coordinate_transformation_mode"].s.decode() if "coordinate_transformation_mode" in attrs \
        else "half_pixel"
    if mode not in RESIZE_MODES:
        p.append(f"Resize ({node.name}) uses mode {mode!r}; TensorRT supports nearest and linear")
    if transform not in RESIZE_TRANSFORMS:
        p.append(f"Resize ({node.name}) uses coordinate transformation {transform!r}, which TensorRT does not support")
    if "antialias" in attrs and attrs["antialias"].i:
        p.append(f"Resize ({node.name}) antialiases, which TensorRT does not support")


def check_model_dir(model_dir: str | os.PathLike[str]) -> dict[str, GraphReport]:
    """Check every graph of a model directory (manifest read and its files verified first), and the INT8 Q/DQ graphs
    its manifest records (as ``<graph> (int8)``)."""
    from pwm_model.runtime.manifest import load_manifest

    m = load_manifest(model_dir)
    m.verify_files()
    reports = {name: check_graph(m.path(name), g.dynamic_axes) for name, g in m.graphs.items()}
    for name in m.int8.get("graphs", {}):
        path = m.int8_path(name) if name in m.graphs else None
        if path is not None:
            reports[f"{name} (int8)"] = check_graph(path, m.graphs[name].dynamic_axes)
    return reports
