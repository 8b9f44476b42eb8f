"""``pwm gen-data``: write synthetic drives as rosbag2 bags, plus ``scenes.json`` describing them."""

from __future__ import annotations

import argparse

HELP = "generate synthetic driving data (rosbag2 drives from the embedded world)"
DESCRIPTION = """Simulate drives in the embedded synthetic world and write each as a rosbag2 bag
OUT/drive_seed<SEED>/ (seeds SEED .. SEED+SCENES-1) with the canonical topics: front camera, CameraInfo, Odometry,
route command, ground-truth boxes and the scenario label. OUT/scenes.json lists every drive with its seed, length,
frame count and scenario-label spans. OUT is written to a temporary sibling and renamed at the end: a failed run
leaves nothing behind. An existing OUT is replaced only if it is empty or an earlier gen-data output.

--seed is required: it decides whether the drives are training or held-out data. Seeds >= 1000 are for
training (the shipped model: 1000-1079), seeds < 1000 are held out for evaluation and never trained on: 0 is the
demo's sample drive, 0-7 the tokenizer's held-out drives, 1-16 and 100-147 the world model's (docs/DATA.md).

  pwm gen-data --out out/sample_drive --scenes 1 --seconds 30 --seed 0
  pwm gen-data --out out/train_drives --scenes 200 --seconds 60 --seed 1000 --compressed
  pwm gen-data --out out/cut_ins --scenes 5 --seconds 20 --seed 10 --scenario cut_in --preset small
  pwm gen-data --out out/ood_snow --scenes 8 --seconds 30 --seed 0 --shift snow

--shift renders the drives in conditions the training world never samples, for out-of-distribution checks: snow
(snow-covered ground, pale overcast sky), sodium (night under sodium street lamps: an orange monochrome) or
camera_mount (the camera 4 deg further down, rolled 3 deg and 0.35 m higher; the bags' CameraInfo is unchanged).
The traffic, ego motion, labels and commands are those of the same seeds without --shift.
"""

def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pwm_model.commands.common import add_config_arguments
    from pwm_model.data.synthetic.names import SCENARIOS, SHIFTS, TRAIN_SEED_MIN

    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (bags and scenes.json)")
    parser.add_argument("--scenes", type=int, default=1, metavar="N", help="number of drives (default: 1)")
    parser.add_argument("--seconds", type=float, default=30.0, metavar="S", help="length of each drive (default: 30)")
    parser.add_argument("--seed", type=int, default=None, metavar="X",
                        help=f"seed of the first drive (required): {TRAIN_SEED_MIN} and up for training data, "
                             f"below {TRAIN_SEED_MIN} for held-out drives (0 is the demo drive)")
    parser.add_argument("--scenario", choices=SCENARIOS, default=None,
                        help="restrict every drive to one scenario family (default: a mix)")
    parser.add_argument("--shift", choices=SHIFTS, default=None,
                        help="render every drive under a distribution shift the training world never samples, for "
                             "out-of-distribution checks (default: none)")
    parser.add_argument("--compressed", action="store_true",
                        help="store the camera as sensor_msgs/CompressedImage jpeg (default: raw rgb8 Image)")
    parser.add_argument("--format", choices=("mcap", "sqlite3"), default="mcap", help="rosbag2 storage (default: mcap)")
    parser.add_argument("--width", type=int, default=None, metavar="W",
                        help="camera width in px (default: the preset's camera.width_px)")
    parser.add_argument("--height", type=int, default=None, metavar="H",
                        help="camera height in px (default: the preset's camera.height_px)")
    add_config_arguments(parser)


def _check_args(args: argparse.Namespace) -> None:
    import math

    from pwm_model.data.synthetic.names import TRAIN_SEED_MIN
    from pwm_model.data.synthetic.world import MAX_SECONDS
    from pwm_model.errors import ConfigError

    if args.seed is None:
        raise ConfigError(f"--seed is required: --seed {TRAIN_SEED_MIN} (or higher) for training drives, a seed below "
                          f"{TRAIN_SEED_MIN} for held-out evaluation drives (0 is the demo drive, 0-7 and 1-16 the "
                          "held-out drives of the shipped model: never train on them)")
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


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from pwm_model.commands.common import config_from_args
    from pwm_model.data.synthetic.drives import write_synthetic_drives

    _check_args(args)
    cfg = config_from_args(args)
    camera = dataclasses.replace(cfg.camera, width_px=args.width or cfg.camera.width_px,
                                 height_px=args.height or cfg.camera.height_px)
    write_synthetic_drives(args.out, cfg, camera, seeds=list(range(args.seed, args.seed + args.scenes)),
                           seconds=args.seconds, scenario=args.scenario, compressed=args.compressed,
                           storage=args.format, shift=args.shift)
    return 0
