"""``pwm index``: make a clip store (training clips in memory-mappable shards) out of rosbag2 drives."""

from __future__ import annotations

import argparse

HELP = "index rosbag2 drives into a clip store for training"
DESCRIPTION = """Index rosbag2 drives (mcap or sqlite3; bag directories, .mcap / .db3 files, or folders searched
recursively) into a clip store: 1 guide + H history + F future frames at the tokenizer's ctx size, the ego
waypoints, boxes, speed and command of every clip. The store is written atomically; nothing is left on failure.

  pwm index out/drives --out out/clips --preset tiny
  pwm index drive_a drive_b/drive_b_0.mcap --out clips --set data.clip_step_frames=4
  pwm index my_drives --out clips/mycar --camera-topic /sensing/camera/front/image_raw \
      --set data.topics.odometry=/localization/kinematic_state

Camera images of any size are taken; one whose aspect ratio differs from the model's by more than 2 % is
centre-cropped to it before the resize (never squashed), and the summary says so. Bags without odometry give a store
without labels: tokenizer and pretraining only (docs/DATA.md).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pwm_model.commands.common import add_config_arguments

    parser.add_argument("bags", nargs="+", metavar="BAG", help="bag directory, .mcap / .db3 file, or a folder of bags")
    parser.add_argument("--out", required=True, metavar="STORE", help="clip store directory to write (replaced)")
    parser.add_argument("--camera-topic", metavar="TOPIC",
                        help="the camera in the bags, named as the node's camera_topic: sensor_msgs/Image on TOPIC or "
                             "CompressedImage on TOPIC/compressed (sets data.topics.image and "
                             "data.topics.compressed_image; default: /camera/front/image_raw)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    add_config_arguments(parser)


def _size(n_bytes: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n_bytes < 1024 or unit == "GiB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    return f"{n_bytes:.1f} TiB"  # pragma: no cover


def run(args: argparse.Namespace) -> int:
    from pwm_model.commands.common import config_from_args
    from pwm_model.data.clip_builder import build_clip_store

    cfg = config_from_args(args)
    if args.camera_topic:
        import dataclasses

        from pwm_model.data.bag_format import camera_topics

        cfg.data.topics = dataclasses.replace(cfg.data.topics, **camera_topics(args.camera_topic))
    meta = build_clip_store(args.bags, args.out, cfg, progress=not args.quiet)
    print(f"wrote {meta.num_clips} clips from {len(meta.drives)} drive(s) in {meta.num_shards} shard(s) "
          f"({_size(meta.size_bytes)}) to {meta.path}")
    fits: dict[str, int] = {}
    for cam in meta.drive_cameras():
        if cam.get("fit"):
            fits[cam["fit"]] = fits.get(cam["fit"], 0) + 1
    for fit, n in fits.items():
        print(f"note: {n} drive(s): {fit}")
    return 0
