"""``pwm check-parity``: does a backend (TensorRT on the device) reproduce the reference on real frames?"""

from __future__ import annotations

import argparse

HELP = "compare a backend's plans with a reference backend on the same camera frames (tokens, waypoints)"
DESCRIPTION = """Run a model directory with two backends on the same camera frames and compare their plans:

  pwm check-parity out/pwm-tiny-onnx --backend tensorrt --precision fp16      # on the Jetson
  pwm check-parity out/pwm-tiny-onnx --backend onnxruntime --reference torch  # on a workstation

Reports the share of equal forecast tokens and the largest waypoint difference (each runner keeps its own history,
so differences compound as they would on the vehicle). Frames: --frames, a rosbag2 drive or clip store; default a
held-out synthetic drive. Exit status 0 when the figures are within the tolerances (defaults per precision: fp32
99.5 % / 1e-3 m, fp16 95 % / 0.05 m, int8 85 % / 0.25 m), 1 when not, 2 on unusable input. Prints a table, then,
last, one JSON line."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL_DIR", help="model directory (manifest.json + graphs)")
    parser.add_argument("--backend", default="tensorrt", choices=("tensorrt", "onnxruntime", "torch"),
                        help="backend to check (default: tensorrt)")
    parser.add_argument("--reference", default="onnxruntime", choices=("onnxruntime", "torch"),
                        help="reference backend, fp32 (default: onnxruntime on the CPU)")
    parser.add_argument("--precision", choices=("fp32", "fp16", "int8"),
                        help="TensorRT engine precision (default: the model's runtime.precision)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="onnxruntime / torch device of the backend checked")
    parser.add_argument("--frames", metavar="SOURCE", help="rosbag2 drive or clip store (default: synthetic drive)")
    parser.add_argument("--max-frames", type=int, default=40, help="camera frames to compare (default: 40)")
    parser.add_argument("--checkpoint", metavar="DIR", help="checkpoint for the torch backend (default: the one the "
                                                           "manifest records)")
    parser.add_argument("--min-agreement", type=float, help="least share of equal forecast tokens")
    parser.add_argument("--max-waypoint-m", type=float, help="largest waypoint difference (m / rad)")


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from pwm_model.data.frames import camera_frames
    from pwm_model.errors import ConfigError
    from pwm_model.eval.parity import TOLERANCES, compare_runners
    from pwm_model.runtime.manifest import load_manifest
    from pwm_model.runtime.runner import PolicyRunner

    if args.max_frames < 1:
        raise ConfigError("--max-frames must be at least 1")
    m = load_manifest(args.model)
    base = m.config.runtime
    precision = args.precision or (base.precision if args.backend == "tensorrt" else "fp32")
    cand_rt = dataclasses.replace(base, backend=args.backend, precision=precision,
                                  device=args.device or ("cuda" if args.backend == "tensorrt" else base.device))
    ref_rt = dataclasses.replace(base, backend=args.reference, precision="fp32", device="cpu")
    min_agree, max_wp = TOLERANCES[precision]
    min_agree = args.min_agreement if args.min_agreement is not None else min_agree
    max_wp = args.max_waypoint_m if args.max_waypoint_m is not None else max_wp
    with PolicyRunner.from_model_dir(args.model, cand_rt, checkpoint=args.checkpoint) as cand, \
            PolicyRunner.from_model_dir(args.model, ref_rt, checkpoint=args.checkpoint) as ref:
        cand.warm_up()
        ref.warm_up()
        rep = compare_runners(cand, ref, camera_frames(args.frames, m.config, args.max_frames))
    ok = rep.passes(min_agree, max_wp)
    s = rep.summary()
    print(f"{args.backend} ({precision}) vs {args.reference} (fp32) on {rep.frames} frames of "
          f"{args.frames or 'a synthetic drive'}")
    print(f"  forecast tokens equal   {100 * s['forecast_token_agreement']:8.3f} %   (need >= {100 * min_agree:.1f} %)")
    print(f"  waypoints max |diff|    {s['waypoint_max_abs_m']:10.2e} m (need <= {max_wp:.0e} m)")
    print(f"  waypoints mean |diff|   {s['waypoint_mean_abs_m']:10.2e} m")
    print(f"  cycle p50               {s['candidate_p50_ms']:8.1f} ms vs {s['reference_p50_ms']:.1f} ms")
    print("parity ok" if ok else "parity NOT within tolerance")
    print(json.dumps({"backend": args.backend, "reference": args.reference, "precision": precision, **s,
                      "min_agreement": min_agree, "max_waypoint_m": max_wp, "ok": ok}))
    return 0 if ok else 1
