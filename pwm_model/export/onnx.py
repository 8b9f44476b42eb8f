"""Export a checkpoint to a model directory: ONNX graphs (static shapes, named inputs and outputs) + manifest.json
(``export/export_onnx.py`` runs ``main``).

    python export/export_onnx.py --checkpoint models/pwm-tiny --out out/pwm-tiny-onnx
    python export/export_onnx.py --checkpoint models/pwm-tiny --out out/pwm-tiny-onnx --camera-size 1920x1080

Graphs (``pwm_model/export/graphs.py``): ``ctx_encoder`` and ``dyn_encoder`` take the camera frame as uint8
rows x cols x 3 and normalise inside (with ``--camera-size`` the resize from the camera's resolution is in the graph
too, so on the vehicle the GPU does it), ``rollout`` runs the world model (history tokens + ego -> F forecast frames
+ K waypoints) in one graph, ``ctx_guide_decoder`` and ``dyn_decoder`` decode forecast previews. ``--rollout
stepwise`` writes prefill / step / plan graphs with the KV cache as input and output instead of one unrolled graph;
the unrolled graph is the default because it measured faster (bench/runtime.py prints both).

Before it reports success, every graph passes ``onnx.checker`` (full check), the TensorRT compatibility check
(``pwm check-onnx``) and a comparison with PyTorch on real frames (a held-out synthetic drive, or ``--frames`` a
rosbag2 drive or clip store): each graph is run by ONNX Runtime on the inputs the PyTorch pipeline fed it. The model
directory is written under a temporary name and renamed at the end, so a failed export leaves nothing half-written;
an existing ``engines/`` folder is carried over (its keys tell which engines still fit).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from pwm_model.errors import ConfigError, ModelError, PwmError
from pwm_model.export.surprise_calibration import (
    CALIB_FRAMES_PER_DRIVE,
    calibrate_monitors,
    check_calibration_args,
    copy_novelty_prior,
    with_camera_topic,
    write_novelty_prior,
)
from pwm_model.io_utils import file_sha256
from pwm_model.runtime.novelty import PRIOR_FILE

DEFAULT_OPSET = 17
VERIFY_FRAMES = 16  # camera frames the verification runs (covers a full history and some surprise figures)
TOKEN_AGREEMENT = 0.995  # share of token slots ONNX Runtime must reproduce (the parity requirement)
WAYPOINT_TOL_M = 1e-3  # largest waypoint difference, metres / radians
FLOAT_ATOL, FLOAT_RTOL = 1e-3, 1e-3  # feature maps: |ort - torch| <= atol + rtol * max|torch|
PIXEL_TOL, PIXEL_SHARE = 2, 0.01  # preview images: at most this share of values off by more than PIXEL_TOL levels
FP32_PREFIX = "fp32/"  # integer-valued float arithmetic (token index <-> bits, grey levels): kept in FP32
IMAGE_SCOPES = ("/prep/",)  # graphs.ImageInput: resizing kept in FP32 too
LFQ_OPS = {"Greater", "Cast", "Mul", "ReduceSum", "Reshape", "Floor", "Sub", "Unsqueeze", "Squeeze", "Flatten", "Add",
           "Transpose"}

log = logging.getLogger("pwm.export")


def parse_camera_size(text: str | None) -> tuple[int, int] | None:
    """'WxH' -> (W, H) pixels."""
    if not text:
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--camera-size must look like 1920x1080 (width x height), got {text!r}") from None
    if w < 16 or h < 16:
        raise ConfigError(f"--camera-size {text} is too small: width and height must be at least 16 px")
    return w, h


def mark_fp32_nodes(model: Any) -> int:
    """Prefix the names of the LFQ index arithmetic with ``fp32/`` (returns how many): float sums of powers of two up
    to 2**bits are exact in FP32 but not in FP16, so build_engine keeps these layers in FP32. The image resizing is
    marked too: it rounds to whole grey levels like OpenCV, which FP16 weights would not reproduce."""
    import onnx

    nodes = list(model.graph.node)
    producer = {o: n for n in nodes for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    marked: set[int] = set()

    def is_cast_to(n: Any, types: set[int]) -> bool:
        return n.op_type == "Cast" and any(a.name == "to" and a.i in types for a in n.attribute)

    ints = {onnx.TensorProto.INT64, onnx.TensorProto.INT32}
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16}
    # float -> int: walk back from each Cast-to-int through the index arithmetic (Greater, Cast, Mul, ReduceSum)
    stack = [n for n in nodes if is_cast_to(n, ints)]
    while stack:
        n = stack.pop()
        if id(n) in marked or n.op_type not in LFQ_OPS:
            continue
        marked.add(id(n))
        stack.extend(producer[i] for i in n.input if i in producer)
    # int -> float: walk forward from each Cast-to-float (bits from indices: Mul, Floor, Sub) up to the first conv
    stack = [n for n in nodes if is_cast_to(n, floats)]
    while stack:
        n = stack.pop()
        if id(n) in marked or n.op_type not in LFQ_OPS:
            continue
        marked.add(id(n))
        stack.extend(c for o in n.output for c in consumers.get(o, []))
    for n in nodes:  # image resizing (the camera -> ctx -> dyn chain): grey levels
        if n.name.startswith(IMAGE_SCOPES):
            marked.add(id(n))
    for n in nodes:
        if id(n) in marked and not n.name.startswith(FP32_PREFIX):
            n.name = FP32_PREFIX + (n.name.lstrip("/") or n.op_type)
    return len(marked)


def tensor_specs(model: Any, meaning: dict[str, str], dynamic: dict[str, dict[int, str]]) -> tuple[list, list]:
    """Named inputs and outputs of an ONNX graph as manifest entries."""
    import onnx

    from pwm_model.runtime.backends import ORT_DTYPES

    def spec(vi: Any) -> dict[str, Any]:
        t = vi.type.tensor_type
        dtype = ORT_DTYPES.get(f"tensor({_ort_type(onnx.TensorProto.DataType.Name(t.elem_type))})", "unknown")
        dyn = dynamic.get(vi.name, {})
        shape = [dyn.get(i, d.dim_param or "?") if not d.HasField("dim_value") else d.dim_value
                 for i, d in enumerate(t.shape.dim)]
        return {"name": vi.name, "shape": shape, "dtype": dtype, "meaning": meaning.get(vi.name, "")}

    inits = {i.name for i in model.graph.initializer}
    return ([spec(v) for v in model.graph.input if v.name not in inits], [spec(v) for v in model.graph.output])


def _ort_type(onnx_name: str) -> str:
    return {"FLOAT": "float", "FLOAT16": "float16", "INT64": "int64", "INT32": "int32", "UINT8": "uint8",
            "INT8": "int8", "BOOL": "bool", "DOUBLE": "double"}.get(onnx_name, onnx_name.lower())


def export_graph(g: Any, path: Path, opset: int) -> dict[str, Any]:
    """torch.onnx.export one GraphModule to ``path``, mark its FP32 nodes, check it; returns its manifest entry."""
    import onnx
    import torch

    t0 = time.monotonic()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings: shapes are static by design
        torch.onnx.export(g.module, g.example, str(path), input_names=g.inputs, output_names=g.outputs,
                          opset_version=opset, dynamo=False, do_constant_folding=True,
                          dynamic_axes=g.dynamic_axes or None)
    model = onnx.load(str(path))
    fp32 = mark_fp32_nodes(model)
    model.producer_name, model.doc_string = "pwm", g.role
    onnx.save(model, str(path))
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"graph {path.name} fails onnx.checker: {str(exc).splitlines()[0]}") from None
    inputs, outputs = tensor_specs(model, g.meaning, g.dynamic_axes)
    return {"file": path.name, "sha256": file_sha256(path), "bytes": path.stat().st_size, "role": g.role,
            "inputs": inputs, "outputs": outputs, "nodes": len(model.graph.node), "fp32_nodes": fp32,
            "dynamic_axes": {t: {str(a): n for a, n in ax.items()} for t, ax in g.dynamic_axes.items()},
            "export_s": round(time.monotonic() - t0, 2)}


def step_profiles(wm: Any) -> dict[str, list[int]]:
    """min / opt / max shapes of the step graph's KV cache input (TensorRT optimization profile)."""
    from pwm_model.export.graphs import WorldModelGraph

    g = WorldModelGraph(wm)
    tr = wm.transformer
    shape = lambda p: [tr.layers, 2, 1, tr.heads, p, tr.head_dim]  # noqa: E731
    last = g.prefix_len + (g.f - 2) * g.ld
    return {"min": shape(g.prefix_len), "opt": shape(last), "max": shape(last)}


