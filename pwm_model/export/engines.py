"""Build inference engines for a model directory: TensorRT 10 plans, or ONNX Runtime optimized graphs
(``export/build_engine.py`` runs ``main``).

    python export/build_engine.py --model out/pwm-small-onnx                       # TensorRT, runtime.precision
    python export/build_engine.py --model out/pwm-small-onnx --precision int8 --calib out/store_small
    python export/build_engine.py --model out/pwm-tiny-onnx --precision int8 --calib out/store --backend onnxruntime
    python export/build_engine.py --model out/pwm-tiny-onnx --backend onnxruntime  # anywhere, no GPU needed

INT8 (``--precision int8 --calib STORE``) is explicit quantization: ONNX Runtime's static quantization writes a Q/DQ
graph of every graph, calibrated on the store's frames (``pwm_model/export/quantize.py``; ``--calib-method``,
``--int8-sensitivity`` to find the layers that must stay in float), under ``MODEL_DIR/engines/int8/`` and in the
manifest's ``int8`` section. ONNX Runtime runs those graphs as they are (``runtime.precision: int8``); TensorRT builds
them with INT8 + FP16 and no calibrator. ``--trt-implicit-calibration`` keeps TensorRT's deprecated implicit
calibration (an entropy calibrator on the fp32 graph) for TensorRT 8 users.

TensorRT: each graph is parsed with the ONNX parser, built with a builder config (workspace limit, FP16 / INT8 (the
Q/DQ graph, or the deprecated entropy calibration with a calibration cache), per-layer FP32 fallback for the layers
matching ``--fp32-layers`` and the manifest's list, DLA with GPU fallback, optimization profiles for varying axes, a
persisted timing cache) and stored under ``MODEL_DIR/engines/tensorrt/`` as ``<graph>.<precision>.<key>.plan`` with a
JSON sidecar. The key hashes TensorRT version + GPU name and compute capability + precision + ONNX sha256 + builder
flags: an engine whose key matches is reused, anything else is rebuilt with a log line saying what changed. Files
are written to temporary names and renamed. Progress and elapsed time are printed while building.

ONNX Runtime: ``--backend onnxruntime`` writes each graph optimized offline (level "extended", portable across
machines of one CPU architecture) to ``MODEL_DIR/engines/onnxruntime/`` under the same kind of key; the runtime uses
them when their key matches.

Without TensorRT, ``--backend tensorrt`` exits with status 2 and one sentence naming what to install.
"""

from __future__ import annotations

import argparse
import fnmatch
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from pwm_model.errors import ConfigError, ModelError, PwmError

WORKSPACE_MB = 2048  # TensorRT workspace memory pool limit (tactics needing more are skipped)
OPT_LEVEL = 3  # TensorRT builder optimization level 0..5 (3 is TensorRT's default)
HEARTBEAT_S = 10.0  # print the elapsed build time this often
log = logging.getLogger("pwm.build")


def build_flags(args: argparse.Namespace, manifest_fp32: list[str], profiles: dict[str, Any]) -> dict[str, Any]:
    """The builder settings that enter the engine key."""
    flags: dict[str, Any] = {"workspace_mb": int(args.workspace_mb), "opt_level": int(args.opt_level),
                             "fp32_layers": sorted(set(manifest_fp32) | set(args.fp32_layers or []))}
    if args.dla is not None:
        flags["dla_core"] = int(args.dla)
    if profiles:
        flags["profiles"] = profiles
    return flags


def check_args(args: argparse.Namespace) -> None:
    if args.backend == "onnxruntime" and args.precision == "fp16":
        raise ConfigError("--backend onnxruntime builds fp32 and int8 (Q/DQ) graphs; fp16 is a TensorRT precision")
    if args.trt_implicit_calibration and (args.backend != "tensorrt" or args.precision != "int8"):
        raise ConfigError("--trt-implicit-calibration applies to --backend tensorrt --precision int8 only")
    if args.workspace_mb < 16:
        raise ConfigError("--workspace-mb must be at least 16")
    if not 0 <= args.opt_level <= 5:
        raise ConfigError("--opt-level must be between 0 and 5")
    if args.dla is not None and args.dla < 0:
        raise ConfigError("--dla must name a DLA core (0 or 1 on Orin)")


# ----------------------------------------------------------------------------------------------------
# ONNX Runtime

