"""``pwm convert``: turn nuScenes or NAVSIM / OpenScene data into rosbag2 drives that ``pwm index`` makes clips of."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

HELP = "convert nuScenes or NAVSIM/OpenScene data into rosbag2 drives"
DESCRIPTION = """Convert a real driving dataset into rosbag2 drives (one bag per scene or log) with the canonical
topics: front camera (CompressedImage jpeg by default), CameraInfo, Odometry, route command and boxes.
Then make clips of them with `pwm index OUT --out STORE` and the camera flags it prints (docs/DATA.md).

  pwm convert nuscenes --dataroot /data/nuscenes --version v1.0-mini --out drives/nuscenes
  pwm convert navsim --logs /data/navsim_logs/mini --sensor-blobs /data/sensor_blobs/mini --out drives/navsim
"""


def _common(p: argparse.ArgumentParser) -> None:
    from pwm_model.commands.common import add_config_arguments

    p.add_argument("--out", required=True, metavar="DIR", help="output folder: one rosbag2 directory per drive")
    p.add_argument("--scenes", nargs="+", metavar="NAME", help="convert only these scenes / logs (default: all)")
    p.add_argument("--width", type=int, default=0, metavar="PX",
                   help="downscale images to this width (aspect kept; default: the dataset's size)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--compressed", dest="compressed", action="store_true", default=True,
                       help="store the camera as sensor_msgs/CompressedImage jpeg (default)")
    group.add_argument("--raw", dest="compressed", action="store_false",
                       help="store the camera as raw sensor_msgs/Image rgb8 (large)")
    p.add_argument("--format", choices=("mcap", "sqlite3"), default="mcap", help="rosbag2 storage (default: mcap)")
    add_config_arguments(p)  # topic names: --set data.topics.image=...


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pwm_model.data.nuscenes import DEFAULT_CHANNEL, VERSIONS

    sub = parser.add_subparsers(dest="dataset", metavar="<dataset>", required=True)
    nu = sub.add_parser("nuscenes", help="nuScenes v1.0 (front camera sweeps, ego poses, boxes)",
                        description="Convert nuScenes v1.0 scenes: DATAROOT holds samples/, sweeps/ and VERSION/.")
    nu.add_argument("--dataroot", required=True, metavar="DIR", help="nuScenes root (holds samples/ sweeps/ v1.0-*/)")
    nu.add_argument("--version", default="v1.0-mini", choices=VERSIONS, help="table version (default: v1.0-mini)")
    nu.add_argument("--camera", default=DEFAULT_CHANNEL, metavar="CHANNEL",
                    help=f"camera channel (default: {DEFAULT_CHANNEL})")
    _common(nu)
    na = sub.add_parser("navsim", help="NAVSIM / OpenScene logs (CAM_F0, ego status, driving command, boxes)",
                        description="Convert NAVSIM / OpenScene logs: LOGS holds <log>.pkl files, SENSOR_BLOBS the "
                                    "<log>/CAM_F0/*.jpg images.")
    na.add_argument("--logs", required=True, metavar="PATH", help="a navsim_logs/<split> folder or one .pkl log")
    na.add_argument("--sensor-blobs", required=True, metavar="DIR", help="the sensor_blobs/<split> folder")
    _common(na)


def run(args: argparse.Namespace) -> int:
    from pwm_model.commands.common import config_from_args
    from pwm_model.data.adapter_common import write_drives
    from pwm_model.errors import ConfigError

    cfg = config_from_args(args)
    if args.width and args.width < 16:
        raise ConfigError(f"--width must be at least 16 px, got {args.width}")
    if args.dataset == "nuscenes":
        from pwm_model.data import nuscenes

        nusc = nuscenes.load_tables(args.dataroot, args.version)
        scenes = nuscenes.select_scenes(nusc, args.scenes)
        total = len(scenes)
        track_index: dict[str, int] = {}
        drives = (nuscenes.scene_drive(nusc, s, channel=args.camera, width_px=args.width or None,
                                       track_index=track_index) for s in scenes)
        source = f"nuScenes {args.version} ({total} scenes)"
    else:
        from pwm_model.data import navsim

        selected = navsim.select_logs(args.logs, args.scenes)
        total = 0  # a log with gaps becomes several drives: no total up front
        drives = navsim.iter_drives(args.logs, args.sensor_blobs, scenes=args.scenes, width_px=args.width or None)
        source = f"NAVSIM logs {args.logs} ({len(selected)} log files)"

    print(f"converting {source} -> {args.out}", flush=True)
    start = time.monotonic()
    frames = 0
    cameras: list = []

    def progress(i: int, drive, path: Path) -> None:  # noqa: ANN001 - DriveFrames
        nonlocal frames
        frames += len(drive)
        cameras.append(drive.camera)
        span_s = (drive.t_ns[-1] - drive.t_ns[0]) / 1e9
        cam = drive.camera
        print(f"[{i + 1}{f'/{total}' if total else ''}] {drive.drive_id}: {len(drive)} frames over {span_s:.1f} s at "
              f"{cam.frame_rate_hz:.1f} Hz, {cam.width_px}x{cam.height_px} px, hfov {cam.hfov_deg:.1f} deg -> {path}",
              flush=True)

    written = write_drives(drives, args.out, topics=cfg.data.topics, compressed=args.compressed, storage=args.format,
                           progress=progress)
    print(f"wrote {len(written)} drives ({frames} frames) in {time.monotonic() - start:.1f} s", flush=True)
    if cameras:
        print(f"next: pwm index {Path(args.out)} --out STORE {camera_flags(cameras[0])}", flush=True)
    return 0


def camera_flags(cam) -> str:  # noqa: ANN001 - CameraConfig
    """The ``--set camera.*`` flags that describe a converted drive's camera (``pwm index`` checks size and rate)."""
    values = {"width_px": cam.width_px, "height_px": cam.height_px, "frame_rate_hz": round(cam.frame_rate_hz, 2),
              "hfov_deg": round(cam.hfov_deg, 2), "mount_x_m": round(cam.mount_x_m, 3),
              "mount_y_m": round(cam.mount_y_m, 3), "mount_z_m": round(cam.mount_z_m, 3),
              "pitch_down_deg": round(cam.pitch_down_deg, 2)}
    return " ".join(f"--set camera.{k}={v}" for k, v in values.items())
