"""``pwm check-onnx``: will TensorRT's ONNX parser take a model directory's graphs? (needs no TensorRT)"""

from __future__ import annotations

import argparse

HELP = "check a model directory's ONNX graphs against TensorRT's ONNX-parser support list (no TensorRT needed)"
DESCRIPTION = """Check every graph of a model directory (or one .onnx file) for TensorRT:

  pwm check-onnx out/pwm-tiny-onnx

Operators against the TensorRT ONNX-parser support list kept in pwm_model/runtime/trt_onnx_ops.json (with the
TensorRT version it was read from), opset >= 17, static input/output shapes (except axes the manifest declares as
varying), supported dtypes, and inputs TensorRT needs as constants. Exit status 0 when every graph passes, 1 when a
problem was found (each is listed), 2 when the directory or file cannot be read. export/export_onnx.py runs the same
check before it reports success."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL_DIR", help="model directory (manifest.json + graphs) or one .onnx file")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pwm_model.runtime.onnx_check import check_graph, check_model_dir, support_matrix

    path = Path(args.model)
    reports = {path.stem: check_graph(path)} if path.suffix == ".onnx" else check_model_dir(path)
    matrix = support_matrix()
    print(f"TensorRT ONNX-parser support list: TensorRT {matrix['tensorrt_version']} ({matrix['source']})")
    print(f"{'graph':26s} {'opset':>5s} {'nodes':>6s} {'op types':>8s}  result")
    bad = 0
    for name, rep in reports.items():
        nodes = sum(rep.operators.values())
        print(f"{name:26s} {rep.opset:5d} {nodes:6d} {len(rep.operators):8d}  "
              f"{'ok' if rep.ok else f'{len(rep.problems)} problem(s)'}")
        for problem in rep.problems:
            print(f"    - {problem}")
        bad += not rep.ok
    if bad:
        print(f"{bad} of {len(reports)} graph(s) would not build with TensorRT as they are")
        return 1
    print(f"all {len(reports)} graph(s) use only operators, dtypes and shapes TensorRT's ONNX parser supports")
    return 0
