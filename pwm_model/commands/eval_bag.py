"""``pwm eval-bag``: score a model against recorded drives (rosbag2), offline or from a live run's recording."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "evaluate a model on rosbag2 drives: L2, collision, forecast PSNR/SSIM, surprise, latency; writes a report"
DESCRIPTION = """Replay recorded drives through the planner and score every plan against the bag's own future.

  pwm eval-bag out/sample_drive --model out/models/pwm-tiny-onnx
  pwm eval-bag drive_a drive_b --model MODEL_DIR --backend tensorrt --out out/eval/ab
  pwm eval-bag mybag.mcap --model MODEL_DIR --camera-topic /cam/image_raw --topics odometry=/odometry/filtered
  pwm eval-bag out/sample_drive --predictions out/predictions --model MODEL_DIR   # plans recorded live

Offline (default) the model runs here, through the same PolicyRunner as the ROS 2 node, at the model's planning
rate on bag time. With --predictions the plans are the node's ~/trajectory messages recorded while the bag was
replayed (`pwm_replay BAG --record OUT_BAG`, or `ros2 bag record`); nothing runs.

Reads the camera (sensor_msgs/Image or CompressedImage), nav_msgs/Odometry, the route command and ground-truth
boxes (visualization_msgs/MarkerArray); mcap or sqlite3. Scores: L2 at 1/2/3 s (VAD and UniAD protocols) and
collision against the bag's future poses and boxes, constant velocity beside it; forecast PSNR/SSIM against the
frames that really came (copy-last-frame beside it); surprise over time; latency. Every comparison with a baseline
is marked "better" or "worse", with 95 % intervals (a bootstrap over 5 s blocks of drive time). Writes
OUT/metrics.json, OUT/report.html, OUT/plans.csv (one row per plan) and OUT/overlay.mp4 (+ overlay.webm; default
OUT: out/eval/<bag name>). A bag without odometry gets forecast metrics only. See docs/EVALUATION.md.

