"""Surprise that means something: how often it warns on nominal held-out drives, how well it flags shifted ones.

A calibrated model directory (``export_onnx.py --surprise-calib DRIVES``) plans every camera frame of each drive with
the fp32 ONNX Runtime ``PolicyRunner`` (history reset between drives), as the node does, and keeps each plan's
forecast surprise. Nominal drives are held-out drives of the training world (other seeds than the calibration's);
shifted drives are the same kind rendered in a condition the training never saw (``pwm gen-data --shift``).

Figures: ``nominal_warn_frac`` (share of nominal plans above the model's calibrated threshold),
``nominal_warn_period_frac`` (share of the node's diagnostic periods, ``--period-s`` of camera time each, whose last
plan is above it: the node's WARN rule), per shift ``auroc_<shift>`` (frame-level surprise, shifted vs nominal plans;
0.5 = no separation, 1 = complete) and ``warn_frac_<shift>``, and ``auroc_min`` (the worst shift); the same for the
scene novelty (runtime/novelty.py) prefixed ``novelty_`` when the model has a novelty prior. Prints a table per
monitor, then, last, one JSON line.

    .venv/bin/python bench/surprise.py --model out/tiny-cal --nominal out/v2/drives_nominal \\
        --shifted snow=out/v2/drives_snow sodium=out/v2/drives_sodium camera_mount=out/v2/drives_mount
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pwm_model.config import RuntimeConfig  # noqa: E402
from pwm_model.data.frames import camera_frames  # noqa: E402
from pwm_model.errors import PwmError  # noqa: E402
from pwm_model.eval.surprise_stats import auroc, period_warn_share  # noqa: E402
from pwm_model.export.surprise_calibration import expand_sources  # noqa: E402
from pwm_model.runtime.runner import PolicyRunner  # noqa: E402


def drive_monitors(runner: PolicyRunner, source: str, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(t_ns (N,), [surprise, novelty] (N, 2)) of every plan on one drive, the history reset first; NaN where no
    forecast covered the frame (surprise) or the model has no novelty prior."""
    runner.reset()
    t, v = [], []
    for rgb, t_ns, ego in camera_frames(source, runner.config, frames):
        plan = runner.step(rgb, t_ns, ego)
        t.append(t_ns)
        v.append((plan.surprise, plan.novelty))
    return np.asarray(t, np.int64), np.asarray(v, np.float64).reshape(-1, 2)


