"""nuScenes and NAVSIM / OpenScene adapters on miniature datasets in their real on-disk formats.

The tests write the datasets themselves (JSON tables / pickled logs, small JPEGs), convert them with ``pwm convert``,
read the bags back and index them into clips, and check poses, commands, boxes, the camera and the clip structure.
"""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from pwm_model.cli import main as pwm_main
from pwm_model.config import TopicsConfig
from pwm_model.data.bag import DriveReader
from pwm_model.data.schema import COMMAND_LEFT, COMMAND_RIGHT, COMMAND_STRAIGHT

# ----------------------------------------------------------------------------------------------------
# Shared helpers


def _quat_wxyz(yaw: float, pitch: float = 0.0, roll: float = 0.0) -> list[float]:
    """(w, x, y, z) of R = Rz(yaw) Ry(pitch) Rx(roll)."""
    cy, sy = math.cos(yaw / 2), math.sin(yaw / 2)
    cp, sp = math.cos(pitch / 2), math.sin(pitch / 2)
    cr, sr = math.cos(roll / 2), math.sin(roll / 2)
    return [cr * cp * cy + sr * sp * sy, sr * cp * cy - cr * sp * sy, cr * sp * cy + sr * cp * sy,
            cr * cp * sy - sr * sp * cy]


def _rot_from_wxyz(q: list[float]) -> np.ndarray:
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def _wxyz_from_rot(r: np.ndarray) -> list[float]:
    w = math.sqrt(max(0.0, 1.0 + r[0, 0] + r[1, 1] + r[2, 2])) / 2.0
    if w > 1e-6:
        return [w, (r[2, 1] - r[1, 2]) / (4 * w), (r[0, 2] - r[2, 0]) / (4 * w), (r[1, 0] - r[0, 1]) / (4 * w)]
    x = math.sqrt(max(0.0, 1.0 + r[0, 0] - r[1, 1] - r[2, 2])) / 2.0
    return [(r[2, 1] - r[1, 2]) / (4 * x), x, (r[0, 1] + r[1, 0]) / (4 * x), (r[0, 2] + r[2, 0]) / (4 * x)]


# optical (x right, y down, z forward) -> ego (x forward, y left, z up), camera pitched down by PITCH_DOWN_DEG
PITCH_DOWN_DEG = 2.0
_OPT_TO_BODY = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
_PITCH = math.radians(PITCH_DOWN_DEG)
EGO_FROM_OPTICAL = np.array([[math.cos(_PITCH), 0, math.sin(_PITCH)], [0, 1, 0],
                             [-math.sin(_PITCH), 0, math.cos(_PITCH)]]) @ _OPT_TO_BODY