# ----------------------------------------------------------------------------------------------------
# verification against PyTorch

def compare_graph(calls: list[tuple[dict[str, Any], dict[str, Any]]], engine: Any) -> dict[str, float]:
    """Replay a graph's recorded calls through ``engine`` and compare with the recorded (PyTorch) outputs.

    Integer outputs (tokens): the share of equal values over all calls. Float outputs: the largest absolute error,
    over the calls whose tokens all agree (past a flipped token a graph's later outputs legitimately differ; the
    flip itself is counted by the agreement). uint8 images: the share of values off by more than PIXEL_TOL.
    """
    import numpy as np

    equal: dict[str, int] = {}
    total: dict[str, int] = {}
    out: dict[str, float] = {"calls": len(calls), "calls_with_token_flips": 0}
    for inputs, ref in calls:
        got = engine.run(inputs)
        flipped = False
        for name, r in ref.items():
            if got[name].shape != r.shape:
                raise ModelError(f"output {name} has shape {got[name].shape} in ONNX Runtime and {r.shape} in PyTorch")
            if np.issubdtype(r.dtype, np.integer) and r.dtype != np.uint8:
                eq = int((got[name] == r).sum())
                equal[name], total[name] = equal.get(name, 0) + eq, total.get(name, 0) + r.size
                flipped = flipped or eq < r.size
        out["calls_with_token_flips"] += int(flipped)
        for name, r in ref.items():
            if r.dtype == np.uint8:
                off = float((np.abs(r.astype(np.int32) - got[name].astype(np.int32)) > PIXEL_TOL).mean())
                out[f"{name}.off_share"] = max(out.get(f"{name}.off_share", 0.0), off)
            elif not np.issubdtype(r.dtype, np.integer) and not flipped and r.size:
                out[f"{name}.max_abs"] = max(out.get(f"{name}.max_abs", 0.0), float(np.abs(r - got[name]).max()))
                out[f"{name}.scale"] = max(out.get(f"{name}.scale", 0.0), float(np.abs(r).max()))
    for name in equal:
        out[f"{name}.agreement"] = equal[name] / total[name] if total[name] else 1.0
    return out


