"""NAVSIM / OpenScene logs -> pwm drives: the front camera CAM_F0 with ego status, route command and boxes.

The layout NAVSIM documents (``docs/install.md``): ``navsim_logs/<split>/<log_name>.pkl`` and
``sensor_blobs/<split>/<log_name>/CAM_F0/<token>.jpg``. A log file is a pickled list of per-frame dicts (OpenScene
meta data, as ``navsim.common.dataloader`` and ``navsim.common.dataclasses.Scene.from_scene_dict_list`` read them).
The fields used here:

- ``token``, ``timestamp`` (microseconds), ``log_name``, ``scene_token``;
- ``ego2global_translation`` (x, y, z) and ``ego2global_rotation`` (quaternion w, x, y, z): the ego pose; NAVSIM
  takes the yaw of that quaternion as the heading;
- ``ego_dynamic_state``: (vx, vy, ax, ay) in the ego frame (NAVSIM's ``EgoStatus`` velocity = first two,
  acceleration = last two); missing -> finite differences of the poses;
- ``driving_command``: one-hot (left, straight, right, unknown) as NAVSIM feeds it to its agents; "unknown" and a
  missing command become straight; a plain integer 0/1/2 is accepted too;
- ``cams["CAM_F0"]``: ``data_path`` (relative to the sensor-blob root), ``cam_intrinsic`` (3x3),
  ``sensor2lidar_rotation`` (3x3) and ``sensor2lidar_translation``; with the frame's ``lidar2ego_translation`` /
  ``lidar2ego_rotation`` (w, x, y, z; identity when absent) they give the camera mounting in the ego frame;
- ``anns``: ``gt_boxes`` (N, 7) = (x, y, z, length, width, height, heading) in the ego frame of that frame
  (NAVSIM's ``BoundingBoxIndex`` order; NAVSIM uses them as ego-frame boxes), ``gt_names``, ``track_tokens``
  (``instance_tokens`` when track tokens are absent).

OpenScene samples nuPlan at 2 Hz (sensors and annotations); logs resampled at 10 Hz work the same (the frame rate is
measured from the stamps). NAVSIM's trajectory target is 8 future poses at 0.5 s (4 s): with
``data.waypoint_dt_s=0.5`` and ``data.num_waypoints=8`` the clip store reproduces it from the odometry. Frames without
a CAM_F0 entry are skipped; a gap of more than 2.5 frame periods starts a new drive. Log files are pickles: load only
logs you trust (pickle can run code).
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pwm_model.data.adapter_common import (
    DriveFrames,
    OdomFrame,
    camera_config,
    finite_difference_motion,
    frame_rate_hz,
    image_size,
    quat_wxyz_to_matrix,
    resized_camera,
    yaw_from_wxyz,
)
from pwm_model.data.schema import COMMAND_LEFT, COMMAND_RIGHT, COMMAND_STRAIGHT, Boxes
from pwm_model.errors import DataError

log = logging.getLogger(__name__)

CAMERA = "CAM_F0"
LOG_RATE_HZ = 2.0  # OpenScene / NAVSIM log frame rate (used only when a drive has a single frame)
GAP_PERIODS = 2.5  # a stamp gap longer than this many median frame periods splits a log into drives
# driving_command one-hot order: (left, straight, right, unknown); unknown -> straight
_ONE_HOT_TO_COMMAND = (COMMAND_LEFT, COMMAND_STRAIGHT, COMMAND_RIGHT, COMMAND_STRAIGHT)


def log_files(logs: str | Path) -> list[Path]:
    """The ``*.pkl`` log files of a directory (recursively), or the one file named."""
    path = Path(logs)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(f"NAVSIM log path {path} does not exist")
    files = sorted(path.rglob("*.pkl"))
    if not files:
        raise DataError(f"NAVSIM log folder {path} holds no .pkl log files")
    return files


def load_log(path: str | Path) -> list[dict[str, Any]]:
    """One log file: a pickled list of per-frame dicts (``DataError`` when it is anything else)."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            frames = pickle.load(f)  # noqa: S301 - NAVSIM's own log format
    except FileNotFoundError:
        raise DataError(f"NAVSIM log {path} is missing") from None
    except Exception as exc:  # unpickling raises many kinds
        raise DataError(f"NAVSIM log {path} is not a readable pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(frames, (list, tuple)) or not all(isinstance(f, dict) for f in frames):
        raise DataError(f"NAVSIM log {path} must hold a list of per-frame dicts, got {type(frames).__name__}")
    return list(frames)


def _array(frame: dict[str, Any], key: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    try:
        a = np.asarray(frame[key], np.float64)
    except KeyError:
        raise DataError(f"{where} has no {key!r}") from None
    except (TypeError, ValueError):
        raise DataError(f"{where} field {key!r} is not numeric") from None
    if a.size != int(np.prod(shape)) or not np.all(np.isfinite(a)):
        raise DataError(f"{where} field {key!r} must hold {int(np.prod(shape))} finite numbers, got shape {a.shape}")
    return a.reshape(shape)


def driving_command(value: Any) -> int:
    """pwm's route command (0 left, 1 straight, 2 right) from a NAVSIM one-hot (left, straight, right, unknown)."""
    if value is None:
        return COMMAND_STRAIGHT
    try:
        a = np.asarray(value, np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"NAVSIM driving_command must be a one-hot of 4 numbers, got {value!r}") from None
    if a.size == 1:
        v = int(a[0]) if float(a[0]).is_integer() else -1
        if v not in (0, 1, 2, 3):
            raise DataError(f"NAVSIM driving_command {v} is not 0 (left), 1 (straight), 2 (right) or 3 (unknown)")
        return _ONE_HOT_TO_COMMAND[v]
    if a.size != 4 or not np.all(np.isfinite(a)):
        raise DataError(f"NAVSIM driving_command must be a one-hot (left, straight, right, unknown), got {value!r}")
    if not np.any(a):
        return COMMAND_STRAIGHT
    return _ONE_HOT_TO_COMMAND[int(np.argmax(a))]


def _ego_from_camera(frame: dict[str, Any], cam: dict[str, Any], where: str) -> tuple[np.ndarray, np.ndarray]:
    """(rotation, translation) of the CAM_F0 optical frame in the ego frame."""
    r_cl = _array(cam, "sensor2lidar_rotation", (3, 3), where)
    t_cl = _array(cam, "sensor2lidar_translation", (3,), where)
    if "lidar2ego_rotation" in frame and "lidar2ego_translation" in frame:
        r_le = quat_wxyz_to_matrix(_array(frame, "lidar2ego_rotation", (4,), where))
        t_le = _array(frame, "lidar2ego_translation", (3,), where)
    else:
        r_le, t_le = np.eye(3), np.zeros(3)
    return r_le @ r_cl, r_le @ t_cl + t_le


def _ego_boxes(anns: Any, where: str) -> tuple[np.ndarray, list[str], list[str]]:
    """(boxes (N, 7) in the frame's ego frame, names, track tokens) of a frame's ``anns`` (empty when absent)."""
    if not anns:
        return np.zeros((0, 7)), [], []
    try:
        boxes = np.asarray(anns.get("gt_boxes", np.zeros((0, 7))), np.float64).reshape(-1, 7)
    except (TypeError, ValueError, AttributeError):
        raise DataError(f"{where} anns.gt_boxes must be an (N, 7) array") from None
    n = len(boxes)
    names = [str(v) for v in anns.get("gt_names", [""] * n)]
    tokens = anns.get("track_tokens")
    if tokens is None:
        tokens = anns.get("instance_tokens")
    tokens = [str(v) for v in tokens] if tokens is not None else [f"{where}#{i}" for i in range(n)]
    if len(names) != n or len(tokens) != n:
        raise DataError(f"{where} anns has {n} gt_boxes but {len(names)} gt_names and {len(tokens)} track tokens")
    ok = np.all(np.isfinite(boxes), axis=1)
    if not np.all(ok):
        log.warning("%s: dropping %d boxes with non-finite values", where, int(np.sum(~ok)))
    return boxes[ok], [v for v, k in zip(names, ok) if k], [v for v, k in zip(tokens, ok) if k]


def _split(frames: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Split time-sorted frames at long stamp gaps."""
    if len(frames) < 3:
        return [frames]
    t = np.array([int(f["timestamp"]) for f in frames], np.int64)
    dt = np.diff(t)
    limit = GAP_PERIODS * float(np.median(dt[dt > 0])) if np.any(dt > 0) else np.inf
    parts, start = [], 0
    for i, d in enumerate(dt, start=1):
        if d > limit:
            parts.append(frames[start:i])
            start = i
    parts.append(frames[start:])
    return parts


def log_drives(frames: list[dict[str, Any]], sensor_blobs: str | Path, name: str, *, width_px: int | None = None,
               track_index: dict[str, int] | None = None) -> list[DriveFrames]:
    """The drives of one log (normally one; more where the log has gaps)."""
    blobs = Path(sensor_blobs)
    usable, skipped = [], 0
    for i, f in enumerate(frames):
        if "timestamp" not in f:
            raise DataError(f"NAVSIM log {name} frame {i} has no 'timestamp'")
        cam = (f.get("cams") or {}).get(CAMERA)
        if not cam or not cam.get("data_path"):
            skipped += 1
            continue
        usable.append(f)
    if skipped:
        log.warning("NAVSIM log %s: %d of %d frames have no %s image and are skipped", name, skipped, len(frames),
                    CAMERA)
    if not usable:
        raise DataError(f"NAVSIM log {name} has no frames with a {CAMERA} image")
    usable.sort(key=lambda f: int(f["timestamp"]))
    dedup = [f for i, f in enumerate(usable) if i == 0 or int(f["timestamp"]) != int(usable[i - 1]["timestamp"])]
    parts = _split(dedup)
    tracks = {} if track_index is None else track_index
    drives = []
    for k, part in enumerate(parts):
        drive_id = name if len(parts) == 1 else f"{name}-{k:02d}"
        drives.append(_drive(part, blobs, drive_id, width_px, tracks))
    return drives


def _drive(frames: list[dict[str, Any]], blobs: Path, drive_id: str, width_px: int | None,
           tracks: dict[str, int]) -> DriveFrames:
    t_ns = np.array([int(f["timestamp"]) * 1000 for f in frames], np.int64)
    wheres = [f"NAVSIM log {drive_id} frame {f.get('token', i)}" for i, f in enumerate(frames)]
    xyz = np.stack([_array(f, "ego2global_translation", (3,), w) for f, w in zip(frames, wheres)])
    yaw = np.array([yaw_from_wxyz(_array(f, "ego2global_rotation", (4,), w)) for f, w in zip(frames, wheres)])
    origin = OdomFrame(float(xyz[0, 0]), float(xyz[0, 1]), float(yaw[0]), float(xyz[0, 2]))
    xy_odom, yaw_odom = origin.points(xyz[:, :2]), origin.yaw(yaw)

    speed_fd, accel_fd, yaw_rate = finite_difference_motion(t_ns, xy_odom, yaw_odom)
    speed, accel = speed_fd.copy(), accel_fd.copy()
    for i, (f, w) in enumerate(zip(frames, wheres)):
        if f.get("ego_dynamic_state") is not None:
            dyn = _array(f, "ego_dynamic_state", (4,), w)
            speed[i], accel[i] = dyn[0], dyn[2]
    commands = np.array([driving_command(f.get("driving_command")) for f in frames], np.int64)

    cam0 = frames[0]["cams"][CAMERA]
    paths = [blobs / str(f["cams"][CAMERA]["data_path"]) for f in frames]
    k = _array(cam0, "cam_intrinsic", (3, 3), wheres[0] + f" {CAMERA}")
    rot, trans = _ego_from_camera(frames[0], cam0, wheres[0] + f" {CAMERA}")
    src_w, src_h = image_size(paths[0])
    camera = camera_config(src_w, src_h, float(k[0, 0]), rot, trans, frame_rate_hz(t_ns, LOG_RATE_HZ))

    boxes = []
    for i, (f, w) in enumerate(zip(frames, wheres)):
        ego_boxes, names, tokens = _ego_boxes(f.get("anns"), w)
        world = ego_boxes.copy()
        if len(world):
            c, s = np.cos(yaw_odom[i]), np.sin(yaw_odom[i])
            x, y = ego_boxes[:, 0], ego_boxes[:, 1]
            world[:, 0] = c * x - s * y + xy_odom[i, 0]
            world[:, 1] = s * x + c * y + xy_odom[i, 1]
            world[:, 2] = ego_boxes[:, 2] + xyz[i, 2] - origin.z_m
            world[:, 6] = ego_boxes[:, 6] + yaw_odom[i]
        world = OdomFrame(0.0, 0.0, 0.0).boxes(world)  # wraps yaw, float32
        ids = np.array([tracks.setdefault(tok, len(tracks)) for tok in tokens], np.int32)
        boxes.append(Boxes(world, ids, tuple(names)))
    return DriveFrames(drive_id=drive_id, camera=resized_camera(camera, width_px), t_ns=t_ns, image_paths=paths,
                       xy_m=xy_odom, z_m=xyz[:, 2] - origin.z_m, yaw_rad=yaw_odom, speed_mps=speed, accel_mps2=accel,
                       yaw_rate_radps=yaw_rate, commands=commands, boxes=boxes, source_size_px=(src_w, src_h))


def select_logs(logs: str | Path, scenes: list[str] | None = None) -> list[tuple[Path, set[str] | None]]:
    """The log files to convert, each with the scene tokens to keep (None = all frames).

    ``scenes`` names logs by file stem or ``log_name``, or single scenes by ``scene_token``; an unknown name is a
    ``DataError`` before anything is written.
    """
    files = log_files(logs)
    if not scenes:
        return [(p, None) for p in files]
    wanted = set(scenes)
    chosen: dict[Path, set[str] | None] = {p: None for p in files if p.stem in wanted}
    found = {p.stem for p in chosen}
    if wanted - found:  # log_name or scene_token: look inside the logs
        for p in files:
            if p in chosen:
                continue
            frames = load_log(p)
            name = str(frames[0].get("log_name") or p.stem) if frames else p.stem
            if name in wanted:
                chosen[p], found = None, found | {name}
                continue
            tokens = {str(f.get("scene_token")) for f in frames} & wanted
            if tokens:
                chosen[p], found = tokens, found | tokens
    missing = sorted(wanted - found)
    if missing:
        raise DataError(f"NAVSIM logs under {logs} have no log or scene named {missing[0]!r}")
    return [(p, chosen[p]) for p in files if p in chosen]


def iter_drives(logs: str | Path, sensor_blobs: str | Path, *, scenes: list[str] | None = None,
                width_px: int | None = None) -> Iterator[DriveFrames]:
    """The drives of the selected logs, one at a time (see ``select_logs`` for ``scenes``)."""
    blobs = Path(sensor_blobs)
    if not blobs.is_dir():
        raise DataError(f"NAVSIM sensor blob folder {blobs} does not exist")
    track_index: dict[str, int] = {}
    for path, tokens in select_logs(logs, scenes):
        frames = load_log(path)
        if tokens is not None:
            frames = [f for f in frames if str(f.get("scene_token")) in tokens]
        if not frames:
            log.warning("NAVSIM log %s is empty", path)
            continue
        name = str(frames[0].get("log_name") or path.stem)
        yield from log_drives(frames, blobs, name, width_px=width_px, track_index=track_index)