def _write_jpeg(path: Path, i: int, w: int, h: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.zeros((h, w, 3), np.uint8)
    img[:, :, 0] = (np.arange(w)[None, :] * 255 // w).astype(np.uint8)
    img[: h // 2, :, 2] = 200  # BGR: the upper half is red
    cv2.rectangle(img, (4 + 3 * i, h // 2), (14 + 3 * i, h // 2 + 8), (0, 255, 0), -1)
    assert cv2.imwrite(str(path), img)


def _ego_track(t_s: np.ndarray, speed_mps: float, turn_start_s: float, yaw_rate_radps: float,
               x0: float, y0: float, yaw0: float) -> np.ndarray:
    """(N, 3) global poses of a car driving straight, then turning at a constant yaw rate."""
    out = []
    for t in t_s:
        if t <= turn_start_s or yaw_rate_radps == 0:
            xl, yl, yl_yaw = speed_mps * t, 0.0, 0.0
        else:
            tt = t - turn_start_s
            r = speed_mps / yaw_rate_radps
            th = yaw_rate_radps * tt
            xl, yl, yl_yaw = speed_mps * turn_start_s + r * math.sin(th), r * (1 - math.cos(th)), th
        c, s = math.cos(yaw0), math.sin(yaw0)
        out.append((x0 + c * xl - s * yl, y0 + s * xl + c * yl, yaw0 + yl_yaw))
    return np.array(out)


def _expected_command(poses: np.ndarray, t_s: np.ndarray, i: int, horizon_s: float = 3.0) -> int:
    """The lateral-offset rule computed independently: pose 3 s ahead (or the last), y in the ego frame at i."""
    j = int(np.searchsorted(t_s, min(t_s[i] + horizon_s, t_s[-1]) - 1e-9))
    j = min(j, len(t_s) - 1)
    if t_s[j] > t_s[i] + horizon_s + 1e-9:  # interpolate between j-1 and j
        a = (t_s[i] + horizon_s - t_s[j - 1]) / (t_s[j] - t_s[j - 1])
        p = poses[j - 1] + a * (poses[j] - poses[j - 1])
    else:
        p = poses[j]
    x, y, yaw = poses[i]
    lateral = -math.sin(yaw) * (p[0] - x) + math.cos(yaw) * (p[1] - y)
    return COMMAND_LEFT if lateral >= 2.0 else COMMAND_RIGHT if lateral <= -2.0 else COMMAND_STRAIGHT


def _odom(poses: np.ndarray) -> np.ndarray:
    """Global poses -> the odom frame of the first pose."""
    x0, y0, yaw0 = poses[0]
    c, s = math.cos(yaw0), math.sin(yaw0)
    dx, dy = poses[:, 0] - x0, poses[:, 1] - y0
    yaw = (poses[:, 2] - yaw0 + math.pi) % (2 * math.pi) - math.pi
    return np.stack([c * dx + s * dy, -s * dx + c * dy, yaw], axis=1)


# ----------------------------------------------------------------------------------------------------
# A miniature nuScenes v1.0-mini tree

NU_W, NU_H = 160, 90  # a tenth of nuScenes' 1600x900
NU_FX = 126.6  # a tenth of CAM_FRONT's ~1266 px
NU_MOUNT = [1.70, 0.016, 1.51]
NU_DT_US = 83_333  # ~12 Hz sweeps
NU_FRAMES = 43  # 3.5 s: key frames every 6th frame
NU_T0_US = 1_533_151_603_547_590


def _nu_track() -> tuple[np.ndarray, np.ndarray]:
    jitter = np.array([0, 1200, -900, 600, -300, 800] * 8)[:NU_FRAMES]
    t_us = NU_T0_US + np.arange(NU_FRAMES) * NU_DT_US + jitter
    t_us[::6] = NU_T0_US + np.arange(0, NU_FRAMES, 6) * NU_DT_US  # key frames exactly every 0.5 s
    poses = _ego_track((t_us - t_us[0]) / 1e6, 6.0, 0.8, 0.5, 411.3, 1180.9, 2.1)
    return t_us, poses


def _car_box(t_s: float) -> tuple[list[float], list[float], float]:
    """A car ahead of the ego in the global frame (moving linearly): translation, size [w, l, h], yaw."""
    return [401.0 - 1.0 * t_s, 1198.0 + 4.0 * t_s, 0.95], [1.9, 4.6, 1.7], 2.1 + 0.1 * t_s


def write_nuscenes(root: Path) -> dict:
    t_us, poses = _nu_track()
    tables: dict[str, list[dict]] = {k: [] for k in ("scene", "sample", "sample_data", "ego_pose",
                                                      "calibrated_sensor", "sensor", "sample_annotation",
                                                      "instance", "category", "log", "map", "attribute",
                                                      "visibility")}
    tables["log"].append({"token": "log0", "logfile": "n015-2018-07-24-11-22-45+0800", "vehicle": "n015",
                          "date_captured": "2018-07-24", "location": "singapore-onenorth"})
    tables["map"].append({"token": "map0", "log_tokens": ["log0"], "category": "semantic_prior",
                          "filename": "maps/53992ee3023e5494b90c316c183be829.png"})
    tables["sensor"] += [{"token": "sens_cam", "channel": "CAM_FRONT", "modality": "camera"},
                         {"token": "sens_lidar", "channel": "LIDAR_TOP", "modality": "lidar"}]
    cam_rot = _wxyz_from_rot(EGO_FROM_OPTICAL)
    tables["calibrated_sensor"] += [
        {"token": "cs_cam", "sensor_token": "sens_cam", "translation": NU_MOUNT, "rotation": cam_rot,
         "camera_intrinsic": [[NU_FX, 0.0, 81.6], [0.0, NU_FX, 44.8], [0.0, 0.0, 1.0]]},
        {"token": "cs_lidar", "sensor_token": "sens_lidar", "translation": [0.94, 0.0, 1.84],
         "rotation": _quat_wxyz(-math.pi / 2), "camera_intrinsic": []}]
    tables["category"] += [{"token": "cat_car", "name": "vehicle.car", "description": "car", "index": 17},
                           {"token": "cat_ped", "name": "human.pedestrian.adult", "description": "adult",
                            "index": 2}]
    tables["visibility"].append({"token": "4", "level": "v80-100", "description": "visibility of whole object"})
    key_idx = list(range(0, NU_FRAMES, 6))
    samples = [f"sample{k}" for k in range(len(key_idx))]
    for k, i in enumerate(key_idx):
        tables["sample"].append({"token": samples[k], "timestamp": int(t_us[i]), "scene_token": "scene0",
                                 "prev": samples[k - 1] if k else "",
                                 "next": samples[k + 1] if k + 1 < len(samples) else ""})
    tables["scene"].append({"token": "scene0", "log_token": "log0", "nbr_samples": len(samples),
                            "first_sample_token": samples[0], "last_sample_token": samples[-1],
                            "name": "scene-0061", "description": "Parked cars, turn left"})
    for i in range(NU_FRAMES):
        key = i % 6 == 0
        k = i // 6 if key else min(i // 6 + 1, len(samples) - 1)  # sweeps point at the next key frame
        folder = "samples" if key else "sweeps"
        fname = f"{folder}/CAM_FRONT/n015-2018-07-24-11-22-45+0800__CAM_FRONT__{int(t_us[i])}.jpg"
        _write_jpeg(root / fname, i, NU_W, NU_H)
        tables["ego_pose"].append({"token": f"ep{i}", "timestamp": int(t_us[i]),
                                   "translation": [poses[i, 0], poses[i, 1], 0.0],
                                   "rotation": _quat_wxyz(poses[i, 2], pitch=0.01, roll=-0.005)})
        tables["sample_data"].append({
            "token": f"sd{i}", "sample_token": samples[k], "ego_pose_token": f"ep{i}",
            "calibrated_sensor_token": "cs_cam", "timestamp": int(t_us[i]), "fileformat": "jpg",
            "is_key_frame": key, "height": NU_H, "width": NU_W, "filename": fname,
            "prev": f"sd{i - 1}" if i else "", "next": f"sd{i + 1}" if i + 1 < NU_FRAMES else ""})
    # one lidar key frame per sample (a channel the adapter must ignore)
    for k, i in enumerate(key_idx):
        tables["sample_data"].append({
            "token": f"lidar{k}", "sample_token": samples[k], "ego_pose_token": f"ep{i}",
            "calibrated_sensor_token": "cs_lidar", "timestamp": int(t_us[i]) + 10, "fileformat": "pcd",
            "is_key_frame": True, "height": 0, "width": 0,
            "filename": f"samples/LIDAR_TOP/n015__LIDAR_TOP__{int(t_us[i])}.pcd.bin", "prev": "", "next": ""})
    # a car seen in every key frame, a pedestrian seen only in the first two
    for inst, cat, n in (("inst_car", "cat_car", len(samples)), ("inst_ped", "cat_ped", 2)):
        tables["instance"].append({"token": inst, "category_token": cat, "nbr_annotations": n,
                                   "first_annotation_token": f"{inst}_0",
                                   "last_annotation_token": f"{inst}_{n - 1}"})
        for k in range(n):
            ts = (t_us[key_idx[k]] - t_us[0]) / 1e6
            if inst == "inst_car":
                trans, size, yaw = _car_box(ts)
            else:
                trans, size, yaw = [405.0, 1190.0, 0.9], [0.6, 0.7, 1.75], -1.2
            tables["sample_annotation"].append({
                "token": f"{inst}_{k}", "sample_token": samples[k], "instance_token": inst,
                "visibility_token": "4", "attribute_tokens": [], "translation": trans, "size": size,
                "rotation": _quat_wxyz(yaw), "prev": f"{inst}_{k - 1}" if k else "",
                "next": f"{inst}_{k + 1}" if k + 1 < n else "", "num_lidar_pts": 20, "num_radar_pts": 1})
    (root / "v1.0-mini").mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        (root / "v1.0-mini" / f"{name}.json").write_text(json.dumps(rows, indent=0))
    return {"t_us": t_us, "poses": poses}


# ----------------------------------------------------------------------------------------------------
# A miniature NAVSIM / OpenScene log

NV_W, NV_H = 192, 108  # a tenth of nuPlan's 1920x1080
NV_FX = 154.5
NV_FRAMES = 16  # 7.5 s at 2 Hz
NV_LOG = "2021.05.12.22.00.38_veh-35_01008_01518"
LIDAR2EGO_T = [1.52, 0.0, 1.78]


def _nv_track() -> tuple[np.ndarray, np.ndarray]:
    t_us = 1_620_857_889_651_124 + np.arange(NV_FRAMES) * 500_000
    poses = _ego_track((t_us - t_us[0]) / 1e6, 8.0, 3.0, -0.35, 664_430.0, 3_996_650.0, -1.0)
    return t_us, poses


def write_navsim(logs: Path, blobs: Path) -> dict:
    t_us, poses = _nv_track()
    speed = 8.0
    # the camera: CAM_F0 in the lidar frame = ego_from_optical moved by -lidar2ego (lidar2ego rotation: identity)
    cam_in_ego = np.array([1.65, 0.02, 1.55])
    frames = []
    for i in range(NV_FRAMES):
        token = f"{i:016x}"
        rel = f"{NV_LOG}/CAM_F0/{token}.jpg"
        _write_jpeg(blobs / rel, i, NV_W, NV_H)
        yaw_rate = 0.0 if (t_us[i] - t_us[0]) / 1e6 <= 3.0 else -0.35
        cmd = [0, 0, 1, 0] if (t_us[i] - t_us[0]) / 1e6 >= 2.0 else [0, 1, 0, 0]
        # a vehicle 12 m ahead in the ego frame, and a pedestrian on the left
        gt_boxes = np.array([[12.0, 0.5, 0.8, 4.5, 1.9, 1.6, 0.05], [6.0, 4.0, 0.9, 0.5, 0.6, 1.8, 1.5]],
                            np.float32)
        frames.append({
            "token": token, "frame_idx": i, "timestamp": int(t_us[i]), "log_name": NV_LOG, "log_token": "lt0",
            "scene_token": "scene_a" if i < 8 else "scene_b", "map_location": "us-nv-las-vegas-strip",
            "roadblock_ids": [], "vehicle_name": "veh-35",
            "can_bus": np.zeros(18), "lidar_path": f"{NV_LOG}/MergedPointCloud/{token}.pcd",
            "lidar2ego_translation": LIDAR2EGO_T, "lidar2ego_rotation": [1.0, 0.0, 0.0, 0.0],
            "ego2global_translation": [poses[i, 0], poses[i, 1], 610.0],
            "ego2global_rotation": _quat_wxyz(poses[i, 2]),
            "ego_dynamic_state": [speed, 0.0, 0.3, speed * yaw_rate],
            "driving_command": np.array(cmd, np.int64),
            "traffic_lights": [],
            "cams": {
                "CAM_F0": {"data_path": rel, "sensor2lidar_rotation": EGO_FROM_OPTICAL.copy(),
                           "sensor2lidar_translation": cam_in_ego - np.array(LIDAR2EGO_T),
                           "cam_intrinsic": np.array([[NV_FX, 0, 95.5], [0, NV_FX, 53.5], [0, 0, 1]]),
                           "distortion": np.zeros(5)},
                "CAM_L0": {"data_path": f"{NV_LOG}/CAM_L0/{token}.jpg", "sensor2lidar_rotation": np.eye(3),
                           "sensor2lidar_translation": np.zeros(3), "cam_intrinsic": np.eye(3),
                           "distortion": np.zeros(5)},
            },
            "anns": {"gt_boxes": gt_boxes, "gt_names": ["vehicle", "pedestrian"],
                     "gt_velocity_3d": np.zeros((2, 3), np.float32),
                     "instance_tokens": ["ia", "ib"], "track_tokens": ["track_car", "track_ped"]},
        })
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / f"{NV_LOG}.pkl").open("wb") as f:
        pickle.dump(frames, f)
    return {"t_us": t_us, "poses": poses, "cam_in_ego": cam_in_ego}


# ----------------------------------------------------------------------------------------------------
# Helpers on the outputs

def _index(bags: list[Path], store: Path, sets: list[str]):
    from pwm_model.config import apply_overrides, preset
    from pwm_model.data.clip_builder import build_clip_store
    from pwm_model.data.clips import ClipStore

    cfg = apply_overrides(preset("tiny"), sets)
    build_clip_store(bags, store, cfg, progress=False)
    return ClipStore(store), cfg


def _interp(t_us: np.ndarray, poses: np.ndarray, t_query_us: float) -> np.ndarray:
    yaw = np.unwrap(poses[:, 2])
    return np.array([np.interp(t_query_us, t_us, poses[:, 0]), np.interp(t_query_us, t_us, poses[:, 1]),
                     np.interp(t_query_us, t_us, yaw)])


def _to_ego(p: np.ndarray, ego: np.ndarray) -> np.ndarray:
    c, s = math.cos(ego[2]), math.sin(ego[2])
    dx, dy = p[0] - ego[0], p[1] - ego[1]
    return np.array([c * dx + s * dy, -s * dx + c * dy, (p[2] - ego[2] + math.pi) % (2 * math.pi) - math.pi])


def _structure(store) -> dict[str, tuple]:
    """Array name -> (shape without the box-padding dimension, dtype) of clip 0, plus the shard file set."""
    clip = store[0]
    out: dict[str, tuple] = {}
    for name, value in vars(clip).items():
        if isinstance(value, np.ndarray):
            shape = tuple(value.shape)
            if name in ("boxes", "boxes_valid"):
                shape = shape[:1] + shape[2:]  # N = the store's most boxes in a frame
            out[name] = (shape, value.dtype.str)
        else:
            out[name] = (type(value).__name__,)
    out["_shard_files"] = tuple(sorted(p.name for p in (store.path / store.meta.shards[0]["name"]).iterdir()))
    return out


NU_SETS = ["camera.width_px=160", "camera.height_px=90", "camera.frame_rate_hz=12", "data.frame_stride=1",
           "data.history_frames=2", "data.future_frames=3", "world_model.forecast_frames=3",
           "data.num_waypoints=6", "data.waypoint_dt_s=0.5", "data.clip_step_frames=6"]
NV_SETS = ["camera.width_px=192", "camera.height_px=108", "camera.frame_rate_hz=2", "data.frame_stride=1",
           "data.history_frames=2", "data.future_frames=2", "world_model.forecast_frames=2",
           "data.num_waypoints=8", "data.waypoint_dt_s=0.5", "data.clip_step_frames=1"]


def _synthetic_drive(path: Path, width: int, height: int, rate_hz: float, n: int) -> Path:
    """A drive of the embedded synthetic world with the same camera size and frame rate, as a bag."""
    from pwm_model.config import CameraConfig
    from pwm_model.data.bag_writer import write_drive
    from pwm_model.data.synthetic import simulate_drive

    cam = CameraConfig(width_px=width, height_px=height, frame_rate_hz=rate_hz)
    return write_drive(path, simulate_drive(seed=1000, seconds=n / rate_hz, camera=cam), cam, TopicsConfig(),
                       compressed=True)


# ----------------------------------------------------------------------------------------------------
# nuScenes

def test_nuscenes_convert_and_index(tmp_path: Path, capsys) -> None:
    from pwm_model.data import nuscenes

    root = tmp_path / "nuscenes"
    truth = write_nuscenes(root)
    t_us, poses = truth["t_us"], truth["poses"]
    t_s = (t_us - t_us[0]) / 1e6

    # the camera from calibrated_sensor: intrinsics -> hfov, optical -> ego rotation -> mounting and pitch
    nusc = nuscenes.load_tables(root, "v1.0-mini")
    drive = nuscenes.scene_drive(nusc, nusc.scenes()[0])
    cam = drive.camera
    assert (cam.width_px, cam.height_px) == (NU_W, NU_H)
    assert cam.hfov_deg == pytest.approx(math.degrees(2 * math.atan(NU_W / 2 / NU_FX)), abs=1e-6)
    assert (cam.mount_x_m, cam.mount_y_m, cam.mount_z_m) == pytest.approx(NU_MOUNT, abs=1e-9)
    assert cam.pitch_down_deg == pytest.approx(PITCH_DOWN_DEG, abs=1e-6)
    assert cam.frame_rate_hz == pytest.approx(12.0, rel=0.01)
    assert len(drive) == NU_FRAMES  # every CAM_FRONT sweep, no LIDAR_TOP record
    # finite-difference motion of a 6 m/s drive that turns at 0.5 rad/s after 0.8 s
    assert drive.speed_mps == pytest.approx(np.full(NU_FRAMES, 6.0), abs=0.05)
    assert drive.yaw_rate_radps[-10:] == pytest.approx(np.full(10, 0.5), abs=0.02)

    out = tmp_path / "drives"
    assert pwm_main(["convert", "nuscenes", "--dataroot", str(root), "--version", "v1.0-mini",
                     "--out", str(out)]) == 0
    assert "scene-0061: 43 frames" in capsys.readouterr().out
    bag = out / "scene-0061"
    reader = DriveReader(bag)
    assert reader.summary.camera_compressed and reader.summary.camera_frames == NU_FRAMES
    assert reader.camera_info["K"][0, 0] == pytest.approx(NU_FX)
    odom = reader.ego.xyyaw
    assert odom[0] == pytest.approx([0.0, 0.0, 0.0], abs=1e-9)  # odom starts at the first ego pose
    assert odom == pytest.approx(_odom(poses), abs=1e-6)
    assert reader.ego.z_m == pytest.approx(np.zeros(NU_FRAMES), abs=1e-9)
    first = next(reader.samples())
    assert first.image_rgb.shape == (NU_H, NU_W, 3)
    assert first.image_rgb[NU_H // 4, 5, 0] > 150 and first.image_rgb[NU_H // 4, 5, 2] < 60  # red sky: RGB order

    store, cfg = _index([bag], tmp_path / "clips", NU_SETS)
    assert len(store) == 7
    saw = set()
    for i in range(len(store)):
        clip = store[i]
        k = int(np.searchsorted(t_us * 1000, clip.t_ns))
        assert t_us[k] * 1000 == clip.t_ns  # the current frame is a camera frame
        assert clip.command == _expected_command(poses, t_s, k)
        saw.add(clip.command)
        assert clip.speed_mps == pytest.approx(6.0, abs=0.05)
        ego = poses[k]
        for j in range(cfg.data.num_waypoints):
            tq = t_us[k] + (j + 1) * 500_000
            assert clip.waypoints_valid[j] == (tq <= t_us[-1])
            if clip.waypoints_valid[j]:
                assert clip.waypoints_xyyaw[j] == pytest.approx(_to_ego(_interp(t_us, poses, tq), ego), abs=2e-3)
                # the car (interpolated between key frames) at the waypoint time, in the ego frame at t
                trans, size, yaw = _car_box((tq - t_us[0]) / 1e6)
                car = _to_ego(np.array([trans[0], trans[1], yaw]), ego)
                n = int(clip.boxes_valid[j].sum())
                rows = clip.boxes[j, :n]
                hit = rows[np.argmin(np.hypot(rows[:, 0] - car[0], rows[:, 1] - car[1]))]
                assert hit[[0, 1, 6]] == pytest.approx(car, abs=2e-3)
                assert hit[2:6] == pytest.approx([0.95, 4.6, 1.9, 1.7], abs=1e-5)  # z, l, w, h (size was w, l, h)
                # the pedestrian is annotated in the first two key frames only (kept until the third)
                assert n == (2 if tq < t_us[12] else 1)
    assert saw == {COMMAND_LEFT, COMMAND_STRAIGHT}


def test_command_rule() -> None:
    from pwm_model.data.nuscenes import command_from_future

    t = np.arange(0, 61) * 100_000_000  # 6 s at 10 Hz
    straight = np.stack([np.arange(61) * 1.0, np.zeros(61), np.zeros(61)], axis=1)
    assert set(command_from_future(t, straight)) == {COMMAND_STRAIGHT}
    for sign, want in ((1.0, COMMAND_LEFT), (-1.0, COMMAND_RIGHT)):
        arc = _ego_track(t / 1e9, 8.0, 0.0, sign * 0.3, 10.0, -5.0, 0.7)  # 3 s ahead: ~8.6 m to the side
        cmd = command_from_future(t, arc)
        assert cmd[0] == want and cmd[-1] == COMMAND_STRAIGHT  # the last pose has no future
    # the threshold is 2 m, inclusive, on the lateral offset only
    drift = np.stack([np.arange(61) * 1.0, np.arange(61) * (2.0 / 30), np.zeros(61)], axis=1)
    assert command_from_future(t, drift)[0] == COMMAND_LEFT
    assert command_from_future(t, drift * [1, 0.99, 1])[0] == COMMAND_STRAIGHT


def test_nuscenes_errors(tmp_path: Path, capsys) -> None:
    root = tmp_path / "nuscenes"
    out = tmp_path / "drives"
    args = ["convert", "nuscenes", "--dataroot", str(root), "--out", str(out)]
    assert pwm_main(args) == 2
    assert f"nuScenes dataroot {root} does not exist" in capsys.readouterr().err
    write_nuscenes(root)
    (root / "v1.0-mini" / "ego_pose.json").rename(root / "ego_pose.json")
    assert pwm_main(args) == 2
    assert "ego_pose.json is missing" in capsys.readouterr().err
    (root / "ego_pose.json").rename(root / "v1.0-mini" / "ego_pose.json")
    assert pwm_main(args + ["--scenes", "scene-9999"]) == 2
    assert "no scene 'scene-9999'" in capsys.readouterr().err
    victim = sorted((root / "sweeps" / "CAM_FRONT").iterdir())[5]
    victim.unlink()
    assert pwm_main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"{victim} is missing" in err and err.count("\n") == 1
    assert not (out / "scene-0061").exists() and not [p for p in out.iterdir() if p.name.startswith(".")]


# ----------------------------------------------------------------------------------------------------
# NAVSIM / OpenScene

def test_navsim_convert_and_index(tmp_path: Path, capsys) -> None:
    from pwm_model.data import navsim

    logs, blobs = tmp_path / "navsim_logs" / "mini", tmp_path / "sensor_blobs" / "mini"
    truth = write_navsim(logs, blobs)
    t_us, poses = truth["t_us"], truth["poses"]

    drive = navsim.log_drives(navsim.load_log(logs / f"{NV_LOG}.pkl"), blobs, NV_LOG)[0]
    cam = drive.camera
    assert (cam.width_px, cam.height_px, cam.frame_rate_hz) == (NV_W, NV_H, pytest.approx(2.0))
    assert cam.hfov_deg == pytest.approx(math.degrees(2 * math.atan(NV_W / 2 / NV_FX)), abs=1e-6)
    assert [cam.mount_x_m, cam.mount_y_m, cam.mount_z_m] == pytest.approx(truth["cam_in_ego"], abs=1e-9)
    assert cam.pitch_down_deg == pytest.approx(PITCH_DOWN_DEG, abs=1e-6)
    assert drive.accel_mps2 == pytest.approx(np.full(NV_FRAMES, 0.3))  # ego_dynamic_state (vx, vy, ax, ay)

    out = tmp_path / "drives"
    assert pwm_main(["convert", "navsim", "--logs", str(logs), "--sensor-blobs", str(blobs), "--out", str(out)]) == 0
    capsys.readouterr()
    bag = out / NV_LOG
    reader = DriveReader(bag)
    assert reader.ego.xyyaw == pytest.approx(_odom(poses), abs=1e-6)
    assert reader.ego.speed_mps == pytest.approx(np.full(NV_FRAMES, 8.0))

    store, cfg = _index([bag], tmp_path / "clips", NV_SETS)
    assert len(store) == NV_FRAMES - 4
    seen = set()
    for i in range(len(store)):
        clip = store[i]
        k = int(np.searchsorted(t_us * 1000, clip.t_ns))
        assert k == i + 2 and clip.frames_rgb.shape == (5, 64, 128, 3)
        want_cmd = COMMAND_RIGHT if (t_us[k] - t_us[0]) / 1e6 >= 2.0 else COMMAND_STRAIGHT
        assert clip.command == want_cmd
        seen.add(clip.command)
        assert clip.speed_mps == pytest.approx(8.0)
        # NAVSIM's target: the 8 future poses at 0.5 s, relative to the current pose (where the log has them)
        for j in range(8):
            valid = k + j + 1 < NV_FRAMES
            assert clip.waypoints_valid[j] == valid
            if not valid:
                continue
            assert clip.waypoints_xyyaw[j] == pytest.approx(_to_ego(poses[k + j + 1], poses[k]), abs=1e-3)
            # gt_boxes are in the ego frame of their own frame: the car 12 m ahead of the ego at that time
            fut = poses[k + j + 1]
            c, s = math.cos(fut[2]), math.sin(fut[2])
            car_world = np.array([fut[0] + c * 12.0 - s * 0.5, fut[1] + s * 12.0 + c * 0.5, fut[2] + 0.05])
            row = clip.boxes[j, int(np.argmax(clip.boxes[j, :, 3]))]  # the longest box: the car
            assert row[[0, 1, 6]] == pytest.approx(_to_ego(car_world, poses[k]), abs=1e-3)
            assert row[2:6] == pytest.approx([0.8, 4.5, 1.9, 1.6], abs=1e-5)
            assert clip.boxes_valid[j].sum() == 2
    assert seen == {COMMAND_STRAIGHT, COMMAND_RIGHT}


def test_navsim_options_and_errors(tmp_path: Path, capsys) -> None:
    from pwm_model.data.navsim import driving_command

    assert [driving_command(v) for v in ([1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], None, 2)] == [
        COMMAND_LEFT, COMMAND_STRAIGHT, COMMAND_RIGHT, COMMAND_STRAIGHT, COMMAND_STRAIGHT, COMMAND_RIGHT]
    logs, blobs = tmp_path / "logs", tmp_path / "blobs"
    write_navsim(logs, blobs)
    out = tmp_path / "drives"
    base = ["convert", "navsim", "--logs", str(logs), "--sensor-blobs", str(blobs), "--out", str(out)]
    # one scene of the log, raw images, sqlite3, downscaled
    assert pwm_main(base + ["--scenes", "scene_b", "--raw", "--format", "sqlite3", "--width", "96"]) == 0
    capsys.readouterr()
    reader = DriveReader(out / NV_LOG)
    s = reader.summary
    assert (s.storage, s.camera_compressed, s.camera_frames) == ("sqlite3", False, 8)
    assert (s.image_width_px, s.image_height_px) == (96, 54)
    assert pwm_main(base + ["--scenes", "nope"]) == 2
    assert "no log or scene named 'nope'" in capsys.readouterr().err
    assert pwm_main(base[:-4] + ["--sensor-blobs", str(tmp_path / "none"), "--out", str(out)]) == 2
    assert "sensor blob folder" in capsys.readouterr().err
    (logs / "broken.pkl").write_bytes(b"not a pickle")
    assert pwm_main(base) == 2
    assert "broken.pkl is not a readable pickle" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------
# Same clip structure as the synthetic world's drives

def test_clip_structure_matches_synthetic(tmp_path: Path, capsys) -> None:
    root = tmp_path / "nuscenes"
    write_nuscenes(root)
    assert pwm_main(["convert", "nuscenes", "--dataroot", str(root), "--out", str(tmp_path / "nu")]) == 0
    logs, blobs = tmp_path / "logs", tmp_path / "blobs"
    write_navsim(logs, blobs)
    assert pwm_main(["convert", "navsim", "--logs", str(logs), "--sensor-blobs", str(blobs),
                     "--out", str(tmp_path / "nv")]) == 0
    capsys.readouterr()
    for sets, bag, (w, h, rate, n) in ((NU_SETS, tmp_path / "nu" / "scene-0061", (NU_W, NU_H, 12.0, 43)),
                                       (NV_SETS, tmp_path / "nv" / NV_LOG, (NV_W, NV_H, 2.0, 16))):
        real, _ = _index([bag], tmp_path / f"clips_{bag.name}", sets)
        synth_bag = _synthetic_drive(tmp_path / f"synth_{bag.name}", w, h, rate, n)
        synth, _ = _index([synth_bag], tmp_path / f"synth_clips_{bag.name}", sets)
        assert _structure(real) == _structure(synth)
        assert real.meta.clip_frames == synth.meta.clip_frames


def test_nuscenes_can_bus_and_corrupt_image(tmp_path: Path, capsys) -> None:
    from pwm_model.data import nuscenes

    root = tmp_path / "nuscenes"
    truth = write_nuscenes(root)
    # the CAN bus expansion: pose messages at 50 Hz with vel / accel / rotation_rate in the ego frame
    utime = np.arange(truth["t_us"][0] - 100_000, truth["t_us"][-1] + 100_000, 20_000)
    msgs = [{"utime": int(u), "pos": [0.0, 0.0, 0.0], "orientation": [1.0, 0.0, 0.0, 0.0],
             "vel": [7.0 + 1e-6 * (u - utime[0]) / 1e3, 0.1, 0.0], "accel": [0.4, 0.0, 9.8],
             "rotation_rate": [0.0, 0.0, 0.12]} for u in utime]
    (root / "can_bus").mkdir()
    (root / "can_bus" / "scene-0061_pose.json").write_text(json.dumps(msgs))
    nusc = nuscenes.load_tables(root, "v1.0-mini")
    drive = nuscenes.scene_drive(nusc, nusc.scenes()[0])
    expect = 7.0 + 1e-6 * (truth["t_us"] - utime[0]) / 1e3
    assert drive.speed_mps == pytest.approx(expect, abs=1e-9)
    assert drive.accel_mps2 == pytest.approx(np.full(NU_FRAMES, 0.4))
    assert drive.yaw_rate_radps == pytest.approx(np.full(NU_FRAMES, 0.12))

    victim = sorted((root / "samples" / "CAM_FRONT").iterdir())[2]
    victim.write_bytes(b"\xff\xd8 truncated")
    assert pwm_main(["convert", "nuscenes", "--dataroot", str(root), "--out", str(tmp_path / "out")]) == 2
    assert f"image {victim} is corrupt" in capsys.readouterr().err
    assert not (tmp_path / "out" / "scene-0061").exists()
