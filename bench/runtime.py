"""Runtime speed: the full planning cycle per new camera frame, ONNX Runtime vs PyTorch, ring buffer vs re-encoding.

One model directory (exported here from ``--checkpoint``, default the tiny preset with random weights when
models/pwm-tiny is absent; or ``--model``), one synthetic drive, every frame planned by:

- ``ort``: PolicyRunner, backend onnxruntime (CPU), the token ring buffer: each frame encoded once;
- ``torch``: PolicyRunner, backend torch: the same modules in eager PyTorch (the reference), same threads;
- ``reencode``: the same ONNX Runtime graphs re-encoding the whole history every cycle (H+1 ctx and H dyn encodes,
  each history frame against its own predecessor) before the same rollout: what the ring buffer saves;
- ``int8``: PolicyRunner, backend onnxruntime, ``precision: int8``: the Q/DQ graphs of ``build_engine.py --precision
  int8`` (calibrated on ``--calib``, default another synthetic drive; with the sensitivity pass on a third drive
  unless ``--int8-all``), each runner keeping its own history.

The runners are stepped alternately frame by frame, so load changes on the machine hit all of them alike. Also timed:
the world model as one unrolled graph vs prefill/step/plan graphs with the KV cache as input/output (the measurement
behind export_onnx.py's default). Figures: ``ort_cycle_ms`` / ``torch_cycle_ms`` (median cycle, wall clock),
``ort_vs_torch`` (their ratio), ``*_cycle_cpu_ms`` (the cycle's CPU time: what it costs without waiting for other
processes), ``cache_speedup`` (encoding work per new frame: re-encoding / ring buffer), ``cache_speedup_cycle`` (the
same for the whole cycle, rollout included), ``cycle_p50_ms`` / ``cycle_p99_ms`` (ONNX Runtime cycle, wall clock),
``ort_int8_cycle_ms`` / ``int8_speedup`` (fp32 / int8 median cycle), ``int8_token_agreement`` (share of forecast
tokens equal to fp32's, each runner on its own history) and ``int8_waypoint_max_delta_m``, and
``int8_gemm_speedup`` (one MatMul of the rollout's shape, fp32 / int8: what the CPU's int8 kernels give at all).
Prints a table, then, last, one JSON line.

    .venv/bin/python bench/runtime.py                      # tiny preset, 1 thread per runtime
    .venv/bin/python bench/runtime.py --checkpoint models/pwm-tiny --frames 100 --threads 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pwm_model.io_utils import cpu_name  # noqa: E402

TARGETS = {"ort_vs_torch": 1.5, "cache_speedup": 3.0, "cycle_p50_ms": 100.0, "int8_speedup": 1.8,
           "int8_token_agreement": 0.98}
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "models" / "pwm-tiny"


def random_checkpoint(out: Path, preset_name: str) -> Path:
    """A checkpoint of the preset with randomly initialised weights (same shapes and cost as a trained one)."""
    import torch

    from pwm_model.checkpoint import save_checkpoint
    from pwm_model.config import preset
    from pwm_model.tokenizer.model import Tokenizer
    from pwm_model.world_model.model import PolicyWorldModel

    torch.manual_seed(0)
    cfg = preset(preset_name)
    save_checkpoint(out, cfg, {"tokenizer": Tokenizer(cfg.tokenizer), "world_model": PolicyWorldModel(cfg)})
    return out


def reencode_cycle(runner, images: list[np.ndarray], ego_vec: np.ndarray) -> tuple[float, float]:
    """Plan from the last H+1 prepared images by re-encoding all of them; -> (encode ms, total ms)."""
    e = runner.engines
    guide_names = [n.name for n in runner.manifest.graphs["dyn_encoder"].inputs if n.name != "image_rgb"]
    t0 = time.perf_counter()
    ctx = [e["ctx_encoder"].run({"image_rgb": img}) for img in images]  # guide frame + H history frames
    dyn = [e["dyn_encoder"].run({"image_rgb": images[i + 1], **{n: ctx[i][n] for n in guide_names}})["dyn_tokens"]
           for i in range(len(images) - 1)]
    t1 = time.perf_counter()
    hist = np.concatenate(dyn)[None]  # (1, H, Ld)
    runner._rollout(ctx[-1]["ctx_tokens"], hist, ego_vec[None])
    t2 = time.perf_counter()
    return (t1 - t0) * 1e3, (t2 - t0) * 1e3


def build_int8_graphs(model_dir: Path, args: argparse.Namespace) -> None:
    """The Q/DQ graphs of ``build_engine.py --precision int8 --backend onnxruntime`` in ``model_dir``."""
    from pwm_model.export.engines import make_parser
    from pwm_model.export.int8_build import build_int8
    from pwm_model.runtime.manifest import load_manifest

    argv = ["--model", str(model_dir), "--backend", "onnxruntime", "--precision", "int8", "--calib", args.calib,
            "--calib-frames", str(args.calib_frames)] + ([] if args.int8_all else ["--int8-sensitivity", "--int8-eval",
                                                                                  "synthetic:9"])
    m = load_manifest(model_dir)
    print(f"INT8: quantizing {model_dir.name} (calibration {args.calib}, {args.calib_frames} frames) ...", flush=True)
    build_int8(m, make_parser().parse_args(argv), list(m.graphs))


def gemm_int8_speedup(threads: int, rows: int = 128, k: int = 256, n: int = 1024, repeats: int = 50) -> float:
    """fp32 / int8 median time of one MatMul of the rollout's shape in ONNX Runtime, the int8 one as the Q/DQ graphs
    write it (symmetric S8 activations and weights): what this CPU's int8 kernels give before any graph overhead."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, k])
    y_info = helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, n])
    fp32 = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "fp32", [x_info], [y_info],
                             [numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), "w")])
    qdq = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
         helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
         helper.make_node("DequantizeLinear", ["wq", "sw", "zw"], ["wd"]),
         helper.make_node("MatMul", ["xd", "wd"], ["y"])], "int8", [x_info], [y_info],
        [numpy_helper.from_array(rng.integers(-127, 128, (k, n)).astype(np.int8), "wq"),
         numpy_helper.from_array(np.array(0.02, np.float32), "sx"),
         numpy_helper.from_array(np.array(0, np.int8), "zx"),
         numpy_helper.from_array(np.array(0.01, np.float32), "sw"),
         numpy_helper.from_array(np.array(0, np.int8), "zw")])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sessions = [ort.InferenceSession(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
                                     .SerializeToString(), so, providers=["CPUExecutionProvider"]) for g in (fp32, qdq)]
    x = {"x": rng.standard_normal((rows, k)).astype(np.float32)}
    times: list[list[float]] = [[], []]
    for s in sessions:
        s.run(None, x)
    for _ in range(repeats):  # alternately, so load changes hit both
        for i, s in enumerate(sessions):
            t = time.perf_counter()
            s.run(None, x)
            times[i].append(time.perf_counter() - t)
    return float(np.median(times[0]) / np.median(times[1]))