def failures(graph: str, stats: dict[str, float]) -> list[str]:
    bad = []
    for key, v in stats.items():
        if "." not in key:
            continue
        name, what = key.rsplit(".", 1)
        if what == "agreement" and v < TOKEN_AGREEMENT:
            bad.append(f"{graph}.{name}: ONNX Runtime reproduces {100 * v:.2f} % of the tokens (< "
                       f"{100 * TOKEN_AGREEMENT:.1f} %)")
        elif what == "max_abs":
            tol = WAYPOINT_TOL_M if name == "waypoints" else FLOAT_ATOL + FLOAT_RTOL * stats[f"{name}.scale"]
            if v > tol:
                bad.append(f"{graph}.{name}: ONNX Runtime differs from PyTorch by {v:.2e} (> {tol:.1e})")
        elif what == "off_share" and v > PIXEL_SHARE:
            bad.append(f"{graph}.{name}: {100 * v:.1f} % of the pixels differ by more than {PIXEL_TOL} levels")
    return bad


def verify(model_dir: Path, mods: dict[str, Any], frames_source: str | None, n_frames: int,
           camera_size: tuple[int, int] | None, camera_topic: str | None = None) -> dict[str, Any]:
    """Run the PyTorch graphs over real frames, replay every call's inputs through ONNX Runtime and compare.

    ``camera_topic``: the camera topic of a ``frames_source`` bag recorded with other names than the config's,
    named as the node's ``camera_topic`` (``bag_format.camera_topics``: Image on it, CompressedImage on
    it/compressed)."""

    from pwm_model.config import RuntimeConfig
    from pwm_model.data.frames import camera_frames
    from pwm_model.export.torch_backend import TorchEngine
    from pwm_model.runtime.backends import RecordingEngine, open_engines
    from pwm_model.runtime.manifest import load_manifest
    from pwm_model.runtime.runner import PolicyRunner

    m = load_manifest(model_dir)
    m.verify_files()
    torch_engines = {n: RecordingEngine(TorchEngine(n, g.module, g.inputs, g.outputs, "cpu")) for n, g in mods.items()}
    runner = PolicyRunner(m, RuntimeConfig(backend="torch"), torch_engines)
    plans, steps = [], []
    cfg = with_camera_topic(m.config, camera_topic)
    for rgb, t_ns, ego in camera_frames(frames_source, cfg, n_frames, camera_size):
        plans.append(runner.step(rgb, t_ns, ego))
        steps.append((rgb, t_ns, ego))
    if not plans:
        raise ModelError(f"no camera frames to verify with in {frames_source}")
    if m.has_preview and len(plans[-1].forecast_tokens):
        runner.preview(plans[-1])
    ort = open_engines(m, RuntimeConfig(backend="onnxruntime", device="cpu"))
    report: dict[str, Any] = {"frames": len(plans), "source": str(frames_source or "synthetic drive (seed 0)"),
                              "graphs": {}}
    problems = []
    # end to end: the ONNX Runtime runner on the same frames (it owns the engines and frees them, also on errors)
    import numpy as np

    ort_runner = PolicyRunner(m, RuntimeConfig(backend="onnxruntime", device="cpu"), ort)
    try:
        for name, rec in torch_engines.items():
            stats = compare_graph(rec.calls, ort[name])
            report["graphs"][name] = stats
            problems += failures(name, stats)
        agree, n_tok, wp_err = 0, 0, 0.0
        for (rgb, t_ns, ego), ref in zip(steps, plans):
            p = ort_runner.step(rgb, t_ns, ego)
            agree += int((p.forecast_tokens == ref.forecast_tokens).sum())
            n_tok += ref.forecast_tokens.size
            wp_err = max(wp_err, float(np.abs(p.waypoints_xyyaw - ref.waypoints_xyyaw).max()))
    finally:
        ort_runner.close()
        runner.close()
    report["end_to_end"] = {"forecast_token_agreement": agree / n_tok if n_tok else 1.0,
                            "waypoint_max_abs_m": wp_err}
    if problems:
        raise ModelError(f"the exported graphs do not match PyTorch on {len(plans)} frames: {problems[0]}"
                         + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    return report


# ----------------------------------------------------------------------------------------------------
# the export

def source_info(checkpoint: Path) -> dict[str, Any]:
    from pwm_model.checkpoint import load_metrics

    info: dict[str, Any] = {"checkpoint": str(checkpoint.resolve())}
    for name in ("tokenizer", "world_model"):
        f = checkpoint / f"{name}.safetensors"
        if f.is_file():
            info[f"{name}_sha256"] = file_sha256(f)
    info["metrics"] = load_metrics(checkpoint)
    commands = checkpoint / "COMMANDS.md"
    if commands.is_file():
        info["commands"] = commands.read_text()
    return info


def export_model(checkpoint: str | Path, out: str | Path, *, camera_size: tuple[int, int] | None = None,
                 rollout: str = "unrolled", preview: bool = True, frames: str | None = None,
                 camera_topic: str | None = None, verify_frames: int = VERIFY_FRAMES, opset: int = DEFAULT_OPSET,
                 threads: int = 2, surprise_calib: list[str] | None = None,
                 surprise_calib_frames: int = CALIB_FRAMES_PER_DRIVE, novelty_prior: str | None = None,
                 echo: Any = print) -> dict[str, Any]:
    """Export, check and verify (with ``novelty_prior``, the training clip store, write the scene-novelty table; with
    ``surprise_calib``, held-out drives, calibrate the surprise and novelty monitors); returns the manifest written to
    ``out/manifest.json``."""
    import torch

    from pwm_model import __version__
    from pwm_model.checkpoint import load_config
    from pwm_model.export.graphs import ROLLOUT_MODES, build_graphs
    from pwm_model.io_utils import atomic_path, write_json_atomic
    from pwm_model.runtime.manifest import ENGINES_DIR, FORMAT, FORMAT_VERSION, MANIFEST_FILE
    from pwm_model.runtime.onnx_check import check_graph, support_matrix
    from pwm_model.tokenizer.model import load_tokenizer
    from pwm_model.world_model.checkpoint import load_world_model

    checkpoint, out = Path(checkpoint), Path(out)
    if opset < DEFAULT_OPSET or opset > 20:
        raise ConfigError(f"--opset must be between {DEFAULT_OPSET} and 20 (the TorchScript exporter's newest), "
                          f"got {opset}")
    if rollout not in ROLLOUT_MODES:
        raise ConfigError(f"--rollout must be one of {', '.join(ROLLOUT_MODES)}, got {rollout!r}")
    if verify_frames < 1:
        raise ConfigError("--verify-frames must be at least 1")
    torch.set_num_threads(max(1, threads))
    cfg = load_config(checkpoint)
    if surprise_calib:  # bad sources say so now, not after the export
        check_calibration_args(surprise_calib, surprise_calib_frames, cfg.world_model.forecast_frames)
    _, tok = load_tokenizer(str(checkpoint))
    wm, cfg = load_world_model(checkpoint, cfg)
    tk = cfg.tokenizer
    image_hw = (camera_size[1], camera_size[0]) if camera_size else (tk.ctx_height_px, tk.ctx_width_px)
    mods = build_graphs(tok, wm, cfg, image_hw, rollout, preview=preview)
    echo(f"exporting {checkpoint} ({cfg.preset}, {len(mods)} graphs, opset {opset}, rollout {rollout}) -> {out}")
    t_start = time.monotonic()
    with atomic_path(out, is_dir=True) as tmp:
        tmp.mkdir(parents=True)
        graphs: dict[str, Any] = {}
        for name, g in mods.items():
            entry = export_graph(g, tmp / f"{name}.onnx", opset)
            if name == "wm_step":
                entry["profiles"] = {"kv": step_profiles(wm)}
            graphs[name] = entry
            echo(f"  {name + '.onnx':24s} {entry['bytes'] / 1e6:8.2f} MB  {entry['nodes']:5d} nodes  "
                 f"{entry['export_s']:5.1f} s")
        manifest: dict[str, Any] = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "pwm_version": __version__,
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "preset": cfg.preset, "opset": opset,
            "rollout": {"mode": rollout, "decoding": "greedy (argmax inside the graph)",
                        "why": "one unrolled graph measured faster than prefill/step graphs with KV-cache I/O under "
                               "ONNX Runtime (bench/runtime.py)" if rollout == "unrolled" else "chosen with --rollout"},
            "image": {"input_rows": image_hw[0], "input_cols": image_hw[1],
                      "camera_size_in_graph": camera_size is not None, "layout": "HWC", "channels": "RGB",
                      "dtype": "uint8", "normalization": "x / 127.5 - 1 (inside the encoder graphs)",
                      "aspect": "centre-cropped to the ctx aspect ratio first where the camera's differs by more "
                                "than 2 % (pwm_model/data/contract.py), never squashed",
                      "resize": "cv2 INTER_AREA to shrink, INTER_LINEAR to enlarge, rounded to whole grey levels "
                                "after each step: camera -> ctx -> dyn",
                      "ctx_hw": [tk.ctx_height_px, tk.ctx_width_px], "dyn_hw": [tk.dyn_height_px, tk.dyn_width_px]},
            "timing": {"camera_frame_rate_hz": cfg.camera.frame_rate_hz, "frame_stride": cfg.data.frame_stride,
                       "model_dt_s": cfg.model_dt_s, "history_frames": cfg.data.history_frames,
                       "forecast_frames": cfg.world_model.forecast_frames, "num_waypoints": cfg.data.num_waypoints,
                       "waypoint_dt_s": cfg.data.waypoint_dt_s},
            "tokens": {"ctx_tokens": tk.ctx_tokens, "dyn_tokens": tk.dyn_tokens, "codebook_size": tk.codebook_size,
                       "ctx_grid": list(tk.ctx_grid), "dyn_grid": list(tk.dyn_grid)},
            "graphs": graphs,
            "tensorrt": {"fp32_layers": [f"{FP32_PREFIX}*"],
                         "operator_list": f"TensorRT {support_matrix()['tensorrt_version']}"},
            "config": cfg.to_dict(),
            "source": source_info(checkpoint),
            "verification": {"status": "pending"},
        }
        write_json_atomic(tmp / MANIFEST_FILE, manifest)
        problems = []
        for name, entry in graphs.items():
            rep = check_graph(tmp / entry["file"], entry["dynamic_axes"])
            problems += [f"{name}: {p}" for p in rep.problems]
        if problems:
            raise ModelError(f"graph {problems[0]} (TensorRT compatibility check; {len(problems)} problem(s))")
        echo(f"  onnx.checker and the TensorRT {support_matrix()['tensorrt_version']} operator check pass")
        report = verify(tmp, mods, frames, verify_frames, camera_size, camera_topic)
        manifest["verification"] = {"status": "passed", **report,
                                    "tolerances": {"token_agreement": TOKEN_AGREEMENT, "waypoint_m": WAYPOINT_TOL_M,
                                                   "float_atol": FLOAT_ATOL, "float_rtol": FLOAT_RTOL}}
        write_json_atomic(tmp / MANIFEST_FILE, manifest)
        if novelty_prior or (checkpoint / PRIOR_FILE).is_file():
            manifest["novelty"] = (write_novelty_prior(tmp, novelty_prior, checkpoint, cfg, echo) if novelty_prior
                                   else copy_novelty_prior(checkpoint, tmp, cfg, echo))
            write_json_atomic(tmp / MANIFEST_FILE, manifest)
        if surprise_calib:
            manifest.update(calibrate_monitors(tmp, surprise_calib, surprise_calib_frames, echo, camera_topic))
            write_json_atomic(tmp / MANIFEST_FILE, manifest)
        old_engines = out / ENGINES_DIR
        if old_engines.is_dir():
            shutil.move(str(old_engines), str(tmp / ENGINES_DIR))
    e2e = report["end_to_end"]
    echo(f"verified against PyTorch on {report['frames']} frames: forecast tokens "
         f"{100 * e2e['forecast_token_agreement']:.2f} % equal, waypoints within {e2e['waypoint_max_abs_m']:.1e} m")
    echo(f"wrote {out} in {time.monotonic() - t_start:.1f} s")
    return json.loads((out / MANIFEST_FILE).read_text())


