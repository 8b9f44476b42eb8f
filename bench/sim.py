"""Closed-loop speed: simulated seconds per wall second, the expert (rendering, physics, no planner) against PWM through
``PolicyRunner`` (ONNX Runtime on the CPU here), on the same held-out scenarios, one after the other in one process.

    .venv/bin/python bench/sim.py                                  # exports models/pwm-tiny first if needed
    .venv/bin/python bench/sim.py --model out/models/pwm-tiny-onnx --scenarios 3 --seconds 10

Prints a table, then one JSON line: ``sim_rt_factor_expert``, ``sim_rt_factor_pwm`` (simulated / wall seconds),
``plan_ms_median_pwm``, ``scenarios``, ``seconds``, ``load_1min``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "out" / "models" / "pwm-tiny-onnx"),
                        help="exported model directory (default: models/pwm-tiny exported to out/models/pwm-tiny-onnx)")
    parser.add_argument("--scenarios", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--seed", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    import numpy as np

    from pwm_model.commands.demo import export_if_needed
    from pwm_model.runtime.manifest import load_manifest
    from pwm_model.sim.loop import run_drive
    from pwm_model.sim.planners import RunnerPlanner

    model = Path(args.model)
    if model == ROOT / "out" / "models" / "pwm-tiny-onnx":
        print(f"export: {export_if_needed(ROOT / 'models' / 'pwm-tiny', model)}", file=sys.stderr)
    cfg = load_manifest(model).config
    planner = RunnerPlanner(model)
    rows = {}
    plan_ms: list[float] = []
    for name, p in (("expert", None), ("pwm", planner)):
        wall = simulated = 0.0
        for seed in range(args.seed, args.seed + args.scenarios):
            t0 = time.perf_counter()
            # the expert's drive renders its camera too (keep_frames), so both loops pay for the frames
            log = run_drive(seed, p, cfg, seconds=args.seconds, keep_frames=p is None)
            wall += time.perf_counter() - t0
            simulated += len(log.ticks) * log.frame_dt_s
            if p is not None:
                plan_ms += log.plan_ms
        rows[name] = (simulated, wall)
    planner.close()
    load = os.getloadavg()[0]
    print(f"{'loop':<8} {'simulated s':>12} {'wall s':>8} {'sim s / wall s':>15}")
    for name, (sim_s, wall_s) in rows.items():
        print(f"{name:<8} {sim_s:>12.1f} {wall_s:>8.1f} {sim_s / wall_s:>15.2f}")
    print(f"PWM plan: median {np.median(plan_ms):.1f} ms over {len(plan_ms)} plans; load {load:.2f}")
    print(json.dumps({"sim_rt_factor_expert": round(rows["expert"][0] / rows["expert"][1], 3),
                      "sim_rt_factor_pwm": round(rows["pwm"][0] / rows["pwm"][1], 3),
                      "plan_ms_median_pwm": round(float(np.median(plan_ms)), 2), "scenarios": args.scenarios,
                      "seconds": args.seconds, "load_1min": round(load, 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