def time_rollouts(model_dir: Path, stepwise_dir: Path, threads: int, repeats: int) -> tuple[float, float]:
    """Median ms of the world model: one unrolled graph vs prefill/step/plan graphs (same inputs, ONNX Runtime)."""
    from pwm_model.config import RuntimeConfig
    from pwm_model.runtime.runner import PolicyRunner, ego_vector
    from pwm_model.runtime.types import EgoInput

    rt = RuntimeConfig(backend="onnxruntime", intra_op_threads=threads)
    out = []
    for d in (model_dir, stepwise_dir):
        r = PolicyRunner.from_model_dir(d, rt)
        cfg = r.config
        rng = np.random.default_rng(0)
        ctx = rng.integers(0, cfg.tokenizer.codebook_size, (1, cfg.tokenizer.ctx_tokens))
        hist = rng.integers(0, cfg.tokenizer.codebook_size, (1, cfg.data.history_frames, cfg.tokenizer.dyn_tokens))
        ego = ego_vector(EgoInput(8.0, 0.0, 1), r.manifest.ego_width)[None]
        r._rollout(ctx, hist, ego)
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            r._rollout(ctx, hist, ego)
            ts.append((time.perf_counter() - t) * 1e3)
        out.append(float(np.median(ts)))
        r.close()
    return out[0], out[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="checkpoint directory (default: models/pwm-tiny if present, else the "
                                             "tiny preset with random weights)")
    parser.add_argument("--model", help="an exported model directory to time instead of exporting one")
    parser.add_argument("--preset", default="tiny", help="preset of the random-weight checkpoint (default: tiny)")
    parser.add_argument("--frames", type=int, default=100, help="camera frames to plan (default: 100)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for each runtime (default: 1)")
    parser.add_argument("--repeats", type=int, default=10, help="repeats of the rollout-graph timing (default: 10)")
    parser.add_argument("--calib", default="synthetic:7",
                        help="INT8 calibration frames: clip store, rosbag2 drive or synthetic:SEED (default: "
                             "synthetic:7, not the drive planned here)")
    parser.add_argument("--calib-frames", type=int, default=64, help="INT8 calibration frames (default: 64)")
    parser.add_argument("--int8-all", action="store_true",
                        help="quantize every layer (no sensitivity pass keeping the most damaging groups in float)")
    parser.add_argument("--no-int8", action="store_true", help="skip the INT8 rows")
    args = parser.parse_args(argv)

    import torch

    from pwm_model.config import RuntimeConfig
    from pwm_model.data.frames import camera_frames
    from pwm_model.runtime.runner import PolicyRunner, ego_vector

    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        from pwm_model.export.onnx import export_model

        quiet = lambda *a, **k: None  # noqa: E731
        ckpt = Path(args.checkpoint) if args.checkpoint else (
            DEFAULT_CHECKPOINT if (DEFAULT_CHECKPOINT / "world_model.safetensors").is_file() else None)
        if args.model:
            model_dir = Path(args.model)
            ckpt = ckpt or Path(json.loads((model_dir / "manifest.json").read_text())["source"]["checkpoint"])
        else:
            if ckpt is None:
                ckpt = random_checkpoint(tmp / "ckpt", args.preset)
                print(f"no trained checkpoint: the {args.preset} preset with random weights (same cost)")
            model_dir = tmp / "model"
            print(f"exporting {ckpt} ...", flush=True)
            export_model(ckpt, model_dir, verify_frames=2, threads=args.threads, echo=quiet)
        stepwise_dir = tmp / "model_stepwise"
        export_model(ckpt, stepwise_dir, rollout="stepwise", preview=False, verify_frames=2, threads=args.threads,
                     echo=quiet)

        if not args.no_int8:
            if args.model:  # the Q/DQ graphs go into the model directory: work on a copy
                import shutil

                shutil.copytree(model_dir, tmp / "model_int8", ignore=shutil.ignore_patterns("tensorrt"))
                model_dir = tmp / "model_int8"
            build_int8_graphs(model_dir, args)
        base = RuntimeConfig(backend="onnxruntime", device="cpu", intra_op_threads=args.threads)
        ort = PolicyRunner.from_model_dir(model_dir, base)
        int8 = None if args.no_int8 else PolicyRunner.from_model_dir(model_dir,
                                                                     dataclasses.replace(base, precision="int8"))
        ref = PolicyRunner.from_model_dir(model_dir, dataclasses.replace(base, backend="torch"), checkpoint=ckpt)
        naive = PolicyRunner.from_model_dir(model_dir, base)
        cfg = ort.config
        runners = [r for r in (ort, ref, naive, int8) if r is not None]
        for r in runners:
            r.warm_up()
        h, stride = cfg.data.history_frames, cfg.data.frame_stride
        images: list[np.ndarray] = []
        rows = {k: [] for k in ("ort", "torch", "reencode", "ort_encode", "reencode_encode", "ort_rollout", "ort_cpu",
                                "torch_cpu", "int8")}
        int8_equal = int8_tokens = 0
        int8_wp_m = 0.0
        print(f"planning {args.frames} frames of a synthetic drive ({cfg.camera.width_px}x{cfg.camera.height_px}, "
              f"{cfg.camera.frame_rate_hz:g} Hz), {args.threads} thread(s) each ...", flush=True)
        for rgb, t_ns, ego in camera_frames(None, cfg, args.frames):
            t, c = time.perf_counter(), time.thread_time()
            p = ort.step(rgb, t_ns, ego)
            rows["ort"].append((time.perf_counter() - t) * 1e3)
            rows["ort_cpu"].append((time.thread_time() - c) * 1e3)
            rows["ort_encode"].append(p.timings_ms["ctx_encoder"] + p.timings_ms["dyn_encoder"])
            rows["ort_rollout"].append(p.timings_ms["rollout"])
            if int8 is not None:
                t = time.perf_counter()
                q = int8.step(rgb, t_ns, ego)
                rows["int8"].append((time.perf_counter() - t) * 1e3)
                int8_equal += int((q.forecast_tokens == p.forecast_tokens).sum())
                int8_tokens += int(p.forecast_tokens.size)
                int8_wp_m = max(int8_wp_m, float(np.abs(q.waypoints_xyyaw - p.waypoints_xyyaw).max()))
            t, c = time.perf_counter(), time.thread_time()
            ref.step(rgb, t_ns, ego)
            rows["torch"].append((time.perf_counter() - t) * 1e3)
            rows["torch_cpu"].append((time.thread_time() - c) * 1e3)
            images.append(naive.prepare(rgb))
            window = images[-1 - h * stride::stride]  # the guide frame + H history frames, model_dt apart
            if len(window) == h + 1:
                enc_ms, total_ms = reencode_cycle(naive, window, ego_vector(ego, naive.manifest.ego_width))
                rows["reencode_encode"].append(enc_ms)
                rows["reencode"].append(total_ms)
        unrolled_ms, stepwise_ms = time_rollouts(model_dir, stepwise_dir, args.threads, args.repeats)
        n_ctx, n_dyn = ort.stats["ctx_encodes"], ort.stats["dyn_encodes"]
        for r in runners:
            r.close()

    med = {k: float(np.median(v)) if v else float("nan") for k, v in rows.items()}
    p50, p99 = float(np.percentile(rows["ort"], 50)), float(np.percentile(rows["ort"], 99))
    res = {
        "preset": cfg.preset, "frames": len(rows["ort"]), "threads": args.threads, "cpu": cpu_name(),
        "cpu_cores": os.cpu_count(), "load_avg_start": round(load_start, 2),
        "load_avg_end": round(os.getloadavg()[0], 2),
        "ort_cycle_ms": round(med["ort"], 2), "torch_cycle_ms": round(med["torch"], 2),
        "ort_vs_torch": round(med["torch"] / med["ort"], 3),
        "ort_cycle_cpu_ms": round(med["ort_cpu"], 2), "torch_cycle_cpu_ms": round(med["torch_cpu"], 2),
        "reencode_cycle_ms": round(med["reencode"], 2),
        "ort_encode_ms": round(med["ort_encode"], 2), "reencode_encode_ms": round(med["reencode_encode"], 2),
        "cache_speedup": round(med["reencode_encode"] / med["ort_encode"], 3),
        "cache_speedup_cycle": round(med["reencode"] / med["ort"], 3),
        "cycle_p50_ms": round(p50, 2), "cycle_p99_ms": round(p99, 2),
        "rollout_unrolled_ms": round(unrolled_ms, 2), "rollout_stepwise_ms": round(stepwise_ms, 2),
        "encodes_per_frame": round((n_ctx + n_dyn) / max(1, len(rows["ort"])), 3),
    }
    if int8 is not None:
        res.update({"ort_int8_cycle_ms": round(med["int8"], 2), "int8_speedup": round(med["ort"] / med["int8"], 3),
                    "int8_token_agreement": round(int8_equal / max(1, int8_tokens), 4),
                    "int8_waypoint_max_delta_m": round(int8_wp_m, 4),
                    "int8_gemm_speedup": round(gemm_int8_speedup(args.threads), 3),
                    "int8_layers": "all" if args.int8_all else "sensitivity pass"})
    print(f"\nmachine: {res['cpu']} ({res['cpu_cores']} cores), load average {res['load_avg_start']} -> "
          f"{res['load_avg_end']}, {args.threads} thread(s) per runtime, preset {cfg.preset}")
    print(f"{'cycle per new frame':42s} {'median ms':>10s}")
    print(f"{'onnxruntime, ring buffer':42s} {med['ort']:10.1f}   (encode {med['ort_encode']:.1f}, rollout "
          f"{med['ort_rollout']:.1f}; p50 {p50:.1f}, p99 {p99:.1f})")
    print(f"{'torch (eager reference), ring buffer':42s} {med['torch']:10.1f}")
    print(f"{'  CPU time of the cycle: onnxruntime':42s} {med['ort_cpu']:10.1f}   (torch {med['torch_cpu']:.1f}; "
          "what the cycle costs without waiting for other processes)")
    print(f"{'onnxruntime, re-encoding the history':42s} {med['reencode']:10.1f}   (encode "
          f"{med['reencode_encode']:.1f})")
    if int8 is not None:
        print(f"{'onnxruntime int8 (Q/DQ), ring buffer':42s} {med['int8']:10.1f}   (fp32 / int8 "
              f"{res['int8_speedup']:.2f}; forecast tokens equal {100 * res['int8_token_agreement']:.1f} %, "
              f"waypoints max delta {res['int8_waypoint_max_delta_m']:.3f} m)")
        print(f"{'  one 128x256x1024 MatMul: fp32 / int8':42s} {res['int8_gemm_speedup']:10.2f}   (this CPU's int8 "
              "kernels, symmetric S8 as in the Q/DQ graphs, before any graph overhead)")
    print(f"{'world model: one unrolled graph':42s} {unrolled_ms:10.1f}")
    print(f"{'world model: prefill/step/plan graphs':42s} {stepwise_ms:10.1f}")
    print(f"ort_vs_torch {res['ort_vs_torch']:.2f} (target >= {TARGETS['ort_vs_torch']}), cache_speedup "
          f"{res['cache_speedup']:.2f} (encoding; target >= {TARGETS['cache_speedup']}), whole cycle "
          f"{res['cache_speedup_cycle']:.2f}, cycle p50 {p50:.1f} ms (target <= {TARGETS['cycle_p50_ms']:g})")
    if int8 is not None:
        print(f"int8_speedup {res['int8_speedup']:.2f} (target >= {TARGETS['int8_speedup']}), int8_token_agreement "
              f"{res['int8_token_agreement']:.3f} (target >= {TARGETS['int8_token_agreement']})")
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