def _camera_topic_arg(args: argparse.Namespace) -> str | None:
    """``--camera-topic``, or the deprecated ``--frames-topic`` with a warning on stderr."""
    if args.frames_topic is None:
        return args.camera_topic
    if args.camera_topic is not None:
        raise ConfigError("name the camera once: --frames-topic is the deprecated spelling of --camera-topic")
    print("warning: --frames-topic is deprecated: use --camera-topic TOPIC (Image on TOPIC, CompressedImage on "
          "TOPIC/compressed, as the node's camera_topic)", file=sys.stderr)
    return args.frames_topic


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--checkpoint", required=True, metavar="DIR",
                        help="checkpoint directory (config.yaml, tokenizer.safetensors, world_model.safetensors)")
    parser.add_argument("--out", required=True, metavar="MODEL_DIR", help="model directory to write")
    parser.add_argument("--camera-size", metavar="WxH",
                        help="put the resize from this camera resolution into the encoder graphs (e.g. 1920x1080)")
    parser.add_argument("--rollout", default="unrolled", choices=("unrolled", "stepwise"),
                        help="one unrolled world-model graph (default, faster) or prefill/step/plan graphs")
    parser.add_argument("--no-preview", action="store_true", help="skip the preview decoder graphs")
    parser.add_argument("--frames", metavar="SOURCE",
                        help="rosbag2 drive or clip store to verify on (default: a held-out synthetic drive)")
    parser.add_argument("--camera-topic", metavar="TOPIC",
                        help="camera topic in the --frames bag when it is not the config's, named as the node's "
                             "camera_topic: sensor_msgs/Image on TOPIC or CompressedImage on TOPIC/compressed")
    parser.add_argument("--frames-topic", metavar="TOPIC", help="deprecated spelling of --camera-topic")
    parser.add_argument("--verify-frames", type=int, default=VERIFY_FRAMES,
                        help=f"camera frames to verify on (default: {VERIFY_FRAMES})")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default: {DEFAULT_OPSET})")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for PyTorch (default: 2)")
    parser.add_argument("--surprise-calib", nargs="+", metavar="SOURCE",
                        help="held-out drives to calibrate the forecast surprise on (rosbag2 drives, folders of them, "
                             "clip stores or synthetic:SEED): percentiles and the node's default warning threshold "
                             "in manifest.json")
    parser.add_argument("--surprise-calib-frames", type=int, default=CALIB_FRAMES_PER_DRIVE, metavar="N",
                        help=f"camera frames per calibration drive (default: {CALIB_FRAMES_PER_DRIVE})")
    parser.add_argument("--novelty-prior", metavar="STORE",
                        help="the training clip store: its ctx code frequencies become the scene-novelty table "
                             "(novelty_prior.npy), how unlike the training drives a frame looks (default: the "
                             "checkpoint's own novelty_prior.npy, if it has one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        camera_topic = _camera_topic_arg(args)
        export_model(args.checkpoint, args.out, camera_size=parse_camera_size(args.camera_size),
                     rollout=args.rollout, preview=not args.no_preview, frames=args.frames,
                     camera_topic=camera_topic,
                     verify_frames=args.verify_frames, opset=args.opset, threads=args.threads,
                     surprise_calib=args.surprise_calib, surprise_calib_frames=args.surprise_calib_frames,
                     novelty_prior=args.novelty_prior)
    except PwmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
