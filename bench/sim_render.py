"""Synthetic camera rendering speed: frames per second at 64x128, 128x256 and 256x448 (HxW).

Each size renders a drive's frames in sequence; the world advances one frame between renders (the simulation step
is cheap and timed separately). Wall-clock fps is the headline; the process CPU time per frame is printed beside it
because the machine's other load (shown) slows the wall clock. Prints a table, then one JSON line:
``{"fps_64x128": ..., "fps_256x448": ..., ...}``. Run: ``.venv/bin/python bench/sim_render.py [--frames N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from pwm_model.config import CameraConfig
from pwm_model.data.synthetic import World

SIZES = ((64, 128), (128, 256), (256, 448))  # (H, W): the model's ctx size (tiny), the tiny camera, paper ctx


def bench_size(height_px: int, width_px: int, frames: int, seeds: tuple[int, ...]) -> dict[str, float]:
    render_s, step_s, render_cpu_s, n = 0.0, 0.0, 0.0, 0
    for seed in seeds:
        world = World(seed, CameraConfig(width_px=width_px, height_px=height_px), seconds=frames / 10.0 + 1.0)
        renderer = world.renderer()
        world.render(renderer)  # warm-up (first-call allocations)
        for _ in range(frames):
            t0 = time.perf_counter()
            world.step_frame()
            t1, c1 = time.perf_counter(), time.process_time()
            img = world.render(renderer)
            t2, c2 = time.perf_counter(), time.process_time()
            render_cpu_s += c2 - c1
            assert img.shape == (height_px, width_px, 3)
            step_s += t1 - t0
            render_s += t2 - t1
            n += 1
    return {"render_fps": n / render_s, "step_ms": 1000.0 * step_s / n, "render_ms": 1000.0 * render_s / n,
            "fps_with_step": n / (render_s + step_s), "render_cpu_ms": 1000.0 * render_cpu_s / n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=150, help="frames per seed (default 150)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3], help="drive seeds (mixed scenes)")
    args = parser.parse_args()
    np.random.seed(0)
    results = {}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {platform.machine()} {platform.processor() or ''} cpus={os.cpu_count()} "
          f"python={platform.python_version()} load(1 min)={load:.1f}")
    print(f"{'size (HxW)':>12} {'render ms':>10} {'render fps':>11} {'cpu ms':>7} {'step ms':>8} "
          f"{'fps incl. step':>15}")
    for h, w in SIZES:
        r = bench_size(h, w, args.frames, tuple(args.seeds))
        results[f"{h}x{w}"] = r
        print(f"{h:>5}x{w:<6} {r['render_ms']:>10.2f} {r['render_fps']:>11.1f} {r['render_cpu_ms']:>7.2f} "
              f"{r['step_ms']:>8.2f} {r['fps_with_step']:>15.1f}")
    out = {"fps_64x128": round(results["64x128"]["render_fps"], 1),
           "fps_256x448": round(results["256x448"]["render_fps"], 1),
           "fps_128x256": round(results["128x256"]["render_fps"], 1),
           "fps_64x128_with_step": round(results["64x128"]["fps_with_step"], 1),
           "fps_256x448_with_step": round(results["256x448"]["fps_with_step"], 1),
           "cpu_ms_64x128": round(results["64x128"]["render_cpu_ms"], 2),
           "cpu_ms_256x448": round(results["256x448"]["render_cpu_ms"], 2),
           "step_ms": round(results["64x128"]["step_ms"], 3),
           "cpus": os.cpu_count(), "load_1min": round(load, 2)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
