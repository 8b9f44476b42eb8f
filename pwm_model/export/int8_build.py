"""``build_engine.py --precision int8``: calibrate, (optionally) find the sensitive layers, write the Q/DQ graphs and
record them in the manifest's ``int8`` section (quantize.py does the quantization itself).

    python export/build_engine.py --model M --precision int8 --calib STORE --backend onnxruntime   # Q/DQ graphs only
    python export/build_engine.py --model M --precision int8 --calib STORE                         # + TensorRT engines
    python export/build_engine.py --model M --precision int8 --calib STORE --int8-sensitivity      # + the table
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from pwm_model.errors import ConfigError, ModelError
from pwm_model.export import quantize as q
from pwm_model.io_utils import file_sha256

SENSITIVITY_FRAMES = 24  # held-out camera frames the sensitivity pass measures on
MAX_FLOAT_SHARE = 0.5  # the sensitivity pass keeps at most this share of a graph's layer groups in float


def int8_settings(args: argparse.Namespace) -> q.Int8Settings:
    s = q.Int8Settings(method=args.calib_method, per_channel=not args.per_tensor,
                       fp32_layers=tuple(sorted(set(args.fp32_layers or []))))
    s.check()
    return s


def existing_int8(m: Any, graphs: list[str]) -> dict[str, Path | None] | None:
    """The manifest's Q/DQ graphs for ``graphs`` when every one is recorded and intact, else None."""
    try:
        return {g: m.int8_path(g) for g in graphs}
    except ModelError:
        return None


def _key(g: str, sha: str, settings: q.Int8Settings, ranges: dict[str, Any]) -> Any:
    import onnxruntime as ort

    from pwm_model.runtime.engine_key import EngineKey

    return EngineKey.make("qdq", g, sha, "int8", ort.__version__, "onnx Q/DQ (int8 symmetric)", "",
                          {"settings": q.quantized_graph_digest(settings, ranges)})


