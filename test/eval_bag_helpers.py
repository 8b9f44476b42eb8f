"""Drives and recorded-plan bags for the bag evaluation tests (real rosbag2 files written with rosbags / mcap)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pwm_model.config import PwmConfig
from pwm_model.data.bag_writer import write_drive
from pwm_model.geometry import quat_from_yaw

from .drive_helpers import SPEED_MPS, arc_drive, arc_relative, header, small_config, typestore

TRAJECTORY = "/pwm_node/trajectory"
SURPRISE = "/pwm_node/surprise"
FRAMES = 70  # 7 s at 10 Hz: plans in the first 3 s have a full 4 s of future


def config() -> PwmConfig:
    return small_config()


def write_arc(path: Path, n: int = FRAMES, **kw: Any) -> Path:
    cfg = config()
    return write_drive(path, arc_drive(n, cfg.camera.height_px, cfg.camera.width_px), cfg.camera,
                       cfg.data.topics, **kw)


def truth_plan(k: int = 8, dt_s: float = 0.5) -> np.ndarray:
    """The arc's own future in the ego frame: what a perfect planner says at any time."""
    return np.array([arc_relative(dt_s * (j + 1)) for j in range(k)])


def cv_l2_up_to(horizon_s: float, dt_s: float = 0.5) -> float:
    """Mean displacement of constant velocity from the arc over the waypoints up to ``horizon_s`` (analytic)."""
    errs = []
    for j in range(1, round(horizon_s / dt_s) + 1):
        x, y, _ = arc_relative(j * dt_s)
        errs.append(math.hypot(SPEED_MPS * j * dt_s - x, y))
    return float(np.mean(errs))