def build_onnxruntime(m: Any, args: argparse.Namespace, graphs: list[str]) -> list[Path]:
    import onnxruntime as ort

    from pwm_model.runtime.backends import ort_key, ort_providers
    from pwm_model.runtime.engine_key import decide, write_engine

    out_dir = m.engines_dir / "onnxruntime"
    device = args.device or "cpu"
    providers = ort_providers(device)
    paths = []
    for g in graphs:
        key = ort_key(m, g, device)
        d = decide(out_dir, key, force=args.force)
        print(f"{g}: {d.reason}")
        if d.action == "reuse":
            paths.append(d.path)
            continue
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory() as tmp:
            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
            so.optimized_model_filepath = str(Path(tmp) / f"{g}.onnx")
            ort.InferenceSession(str(m.path(g)), so, providers=providers)
            data = (Path(tmp) / f"{g}.onnx").read_bytes()
        path = write_engine(out_dir, key, data, {"build_s": round(time.monotonic() - t0, 2), "onnx": m.graphs[g].file})
        print(f"{g}: wrote {path.relative_to(m.model_dir)} ({len(data) / 1e6:.1f} MB, "
              f"{time.monotonic() - t0:.1f} s)")
        paths.append(path)
    return paths


# ----------------------------------------------------------------------------------------------------
# TensorRT

class Heartbeat:
    """Prints the elapsed time every HEARTBEAT_S seconds while a build runs (and the phase TensorRT reports)."""

    def __init__(self, graph: str) -> None:
        self.graph, self.phase, self.t0 = graph, "parsing", time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            print(f"  {self.graph}: building... {time.monotonic() - self.t0:5.0f} s ({self.phase})", flush=True)


def progress_monitor(trt: Any, beat: Heartbeat) -> Any | None:
    """A ``tensorrt.IProgressMonitor`` that records the current phase for the heartbeat (TensorRT >= 10)."""
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            beat.phase = phase_name if not parent_phase else f"{parent_phase} / {phase_name}"

        def step_complete(self, phase_name: str, step: int) -> bool:
            return True  # never cancel

        def phase_finish(self, phase_name: str) -> None:
            pass

    return Monitor()


def timing_cache_path(args: argparse.Namespace, m: Any, gpu: str, cc: str, version: str) -> Path:
    if args.timing_cache:
        return Path(args.timing_cache)
    slug = "".join(c if c.isalnum() else "-" for c in gpu).strip("-").lower()
    return m.engines_dir / "tensorrt" / f"timing-{version}-{slug}-sm{cc.replace('.', '')}.cache"


def mark_fp32_layers(trt: Any, network: Any, patterns: list[str]) -> int:
    """Force layers whose names match ``patterns`` (fnmatch) to compute and output in FP32; returns how many."""
    floats = {trt.float32, trt.float16}
    n = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if not any(fnmatch.fnmatchcase(layer.name, p) for p in patterns):
            continue
        try:
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                if layer.get_output(j).dtype in floats:
                    layer.set_output_type(j, trt.float32)
            n += 1
        except (TypeError, ValueError, RuntimeError):  # layers without a settable precision (casts to ints)
            continue
    return n