def collect(runner: PolicyRunner, sources: list[str], frames: int, label: str
            ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    times, values = [], []
    for i, src in enumerate(sources):
        t0 = time.monotonic()
        t, v = drive_monitors(runner, src, frames)
        times.append(t)
        values.append(v)
        print(f"  {label} [{i + 1}/{len(sources)}] {Path(src).name}: median surprise {np.nanmedian(v[:, 0]):.3f}, "
              f"novelty {np.nanmedian(v[:, 1]) if np.isfinite(v[:, 1]).any() else float('nan'):.3f} "
              f"({time.monotonic() - t0:.0f} s)", file=sys.stderr)
    return times, values


def _finite(values: list[np.ndarray], column: int) -> np.ndarray:
    v = np.concatenate([x[:, column] for x in values])
    return v[np.isfinite(v)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model directory with a surprise calibration")
    p.add_argument("--nominal", nargs="+", required=True, metavar="SOURCE", help="nominal held-out drives")
    p.add_argument("--shifted", nargs="*", default=[], metavar="NAME=SOURCE", help="shifted drives, by shift name")
    p.add_argument("--frames", type=int, default=300, help="camera frames per drive (default: 300)")
    p.add_argument("--period-s", type=float, default=1.0, help="the node's diagnostics period (default: 1 s)")
    p.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads (default: 2)")
    p.add_argument("--save", metavar="NPZ", help="also write every plan's stamp and monitors, by drive set, here")
    args = p.parse_args(argv)
    if args.period_s <= 0 or args.frames < 2:
        p.error("--period-s must be positive and --frames at least 2")
    try:
        shifted = {}
        for item in args.shifted:
            name, sep, src = item.partition("=")
            if not sep or not name or not src:
                raise SystemExit(f"error: --shifted takes NAME=SOURCE, got {item!r}")
            shifted[name] = expand_sources([src])
        nominal = expand_sources(args.nominal)
        runner = PolicyRunner.from_model_dir(args.model, RuntimeConfig(backend="onnxruntime", device="cpu",
                                                                       intra_op_threads=args.threads))
        warn = runner.manifest.surprise_warn(-1.0)
        if warn is None:
            raise SystemExit(f"error: {args.model} has no surprise calibration: export it with --surprise-calib")
        with runner:
            nt, ns = collect(runner, nominal, args.frames, "nominal")
            shifted_runs = {name: collect(runner, srcs, args.frames, name) for name, srcs in shifted.items()}
            shifted_values = {name: run[1] for name, run in shifted_runs.items()}
    except PwmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.save:
        arrays = {"nominal_t_ns": np.concatenate(nt), "nominal": np.concatenate(ns),
                  "nominal_drive": np.concatenate([np.full(len(t), i) for i, t in enumerate(nt)])}
        for name, (times, values) in shifted_runs.items():
            arrays.update({f"{name}_t_ns": np.concatenate(times), name: np.concatenate(values),
                           f"{name}_drive": np.concatenate([np.full(len(t), i) for i, t in enumerate(times)])})
        np.savez(args.save, **arrays)
    monitors = [("surprise", 0, warn, runner.manifest.surprise_calibration)]
    if runner.manifest.novelty_warn() is not None:
        monitors.append(("novelty", 1, runner.manifest.novelty_warn(), runner.manifest.novelty_calibration))
    out: dict[str, object] = {"model": args.model, "nominal_drives": len(nominal)}
    for monitor, col, threshold, cal in monitors:
        nom = _finite(ns, col)
        warned = [period_warn_share(t, v[:, col], threshold, args.period_s) for t, v in zip(nt, ns)]
        periods_warned, periods = sum(w for w, _ in warned), sum(n for _, n in warned)
        key = "" if monitor == "surprise" else "novelty_"
        out.update({f"{key}warn": threshold, f"{key}nominal_median": round(float(np.median(nom)), 4),
                    f"{key}nominal_warn_frac": round(float((nom > threshold).mean()), 4),
                    f"{key}nominal_warn_period_frac": round(periods_warned / max(periods, 1), 4)})
        rows = [("nominal", len(nominal), nom.size, float(np.median(nom)), float((nom > threshold).mean()),
                 float("nan"))]
        aurocs = []
        for name, values in shifted_values.items():
            v = _finite(values, col)
            a = auroc(v, nom)
            aurocs.append(a)
            out.update({f"{key}auroc_{name}": round(a, 4), f"{key}median_{name}": round(float(np.median(v)), 4),
                        f"{key}warn_frac_{name}": round(float((v > threshold).mean()), 4)})
            rows.append((name, len(values), v.size, float(np.median(v)), float((v > threshold).mean()), a))
        if aurocs:
            out[f"{key}auroc_min"] = round(min(aurocs), 4)
        print(f"{monitor} ({cal.get('definition')}, {cal.get('unit', '')}); warning threshold {threshold:.3f} = "
              f"p{cal.get('warn_percentile')} of {cal.get('values')} calibration plans")
        print(f"{'drives':<16}{'n':>4}{'plans':>8}{'median':>9}{'> warn':>9}{'AUROC vs nominal':>18}")
        for name, n, plans, med, frac, a in rows:
            print(f"{name:<16}{n:>4}{plans:>8}{med:>9.3f}{100 * frac:>8.1f}%{'' if np.isnan(a) else f'{a:.3f}':>18}")
        print(f"nominal diagnostic periods ({args.period_s:g} s) with the {monitor} WARN: {periods_warned} of "
              f"{periods} ({100 * periods_warned / max(periods, 1):.1f} %)\n")
    print(json.dumps({k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in out.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