def write_predictions(path: Path, stamps: list[int], plan: Callable[[int], np.ndarray], *, dt_s: float = 0.5,
                      latency_ns: int = 30_000_000, surprise: Callable[[int], float] | None = None,
                      storage: str = "mcap", diagnostics: list[tuple[int, int, str, dict[str, str]]] | None = None
                      ) -> Path:
    """A bag as ``pwm_replay --record`` writes it: one nav_msgs/Path per stamp (+ Float32 surprise after it), and
    ``diagnostics`` (receive ns, level, message, values) as the node's ``/diagnostics`` planner statuses."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    ts = typestore()
    t = ts.types
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=8, storage_plugin=plugin) as w:
        c_traj = w.add_connection(TRAJECTORY, "nav_msgs/msg/Path", typestore=ts)
        c_sur = w.add_connection(SURPRISE, "std_msgs/msg/Float32", typestore=ts)
        c_other = w.add_connection("/chatter", "std_msgs/msg/String", typestore=ts)
        if diagnostics:
            c_diag = w.add_connection("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray", typestore=ts)
            for t_ns, level, message, values in diagnostics:
                status = t["diagnostic_msgs/msg/DiagnosticStatus"](
                    level=level, name="pwm_node: planner", message=message, hardware_id="onnxruntime/cpu",
                    values=[t["diagnostic_msgs/msg/KeyValue"](key=k, value=v) for k, v in values.items()])
                msg = t["diagnostic_msgs/msg/DiagnosticArray"](header=header(ts, t_ns), status=[status])
                w.write(c_diag, t_ns, ts.serialize_cdr(msg, "diagnostic_msgs/msg/DiagnosticArray"))
        for t_ns in stamps:
            poses = []
            for k, (x, y, yaw) in enumerate(plan(t_ns), 1):
                qx, qy, qz, qw = quat_from_yaw(float(yaw))
                pose = t["geometry_msgs/msg/Pose"](
                    position=t["geometry_msgs/msg/Point"](x=float(x), y=float(y), z=0.0),
                    orientation=t["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw))
                poses.append(t["geometry_msgs/msg/PoseStamped"](
                    header=header(ts, t_ns + round(k * dt_s * 1e9), "base_link"), pose=pose))
            msg = t["nav_msgs/msg/Path"](header=header(ts, t_ns, "base_link"), poses=poses)
            w.write(c_traj, t_ns + latency_ns, ts.serialize_cdr(msg, "nav_msgs/msg/Path"))
            if surprise is not None:
                w.write(c_sur, t_ns + latency_ns, ts.serialize_cdr(t["std_msgs/msg/Float32"](data=surprise(t_ns)),
                                                                   "std_msgs/msg/Float32"))
            w.write(c_other, t_ns, ts.serialize_cdr(t["std_msgs/msg/String"](data="x"), "std_msgs/msg/String"))
    return path


def rewrite_with_mcap_library(src: Path, dst: Path, extra_topics: bool = True) -> Path:
    """Re-write a bag with another writer (``mcap`` + ``mcap-ros2-support``), adding unrelated topics."""
    from mcap_ros2.writer import Writer
    from rosbags.highlevel import AnyReader

    ts = typestore()
    with AnyReader([src], default_typestore=ts) as reader, dst.open("wb") as f:
        w = Writer(f)
        schemas: dict[str, Any] = {}
        for conn, t_ns, raw in reader.messages():
            if conn.msgtype not in schemas:
                text, _ = ts.generate_msgdef(conn.msgtype, ros_version=2)
                schemas[conn.msgtype] = w.register_msgdef(conn.msgtype, text)
            msg = reader.deserialize(raw, conn.msgtype)
            w.write_message(conn.topic, schemas[conn.msgtype], _plain(msg), log_time=t_ns, publish_time=t_ns)
            if extra_topics and conn.topic.endswith("image_raw"):
                if "std_msgs/msg/String" not in schemas:
                    text, _ = ts.generate_msgdef("std_msgs/msg/String", ros_version=2)
                    schemas["std_msgs/msg/String"] = w.register_msgdef("std_msgs/msg/String", text)
                w.write_message("/chatter", schemas["std_msgs/msg/String"], {"data": "unrelated"}, log_time=t_ns)
        w.finish()
    return dst


def _plain(msg: Any) -> Any:
    """A rosbags message as the nested dicts / lists / bytes mcap_ros2 serializes."""
    if isinstance(msg, np.ndarray):
        return msg.tobytes() if msg.dtype == np.uint8 else msg.tolist()
    if hasattr(msg, "__dataclass_fields__"):
        return {name: _plain(getattr(msg, name)) for name in msg.__dataclass_fields__ if name != "__msgtype__"}
    if isinstance(msg, list):
        return [_plain(v) for v in msg]
    return msg


def recorded_evaluation(tmp: Path, video: bool = True, frames: int = FRAMES) -> tuple[list[Any], dict[str, Any]]:
    """An evaluation of the arc drive from recorded plans (0.3 m lateral error, rising surprise), with forecast
    strips filled from the bag's own frames (the forecast: each true frame blurred) so that every section of the
    report has content."""
    import cv2

    from pwm_model.data.bag import DriveReader
    from pwm_model.eval import metrics as M
    from pwm_model.eval.bag_eval import RecordedPlans, evaluate_bag
    from pwm_model.eval.bag_summary import summarize
    from pwm_model.eval.bag_types import EvalOptions, ForecastStrip
    from pwm_model.eval.predictions import read_predictions
    from pwm_model.geometry import PinholeCamera

    from .drive_helpers import T0_NS

    cfg = config()
    bag = write_arc(tmp / "arc", frames)
    stamps = [T0_NS + i * 100_000_000 for i in range(frames)]
    pred = write_predictions(tmp / "pred", stamps, lambda t: truth_plan() + np.array([0.0, 0.3, 0.0]),
                             surprise=lambda t: 0.1 + 0.4 * math.sin((t - T0_NS) / 1e9) ** 2)
    ev = evaluate_bag(bag, RecordedPlans(read_predictions(pred)), cfg, PinholeCamera.from_config(cfg.camera),
                      out_dir=tmp / "eval", options=EvalOptions(video=video, progress=False))
    images = [rgb for _, _, rgb in DriveReader(bag).frames()]
    f, model_frames = cfg.world_model.forecast_frames, cfg.data.frame_stride
    rows = []
    for start in range(0, frames - f * model_frames, 10):
        size = (cfg.tokenizer.dyn_width_px, cfg.tokenizer.dyn_height_px)
        truth = np.stack([cv2.resize(images[start + k * model_frames], size, interpolation=cv2.INTER_AREA)
                          for k in range(1, f + 1)])
        forecast = np.stack([cv2.GaussianBlur(x, (3, 3), 0.5 + k) for k, x in enumerate(truth)])
        rows.append((start, truth, forecast))
    ev.strips = [ForecastStrip(i, stamps[i], t, fc, M.psnr_db(fc, t), 0.2) for i, t, fc in rows]
    ev.forecast_t_ns = np.array([stamps[i] for i, _, _ in rows], np.int64)
    ev.forecast_psnr = np.stack([M.psnr_db(fc, t) for _, t, fc in rows])
    ev.forecast_ssim = np.stack([M.ssim(fc, t) for _, t, fc in rows])
    ev.copy_psnr = ev.forecast_psnr - 3.0
    ev.copy_ssim = ev.forecast_ssim - 0.05
    return [ev], summarize([ev])