def build_tensorrt(m: Any, args: argparse.Namespace, graphs: list[str]) -> list[Path]:
    from pwm_model.runtime.engine_key import EngineKey, decide, write_engine
    from pwm_model.runtime.trt_engine import gpu_facts, import_cudart, import_tensorrt

    trt = import_tensorrt()
    cudart = import_cudart()
    version = str(trt.__version__)
    gpu, cc = gpu_facts()
    precision = args.precision or m.config.runtime.precision
    engine_dir = m.engines_dir / "tensorrt"
    engine_dir.mkdir(parents=True, exist_ok=True)
    cache_file = timing_cache_path(args, m, gpu, cc, version)
    print(f"TensorRT {version} on {gpu} (sm_{cc.replace('.', '')}), {precision}, engines in {engine_dir}")
    calib_inputs: dict[str, list[dict[str, Any]]] | None = None
    explicit = precision == "int8" and not args.trt_implicit_calibration
    qdq: dict[str, Path | None] = {}
    if explicit:
        from pwm_model.export.int8_build import build_int8

        qdq = build_int8(m, args, graphs)
    elif precision == "int8":
        log.warning("--trt-implicit-calibration: TensorRT's implicit INT8 calibration is deprecated since TensorRT 10; "
                    "prefer the Q/DQ graphs (drop the flag)")
    paths = []
    for g in graphs:
        info = m.graphs[g]
        flags = build_flags(args, m.fp32_layers(), info.profiles)
        onnx_path = m.path(g)
        if explicit and qdq.get(g) is not None:
            from pwm_model.io_utils import file_sha256

            # the key keeps the fp32 graph's sha256 (what the runtime looks engines up by); the Q/DQ graph is a flag
            onnx_path = qdq[g]
            flags["quantization"] = f"explicit Q/DQ {file_sha256(qdq[g])}"
        elif explicit:
            flags["quantization"] = "none: the sensitivity pass kept this graph in float (FP16 kernels)"
        calib_cache = None
        if precision == "int8" and not explicit:
            from pwm_model.export.calibration import calibration_cache_path

            calib_cache = calibration_cache_path(engine_dir, g, info.sha256)
            if args.force and calib_cache.exists():
                calib_cache.unlink()
            if calib_cache.is_file():
                import hashlib

                flags["calibration"] = hashlib.sha256(calib_cache.read_bytes()).hexdigest()
            elif args.calib is None:
                raise ConfigError(f"INT8 needs calibration frames for {g}: pass --calib STORE (a clip store or a "
                                  "rosbag2 drive)")
            else:
                flags["calibration"] = f"frames {Path(args.calib).resolve()} x{args.calib_frames}"
        key = EngineKey.make("tensorrt", g, info.sha256, precision, version, gpu, cc, flags)
        d = decide(engine_dir, key, force=args.force)
        print(f"{g}: {d.reason}", flush=True)
        if d.action == "reuse":
            paths.append(d.path)
            continue
        if calib_cache is not None and calib_inputs is None and not calib_cache.is_file():
            from pwm_model.export.calibration import collect_inputs

            print(f"  collecting INT8 calibration inputs from {args.calib} ({args.calib_frames} frames)...", flush=True)
            calib_inputs = collect_inputs(m.model_dir, args.calib, args.calib_frames)
        t0 = time.monotonic()
        plan, matched = _build_one(trt, cudart, onnx_path, g, precision, flags, cache_file, calib_cache,
                                   (calib_inputs or {}).get(g, []))
        if calib_cache is not None and calib_cache.is_file():  # key the engine by the table it was calibrated with
            import hashlib

            flags["calibration"] = hashlib.sha256(calib_cache.read_bytes()).hexdigest()
            key = EngineKey.make("tensorrt", g, info.sha256, precision, version, gpu, cc, flags)
        elapsed = time.monotonic() - t0
        path = write_engine(engine_dir, key, plan, {"build_s": round(elapsed, 1),
                                                    "onnx": str(onnx_path.relative_to(m.model_dir)),
                                                    "fp32_layers_matched": matched, "timing_cache": str(cache_file)})
        print(f"{g}: built {path.name} ({len(plan) / 1e6:.1f} MB) in {elapsed:.1f} s; {matched} layer(s) kept in FP32",
              flush=True)
        paths.append(path)
    return paths


def _build_one(trt: Any, cudart: Any, onnx_path: Path, g: str, precision: str, flags: dict[str, Any], cache_file: Path,
               calib_cache: Path | None, calib_samples: list[dict[str, Any]]) -> tuple[bytes, int]:
    from pwm_model.io_utils import write_bytes_atomic

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch: the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    with Heartbeat(g) as beat:
        if not parser.parse_from_file(str(onnx_path)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise ModelError(f"TensorRT's ONNX parser rejects {onnx_path}: {errors[0] if errors else 'no detail'}")
        beat.phase = "configuring"
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(flags["workspace_mb"]) << 20)
        config.builder_optimization_level = int(flags["opt_level"])
        monitor = progress_monitor(trt, beat)
        if monitor is not None:
            config.progress_monitor = monitor
        timing = config.create_timing_cache(cache_file.read_bytes() if cache_file.is_file() else b"")
        config.set_timing_cache(timing, False)
        if precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
        matched = 0
        if precision != "fp32":
            matched = mark_fp32_layers(trt, network, list(flags["fp32_layers"]))
            if matched:
                config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        if "dla_core" in flags:
            if precision == "fp32":
                raise ConfigError("the DLA runs FP16 or INT8 only: pass --precision fp16 or int8 with --dla")
            config.default_device_type = trt.DeviceType.DLA
            config.DLA_core = int(flags["dla_core"])
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        profile = None
        for name, shapes in flags.get("profiles", {}).items():
            profile = profile or builder.create_optimization_profile()
            profile.set_shape(name, tuple(shapes["min"]), tuple(shapes["opt"]), tuple(shapes["max"]))
        if profile is not None:
            config.add_optimization_profile(profile)
        calibrator = None
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)  # with Q/DQ nodes in the graph: explicit quantization
        if calib_cache is not None:  # the deprecated implicit calibration
            from pwm_model.export.calibration import make_calibrator

            calibrator = make_calibrator(trt, cudart, calib_samples, calib_cache)
            config.int8_calibrator = calibrator
            if profile is not None:
                config.set_calibration_profile(profile)
        beat.phase = "building"
        try:
            plan = builder.build_serialized_network(network, config)
        finally:
            if calibrator is not None:
                calibrator.free()
    if plan is None:
        raise ModelError(f"TensorRT failed to build an engine for {g} (see its messages above)")
    write_bytes_atomic(cache_file, bytes(config.get_timing_cache().serialize()))
    return bytes(plan), matched


