"""``pwm gen-data``: write synthetic drives as rosbag2 bags, plus ``scenes.json`` describing them."""

from __future__ import annotations

import argparse

HELP = "generate synthetic driving data (rosbag2 drives from the embedded world)"
DESCRIPTION = """Simulate drives in the embedded synthetic world and write each as a rosbag2 bag
OUT/drive_seed<SEED>/ (seeds SEED .. SEED+SCENES-1) with the canonical topics: front camera, CameraInfo, Odometry,
route command, ground-truth boxes and the scenario label. OUT/scenes.json lists every drive with its seed, length,
frame count and scenario-label spans. OUT is written to a temporary sibling and renamed at the end: a failed run
leaves nothing behind. An existing OUT is replaced only if it is empty or an earlier gen-data output.

Seeds >= 1000 are for training data, seeds < 1000 for held-out evaluation (seed 0 is the demo drive).

  pwm gen-data --out out/sample_drive --scenes 1 --seconds 30 --seed 0
  pwm gen-data --out out/train_drives --scenes 200 --seconds 60 --seed 1000 --compressed
  pwm gen-data --out out/cut_ins --scenes 5 --seconds 20 --seed 10 --scenario cut_in --preset small
"""

MANIFEST = "scenes.json"
MANIFEST_FORMAT = "pwm-synthetic-drives"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pwm_model.commands.common import add_config_arguments
    from pwm_model.data.synthetic.names import SCENARIOS

    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (bags and scenes.json)")
    parser.add_argument("--scenes", type=int, default=1, metavar="N", help="number of drives (default: 1)")
    parser.add_argument("--seconds", type=float, default=30.0, metavar="S", help="length of each drive (default: 30)")
    parser.add_argument("--seed", type=int, default=0, metavar="X", help="seed of the first drive (default: 0)")
    parser.add_argument("--scenario", choices=SCENARIOS, default=None,
                        help="restrict every drive to one scenario family (default: a mix)")
    parser.add_argument("--compressed", action="store_true",
                        help="store the camera as sensor_msgs/CompressedImage jpeg (default: raw rgb8 Image)")
    parser.add_argument("--format", choices=("mcap", "sqlite3"), default="mcap", help="rosbag2 storage (default: mcap)")
    parser.add_argument("--width", type=int, default=None, metavar="W",
                        help="camera width in px (default: the preset's camera.width_px)")
    parser.add_argument("--height", type=int, default=None, metavar="H",
                        help="camera height in px (default: the preset's camera.height_px)")
    add_config_arguments(parser)


def label_spans(labels: list[str], frame_dt_s: float) -> list[dict[str, float | str]]:
    """Runs of equal labels as ``{"label", "start_s", "end_s"}`` (end exclusive, relative to the first frame)."""
    spans: list[dict[str, float | str]] = []
    for i, label in enumerate(labels):
        if spans and spans[-1]["label"] == label:
            spans[-1]["end_s"] = round((i + 1) * frame_dt_s, 6)
        else:
            spans.append({"label": label, "start_s": round(i * frame_dt_s, 6), "end_s": round((i + 1) * frame_dt_s, 6)})
    return spans


def _check_args(args: argparse.Namespace) -> None:
    import math

    from pwm_model.data.synthetic.world import MAX_SECONDS
    from pwm_model.errors import ConfigError

    if args.scenes < 1:
        raise ConfigError(f"--scenes must be at least 1, got {args.scenes}")
    if not math.isfinite(args.seconds) or not 0 < args.seconds <= MAX_SECONDS:
        raise ConfigError(f"--seconds must be in (0, {MAX_SECONDS:g}], got {args.seconds}")
    if args.seed < 0:
        raise ConfigError(f"--seed must not be negative, got {args.seed}")
    for name in ("width", "height"):
        value = getattr(args, name)
        if value is not None and value < 16:
            raise ConfigError(f"--{name} must be at least 16 px, got {value}")