def build_int8(m: Any, args: argparse.Namespace, graphs: list[str]) -> dict[str, Path | None]:
    """Write (or reuse) the Q/DQ graph of each of ``graphs`` and record them in the manifest; -> {graph: path, or None
    where the sensitivity pass found no quantized form that meets the targets and kept the graph in float}."""
    from pwm_model.export.calibration import collect_inputs
    from pwm_model.runtime.engine_key import decide, sidecar_path, write_engine

    settings = int8_settings(args)
    if args.calib is None:
        have = existing_int8(m, graphs)
        if have is not None and not args.int8_sensitivity and not args.force:
            print(f"INT8: using the Q/DQ graphs the manifest records ({', '.join(graphs)}); pass --calib STORE to "
                  "calibrate again")
            return have
        raise ConfigError("INT8 needs calibration frames: pass --calib STORE (a clip store or a rosbag2 drive)")
    if args.calib_frames < 1:
        raise ConfigError("--calib-frames must be at least 1")
    out_dir = m.engines_dir / q.INT8_DIR
    print(f"INT8 (Q/DQ, {settings.method}, {'per-channel' if settings.per_channel else 'per-tensor'} weights): "
          f"collecting calibration inputs from {args.calib} ({args.calib_frames} frames)...", flush=True)
    samples = collect_inputs(m.model_dir, args.calib, args.calib_frames, graphs)
    held_out = None
    if args.int8_sensitivity:
        print(f"INT8 sensitivity: held-out inputs from {args.int8_eval or 'a held-out synthetic drive'} "
              f"({SENSITIVITY_FRAMES} frames)", flush=True)
        held_out = collect_inputs(m.model_dir, args.int8_eval, SENSITIVITY_FRAMES, graphs)
    record: dict[str, Any] = {}
    paths: dict[str, Path | None] = {}
    extra_float: list[str] = []
    with tempfile.TemporaryDirectory(prefix="pwm-int8-") as tmp:
        for g in graphs:
            info = m.graphs[g]
            pre = Path(tmp) / f"{g}.pre.onnx"
            q.preprocess(m.path(g), pre)
            digest = q.inputs_digest(samples[g])
            cal_path = q.calibration_file(out_dir, g, info.sha256, settings.method)
            ranges, why = (None, "recalibrating (--force)") if args.force else q.load_calibration(
                cal_path, info.sha256, settings.method, digest)
            if ranges is None:
                t0 = time.monotonic()
                ranges = q.calibrate(pre, samples[g], settings.method)
                q.save_calibration(cal_path, info.sha256, settings.method, digest, len(samples[g]), str(args.calib),
                                   ranges)
                why = f"{why.rstrip('.')}: calibrated on {len(samples[g])} inputs in {time.monotonic() - t0:.1f} s"
            print(f"{g}: {why}", flush=True)
            g_settings = settings
            table: list[dict[str, Any]] = []
            if held_out is not None:
                ref = q.run_graph(pre, held_out[g])
                table = q.sensitivity(pre, ranges, settings, held_out[g], ref, label=g)
                kept, best = choose_float_groups(pre, ranges, settings, table, held_out[g], ref, q.token_target(g))
                if best is not None and best["score"] > 1.0:
                    print(f"{g}: no INT8 form meets {100 * q.token_target(g):.1f} % / {q.WAYPOINT_TARGET_M} m (best: "
                          f"tokens {100 * best['token_agreement']:.2f} %, waypoints {best['waypoint_max_m']:.4f} m "
                          f"with {len(kept)} group(s) in float): the whole graph stays in float", flush=True)
                    paths[g] = None
                    record[g] = {"float_graph": True, "source_sha256": info.sha256, "calibration": cal_path.name,
                                 "best": best, "sensitivity": table}
                    continue
                extra_float += kept
                g_settings = q.Int8Settings(settings.method, settings.per_channel,
                                            tuple(sorted(set(settings.fp32_layers) | set(kept))))
            key = _key(g, info.sha256, g_settings, ranges)
            d = decide(out_dir, key, force=args.force)
            path = d.path
            if d.action == "reuse":
                side = json.loads(sidecar_path(path).read_text())
                quantized, kept_float = list(side.get("quantized", [])), list(side.get("kept_float", []))
                print(f"{g}: {d.reason}")
            else:
                out = Path(tmp) / f"{g}.int8.onnx"
                quantized, kept_float = q.quantize(pre, out, ranges, g_settings)
                path = write_engine(out_dir, key, out.read_bytes(), {
                    "onnx": info.file, "quantized": quantized, "kept_float": kept_float,
                    "calibration": cal_path.name})
                print(f"{g}: wrote {path.relative_to(m.model_dir)}: {len(quantized)} layers int8, "
                      f"{len(kept_float)} kept in float", flush=True)
            paths[g] = path
            record[g] = {"file": str(path.relative_to(m.model_dir)), "sha256": file_sha256(path),
                         "source_sha256": info.sha256, "quantized": quantized, "kept_float": kept_float,
                         "calibration": cal_path.name, "sensitivity": table}
    kept_records = {g: r for g, r in m.int8.get("graphs", {}).items()
                    if g not in record and g in m.graphs and r.get("source_sha256") == m.graphs[g].sha256}
    m.record_int8({"settings": {"method": settings.method, "per_channel": settings.per_channel,
                                "fp32_layers": sorted(set(settings.fp32_layers) | set(extra_float)),
                                "activations": "int8 symmetric per tensor", "weights": "int8 symmetric"},
                   "calibration": {"source": str(args.calib), "frames": int(args.calib_frames)},
                   "graphs": {**kept_records, **record}})
    if extra_float:
        print(f"INT8 sensitivity kept in float: --fp32-layers {' '.join(repr(p) for p in sorted(set(extra_float)))}")
    return paths


def choose_float_groups(pre: Path, ranges: dict[str, Any], settings: q.Int8Settings, table: list[dict[str, Any]],
                        held_out: list[dict[str, Any]], reference: list[dict[str, Any]],
                        token_target: float = q.TOKEN_TARGET) -> tuple[list[str], dict[str, float] | None]:
    """Keep the most damaging groups in float, worst first, until the whole quantized graph meets the targets (or
    ``MAX_FLOAT_SHARE`` of the groups are float); prints each step and returns the smallest set that scored best
    (quantization errors interact: one more float group does not always help) with its damage."""
    kept: list[str] = []
    best: tuple[dict[str, float], list[str]] | None = None
    limit = int(MAX_FLOAT_SHARE * len(table))
    with tempfile.TemporaryDirectory(prefix="pwm-int8-choose-") as tmp:
        out = Path(tmp) / "try.onnx"
        for row in [None, *table]:
            if row is not None:
                if len(kept) >= limit:
                    break
                kept.append(row["group"])
            trial = q.Int8Settings(settings.method, settings.per_channel, tuple(settings.fp32_layers) + tuple(kept))
            try:
                q.quantize(pre, out, ranges, trial)
            except ConfigError:
                break
            d = q.damage(reference, q.run_graph(out, held_out), token_target)
            print(f"  {pre.name.split('.')[0]} with {len(kept)} group(s) in float: tokens "
                  f"{100 * d['token_agreement']:6.2f} %, waypoints {d['waypoint_max_m']:.4f} m", flush=True)
            if best is None or d["score"] < best[0]["score"] - 1e-9:
                best = (d, list(kept))
            if d["score"] <= 1.0:
                break
    return (best[1], best[0]) if best is not None else ([], None)