# ----------------------------------------------------------------------------------------------------

def build(args: argparse.Namespace) -> list[Path]:
    from pwm_model.runtime.manifest import load_manifest
    from pwm_model.runtime.onnx_check import check_graph

    check_args(args)
    m = load_manifest(args.model)
    m.verify_files()
    graphs = args.graphs or list(m.graphs)
    unknown = [g for g in graphs if g not in m.graphs]
    if unknown:
        raise ConfigError(f"--graphs names {unknown[0]!r}, which {args.model} does not have "
                          f"(it has {', '.join(m.graphs)})")
    if args.backend == "onnxruntime":
        if args.precision == "int8":
            from pwm_model.export.int8_build import build_int8

            return [p for p in build_int8(m, args, graphs).values() if p is not None]
        return build_onnxruntime(m, args, graphs)
    from pwm_model.runtime.trt_engine import import_cudart, import_tensorrt

    import_tensorrt()  # say what to install before anything else
    import_cudart()
    for g in graphs:
        rep = check_graph(m.path(g), m.graphs[g].dynamic_axes)
        if rep.problems:
            raise ModelError(f"{m.path(g)} would not build with TensorRT: {rep.problems[0]} (run `pwm check-onnx "
                             f"{args.model}` for the full list)")
    return build_tensorrt(m, args, graphs)


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, metavar="MODEL_DIR", help="model directory from export_onnx.py")
    p.add_argument("--backend", default="tensorrt", choices=("tensorrt", "onnxruntime"),
                   help="tensorrt (default) or onnxruntime (offline-optimized graphs)")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"),
                   help="engine precision (default: the model's runtime.precision)")
    p.add_argument("--calib", metavar="STORE", help="clip store (or rosbag2 drive) with INT8 calibration frames")
    p.add_argument("--calib-frames", type=int, default=64, help="camera frames for INT8 calibration (default: 64)")
    p.add_argument("--calib-method", choices=("minmax", "entropy", "percentile"), default="minmax",
                   help="INT8 activation range calibration (default: minmax)")
    p.add_argument("--per-tensor", action="store_true", help="INT8 weights per tensor (default: per output channel)")
    p.add_argument("--int8-sensitivity", action="store_true",
                   help="quantize one layer group at a time, print the damage on held-out frames, and keep the most "
                        "damaging groups in float")
    p.add_argument("--int8-eval", metavar="SOURCE",
                   help="held-out frames for --int8-sensitivity (default: a held-out synthetic drive)")
    p.add_argument("--trt-implicit-calibration", action="store_true",
                   help="deprecated: TensorRT's implicit INT8 calibration (TensorRT 8) instead of the Q/DQ graphs")
    p.add_argument("--timing-cache", metavar="PATH", help="TensorRT timing cache file (default: one per TensorRT "
                                                          "version and GPU under engines/tensorrt)")
    p.add_argument("--workspace-mb", type=int, default=WORKSPACE_MB,
                   help=f"TensorRT workspace limit in MiB (default: {WORKSPACE_MB})")
    p.add_argument("--opt-level", type=int, default=OPT_LEVEL,
                   help=f"TensorRT builder optimization level 0..5 (default: {OPT_LEVEL})")
    p.add_argument("--dla", type=int, metavar="N", help="build for DLA core N with GPU fallback (fp16 / int8)")
    p.add_argument("--fp32-layers", nargs="+", metavar="PATTERN", default=[],
                   help="keep layers whose names match these fnmatch patterns in FP32 (added to the manifest's); with "
                        "int8 they are left unquantized")
    p.add_argument("--graphs", nargs="+", metavar="NAME", help="build only these graphs (default: all)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="onnxruntime provider to optimize for (default: cpu)")
    p.add_argument("--force", action="store_true", help="rebuild (and recalibrate) even when the key matches")
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    t0 = time.monotonic()
    try:
        paths = build(args)
    except PwmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing half-written was kept", file=sys.stderr)
        return 130
    print(f"{len(paths)} engine(s) ready in {time.monotonic() - t0:.1f} s")
    return 0