def _check_out(out) -> None:  # noqa: ANN001 - Path
    """Refuse to replace anything but an empty folder or an earlier gen-data output."""
    import json

    from pwm_model.errors import DataError

    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise DataError(f"refusing to overwrite {out}: it exists and is not a folder")
    if not any(out.iterdir()):
        return
    try:
        ours = json.loads((out / MANIFEST).read_text()).get("format") == MANIFEST_FORMAT
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise DataError(f"refusing to overwrite {out}: it is not empty and holds no gen-data {MANIFEST}")


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import sys
    import time
    from pathlib import Path

    from pwm_model.commands.common import config_from_args
    from pwm_model.data.bag import write_drive
    from pwm_model.data.synthetic import EPOCH_NS, TRAIN_SEED_MIN, World
    from pwm_model.io_utils import atomic_path, write_json_atomic

    _check_args(args)
    cfg = config_from_args(args)
    camera = dataclasses.replace(cfg.camera, width_px=args.width or cfg.camera.width_px,
                                 height_px=args.height or cfg.camera.height_px)
    camera.validate("camera")
    out = Path(args.out)
    _check_out(out)
    seeds = list(range(args.seed, args.seed + args.scenes))
    if seeds[0] < TRAIN_SEED_MIN <= seeds[-1]:
        print(f"note: seeds {seeds[0]}..{seeds[-1]} mix evaluation (< {TRAIN_SEED_MIN}) and training seeds",
              file=sys.stderr)
    n_frames = max(1, round(args.seconds * camera.frame_rate_hz))
    frame_dt = 1.0 / camera.frame_rate_hz
    scenes = []
    start = time.monotonic()
    with atomic_path(out, is_dir=True) as tmp:
        tmp.mkdir(parents=True)
        for i, seed in enumerate(seeds):
            t0 = time.monotonic()
            world = World(seed, camera, scenario=args.scenario, seconds=args.seconds)
            renderer = world.renderer()
            labels: list[str] = []
            commands: list[int] = []

            def samples(world: World = world, renderer=renderer, labels: list[str] = labels,  # noqa: ANN001
                        commands: list[int] = commands):
                for k in range(n_frames):
                    if k:
                        world.step_frame()
                    sample = world.sample(renderer)
                    labels.append(sample.scenario)
                    commands.append(sample.command)
                    yield sample

            name = f"drive_seed{seed}"
            write_drive(tmp / name, samples(), camera, cfg.data.topics, compressed=args.compressed,
                        storage=args.format)
            spans = label_spans(labels, frame_dt)
            scenes.append({
                "drive": name, "seed": seed, "split": "train" if seed >= TRAIN_SEED_MIN else "eval",
                "seconds": round(n_frames * frame_dt, 6), "frames": len(labels), "scenario": args.scenario,
                "time_of_day": world.appearance.time_of_day, "lanes_forward": world.road.n_forward,
                "lanes_oncoming": world.road.n_oncoming, "lane_changes": int(world.ego.lane_changes_done),
                "labels": spans,
            })
            summary = ", ".join(f"{k} {sum(1 for x in labels if x == k) * frame_dt:.1f} s"
                                for k in dict.fromkeys(labels))
            print(f"[{i + 1}/{len(seeds)}] {name}: {len(labels)} frames, {camera.width_px}x{camera.height_px} px, "
                  f"{world.appearance.time_of_day}; {summary} ({time.monotonic() - t0:.1f} s)", file=sys.stderr,
                  flush=True)
        write_json_atomic(tmp / MANIFEST, {
            "format": MANIFEST_FORMAT, "version": 1, "preset": cfg.preset, "camera": dataclasses.asdict(camera),
            "topics": dataclasses.asdict(cfg.data.topics), "storage": args.format, "compressed": bool(args.compressed),
            "epoch_ns": EPOCH_NS,
            "scenes": scenes,
        })
    print(f"wrote {len(scenes)} drive(s), {sum(s['frames'] for s in scenes)} frames, to {out} in "
          f"{time.monotonic() - start:.1f} s", file=sys.stderr)
    return 0