Overlays project the plan with the bag's sensor_msgs/CameraInfo (--topics camera_info=TOPIC) where it has one, else
with --camera-intrinsics, else with the model's synthetic camera (said on stderr); the mounting is the model's
camera.mount_* / pitch_down_deg unless --camera-mount / --camera-pitch-down-deg give it:

  pwm eval-bag mybag --model MODEL_DIR --camera-intrinsics 1003.5,1003.5,959.5,539.5 --camera-mount 1.9,0,1.45"""

CAMERA_KEYS = ("image", "compressed_image")  # --topics keys of the camera: the deprecated spelling of --camera-topic


def topic_items(camera_topic: str | None, topics: list[str]) -> list[str]:
    """``--topics`` items with ``--camera-topic`` added; ``--topics image=`` / ``compressed_image=`` (the old
    spelling) keep their meaning, with a deprecation warning on stderr."""
    from pwm_model.data.bag_format import camera_topics
    from pwm_model.errors import ConfigError

    old = [t for t in topics if t.partition("=")[0] in CAMERA_KEYS]
    if old:
        if camera_topic:
            raise ConfigError(f"name the camera once: --camera-topic {camera_topic} and --topics {' '.join(old)} "
                              "(the deprecated spelling of --camera-topic) were both given")
        print(f"warning: --topics {' '.join(old)} is deprecated: name the camera with --camera-topic TOPIC (Image on "
              "TOPIC, CompressedImage on TOPIC/compressed, as the node's camera_topic)", file=sys.stderr)
    if not camera_topic:
        return list(topics)
    return [*topics, *(f"{k}={v}" for k, v in camera_topics(camera_topic).items())]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pwm_model.eval.drives import TOPIC_KEYS
    from pwm_model.eval.overlay_video import CODECS

    parser.add_argument("bags", nargs="+", metavar="BAG",
                        help="rosbag2 bag directory, .mcap or .db3 file, or a folder searched for bags")
    parser.add_argument("--model", metavar="MODEL_DIR",
                        help="model directory (manifest.json + graphs); required unless --predictions is given")
    parser.add_argument("--predictions", action="append", default=[], metavar="OUT_BAG",
                        help="score the plans recorded in this bag instead of running the model (one per BAG)")
    parser.add_argument("--prediction-topic", metavar="TOPIC",
                        help="nav_msgs/Path topic in the predictions bag (default: the one ending in /trajectory)")
    parser.add_argument("--backend", choices=("onnxruntime", "tensorrt", "torch"),
                        help="inference backend (default: the model's runtime.backend)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="device (default: the model's runtime.device)")
    parser.add_argument("--precision", choices=("fp32", "fp16", "int8"),
                        help="engine precision (default: the model's runtime.precision; int8 with onnxruntime runs the "
                             "Q/DQ graphs of build_engine.py --precision int8)")
    parser.add_argument("--out", metavar="DIR", help="output directory (default: out/eval/<first bag name>)")
    parser.add_argument("--camera-topic", metavar="TOPIC",
                        help="the camera in the bag, named as the node's camera_topic: sensor_msgs/Image on TOPIC or "
                             "CompressedImage on TOPIC/compressed (default: /camera/front/image_raw)")
    parser.add_argument("--topics", nargs="+", default=[], metavar="KEY=TOPIC",
                        help="other topic names in the bag, e.g. odometry=/odometry/filtered (keys: "
                             f"{', '.join(k for k in TOPIC_KEYS if k not in CAMERA_KEYS)}; image= and "
                             "compressed_image= still work but are deprecated: use --camera-topic)")
    parser.add_argument("--camera-intrinsics", metavar="FX,FY,CX,CY",
                        help="the camera's focal lengths and principal point in px at the bag's image size, for "
                             "overlays on bags without camera_info (default: the bag's camera_info, else the "
                             "model's synthetic camera)")
    parser.add_argument("--camera-mount", metavar="X,Y,Z",
                        help="the camera's position in base_link in m (x forward, y left, z up; default: the model's "
                             "camera.mount_x_m, mount_y_m, mount_z_m)")
    parser.add_argument("--camera-pitch-down-deg", type=float, metavar="DEG",
                        help="the camera's downward tilt in degrees (default: the model's camera.pitch_down_deg)")
    parser.add_argument("--planning-rate-hz", type=float, metavar="HZ",
                        help="plans per second of bag time (default: the model's runtime.planning_rate_hz)")
    parser.add_argument("--forecast-every", type=int, default=5, metavar="N",
                        help="decode the forecast of every N-th plan for PSNR/SSIM (0: none; default 5)")
    parser.add_argument("--no-video", action="store_true", help="do not write the overlay video")
    parser.add_argument("--video-codec", choices=("auto", *CODECS), default="auto",
                        help="overlay MP4 codec (default auto: avc1 where OpenCV has it, else mp4v plus a VP8 WebM "
                             "that browsers play)")
    parser.add_argument("--title", help="report title")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def run(args: argparse.Namespace) -> int:
    from pwm_model.eval.bag_summary import format_table
    from pwm_model.eval.drives import evaluate_drives, write_outputs
    from pwm_model.eval.overlay_camera import camera_options

    camera = camera_options(args.camera_intrinsics, args.camera_mount, args.camera_pitch_down_deg)
    out = Path(args.out) if args.out else Path("out/eval") / Path(args.bags[0]).resolve().name
    evals, metrics = evaluate_drives(args.bags, model=args.model, out=out, predictions=args.predictions,
                                     prediction_topic=args.prediction_topic, backend=args.backend,
                                     device=args.device, precision=args.precision,
                                     topics=topic_items(args.camera_topic, args.topics),
                                     planning_rate_hz=args.planning_rate_hz,
                                     forecast_every=args.forecast_every, video=not args.no_video,
                                     video_codec=args.video_codec, progress=not args.quiet, camera=camera)
    write_outputs(out, evals, metrics, title=args.title)
    print(format_table(metrics))
    for bag in metrics["bags"]:
        for note in bag["notes"]:
            print(f"note: {note}")
    print(f"wrote {out / 'report.html'}, {out / 'metrics.json'} and {out / 'plans.csv'}", file=sys.stderr)
    print(json.dumps({k: metrics.get(k) for k in JSON_KEYS}))
    return 0


JSON_KEYS = ("plans", "l2_1s", "l2_2s", "l2_3s", "collision_rate", "cv_l2_3s", "psnr_forecast_1s_db",
             "latency_p50_ms", "latency_p99_ms", "surprise_mean", "surprise_p90", "surprise_warn", "surprise_warn_frac",
             "backend", "precision")  # the last line of stdout: one JSON object
