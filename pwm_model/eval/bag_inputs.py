"""What a drive's evaluation was fed: topics, message types, encoding, resolution and the measured rates.

``evaluate_bag`` collects every camera frame's header stamp (the camera's own clock) and its receive time (when it
reached the recorder; during a replay, when it reaches the node) and ``describe_inputs`` turns them, the bag's
summary and the model's config into the ``inputs`` of ``metrics.json`` and of the report's "Inputs" section:

    {"camera_topic": "/camera/front/image_raw", "camera_type": "sensor_msgs/msg/Image", "encoding": "rgb8",
     "width_px": 448, "height_px": 256, "model_input_px": [448, 256], "model_input_fit": None,
     "camera_stamp_rate_hz": 10.0,
     "input_rate_hz": 10.0, "configured_rate_hz": 10.0, "odometry_topic": "/odom", ...}

``model_input_fit`` is the contract's sentence on how the camera's images are cropped for the model (None: resized
only); ``bag_eval`` adds ``overlay_camera`` (``overlay_camera.describe``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pwm_model.data.contract import fit_note

GAP_FACTOR = 1.5  # a stamp interval longer than this many median intervals is a gap (frames missing)


def stream_rate(stamps_ns: np.ndarray | list[int]) -> dict[str, Any]:
    """Rate of a stream of stamps (ns, in arrival order): ``rate_hz`` (intervals over their total span, only the
    intervals that go forward), ``period_p50_ms``, ``period_max_ms``, ``gaps`` (intervals over ``GAP_FACTOR`` times
    the median) and ``backwards`` (intervals that go back or repeat a stamp). NaN / 0 with fewer than two stamps."""
    t = np.asarray(stamps_ns, np.int64)
    d = np.diff(t).astype(np.float64)
    forward = d[d > 0]
    if not forward.size:
        return {"rate_hz": math.nan, "period_p50_ms": math.nan, "period_max_ms": math.nan, "gaps": 0,
                "backwards": int((d <= 0).sum())}
    median = float(np.median(forward))
    return {"rate_hz": float(forward.size / forward.sum() * 1e9), "period_p50_ms": median / 1e6,
            "period_max_ms": float(forward.max()) / 1e6, "gaps": int((forward > GAP_FACTOR * median).sum()),
            "backwards": int((d <= 0).sum())}


def _topic(reader: Any, topic: str) -> dict[str, Any]:
    info = reader.summary.topics.get(topic)
    return {"topic": topic, "type": info.msgtype if info else None, "messages": int(info.count) if info else 0}


def describe_inputs(reader: Any, header_ns: list[int], receive_ns: list[int], cfg: Any) -> dict[str, Any]:
    """The inputs of one drive's evaluation (module docstring); ``reader`` is the ``DriveReader`` streamed."""
    s = reader.summary
    cam = _topic(reader, s.camera_topic) if s.camera_topic else {"topic": None, "type": None, "messages": 0}
    stamps, arrivals = stream_rate(header_ns), stream_rate(receive_ns)
    tp, tk = reader.topics, cfg.tokenizer
    odom, cmd, objects = _topic(reader, tp.odometry), _topic(reader, tp.command), _topic(reader, tp.objects)
    seconds = max(1e-9, (s.end_ns - s.start_ns) / 1e9)
    return {
        "camera_topic": cam["topic"], "camera_type": cam["type"], "compressed": bool(s.camera_compressed),
        "encoding": s.image_encoding or None, "width_px": int(s.image_width_px), "height_px": int(s.image_height_px),
        "model_input_px": [int(tk.ctx_width_px), int(tk.ctx_height_px)], "frames": len(header_ns),
        "model_input_fit": fit_note((int(s.image_height_px), int(s.image_width_px)),
                                    (int(tk.ctx_height_px), int(tk.ctx_width_px))) if s.image_width_px else None,
        "camera_stamp_rate_hz": stamps["rate_hz"], "camera_period_p50_ms": stamps["period_p50_ms"],
        "camera_period_max_ms": stamps["period_max_ms"], "camera_stamp_gaps": stamps["gaps"],
        "camera_stamps_backwards": stamps["backwards"], "input_rate_hz": arrivals["rate_hz"],
        "input_period_max_ms": arrivals["period_max_ms"], "configured_rate_hz": float(cfg.camera.frame_rate_hz),
        "camera_info": bool(s.has_camera_info), "camera_info_topic": tp.camera_info,
        "odometry_topic": odom["topic"], "odometry_type": odom["type"], "odometry_messages": odom["messages"],
        "odometry_rate_hz": odom["messages"] / seconds if odom["messages"] else None,
        "command_topic": cmd["topic"], "command_type": cmd["type"], "command_messages": cmd["messages"],
        "objects_topic": objects["topic"], "objects_messages": objects["messages"],
    }
