"""Build a clip store from rosbag2 drives (the layout and the reader: ``clips.py``).

    meta = build_clip_store(["out/drives"], "out/clips", cfg)

Each drive is read once; clips are cut at the model's timing, labelled with the ego's future poses and the boxes at
each waypoint time, and written shard by shard. The store is built in a temporary directory and renamed at the end.

Camera images of any size are taken: each becomes a ctx frame by the contract's aspect rule (``fit_rgb``: a centre
crop to the model's aspect ratio where the camera's differs, then the one resize); each drive's ``camera`` entry in
index.json records its size, topic and crop, and ``pwm index`` says the crop in its summary.

Drives without odometry make a store without labels (``index.json`` ``"ego_labels": false``): every waypoint
invalid, ego state, history poses and boxes zero. It serves the tokenizer and pretraining, which read frames only;
``load_labels`` (fine-tuning, ``pwm eval``) refuses it. One store never mixes drives with and without odometry.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pwm_model.config import PwmConfig
from pwm_model.data.bag import DriveReader, find_bags
from pwm_model.data.clips import (
    FORMAT,
    FORMAT_VERSION,
    FRAME_RATE_TOLERANCE,
    GAP_TOLERANCE,
    INDEX_FILE,
    ClipStoreMeta,
)
from pwm_model.data.contract import fit_note, fit_rgb, model_window
from pwm_model.data.schema import BOX_FIELDS
from pwm_model.errors import DataError
from pwm_model.geometry import boxes_to_ego_frame, interpolate_scalar, poses_to_ego_frame
from pwm_model.io_utils import atomic_path, write_json_atomic


def _hash_bag(path: Path) -> tuple[str, int]:
    """sha256 over the bag's files (sorted by name) and their total size in bytes."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    h, size = hashlib.sha256(), 0
    for f in files:
        h.update(f.relative_to(path.parent if path.is_file() else path).as_posix().encode() + b"\0")
        with f.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
                size += len(chunk)
    return h.hexdigest(), size


# ----------------------------------------------------------------------------------------------------
# Timing of a clip

@dataclass(frozen=True)
class _Plan:
    history: int
    future: int
    waypoints: int
    stride: int
    step: int
    model_dt_ns: int
    camera_period_ns: int
    waypoint_dt_ns: int
    frame_hw: tuple[int, int]  # ctx (h, w)

    @staticmethod
    def from_config(cfg: PwmConfig) -> _Plan:
        d = cfg.data
        return _Plan(d.history_frames, d.future_frames, d.num_waypoints, d.frame_stride, d.clip_step_frames,
                     round(cfg.model_dt_s * 1e9), round(1e9 / cfg.camera.frame_rate_hz),
                     round(d.waypoint_dt_s * 1e9), (cfg.tokenizer.ctx_height_px, cfg.tokenizer.ctx_width_px))

    @property
    def frames(self) -> int:
        return 1 + self.history + self.future

    @property
    def span(self) -> int:
        """Camera frames from a clip's guide frame to its last future frame."""
        return (self.frames - 1) * self.stride

    def needed(self, i: int) -> bool:
        """Whether camera frame ``i`` is a model frame of some clip (clip m starts at frame m * step)."""
        return any(i - j * self.stride >= 0 and (i - j * self.stride) % self.step == 0 for j in range(self.frames))


@dataclass
class _ClipRecord:
    t_ns: int
    frame_t_ns: np.ndarray
    ego: np.ndarray
    command: int
    history_xyyaw: np.ndarray
    waypoints_xyyaw: np.ndarray
    waypoints_valid: np.ndarray
    boxes: np.ndarray
    boxes_valid: np.ndarray
    drive: int
    scenario: int


def _unlabelled_clip(reader: DriveReader, plan: _Plan, frame_t: np.ndarray, max_boxes: int, drive: int,
                     scenario_ids: dict[str, int]) -> _ClipRecord:
    """A clip of a drive without odometry: its frames, command and scenario; no ego state, poses or boxes."""
    H, K = plan.history, plan.waypoints
    t = int(frame_t[H])
    label = reader.scenarios.at(t)
    return _ClipRecord(
        t_ns=t, frame_t_ns=frame_t.astype(np.int64), ego=np.zeros(3, np.float32), command=reader.commands.at(t),
        history_xyyaw=np.zeros((H, 3), np.float32), waypoints_xyyaw=np.zeros((K, 3), np.float32),
        waypoints_valid=np.zeros(K, bool), boxes=np.zeros((K, max_boxes, 7), np.float32),
        boxes_valid=np.zeros((K, max_boxes), bool), drive=drive,
        scenario=scenario_ids.setdefault(label, len(scenario_ids)))


def _make_clip(reader: DriveReader, plan: _Plan, frame_t: np.ndarray, max_boxes: int, drive: int,
               scenario_ids: dict[str, int], box_max_age_ns: int | None, labelled: bool = True
               ) -> tuple[_ClipRecord | None, str]:
    """The labels of one clip whose frames have stamps ``frame_t``; ``(None, reason)`` when it must be skipped.
    ``labelled`` False (a drive without odometry): the clip carries no labels (``_unlabelled_clip``)."""
    gaps = np.abs(np.diff(frame_t) - plan.model_dt_ns)
    if np.any(gaps > GAP_TOLERANCE * plan.camera_period_ns):
        return None, "dropped_frames"
    if not labelled:
        return _unlabelled_clip(reader, plan, frame_t, max_boxes, drive, scenario_ids), ""
    H, K = plan.history, plan.waypoints
    t = int(frame_t[H])
    hist, hist_ok = reader.ego.poses_at(frame_t[1:H + 1])
    if not np.all(hist_ok):
        return None, "outside_odometry"
    ex, ey, eyaw = (float(v) for v in hist[-1])
    ez = float(interpolate_scalar(np.array([t]), reader.ego.t_ns, reader.ego.z_m)[0])
    wp_t = t + np.arange(1, K + 1, dtype=np.int64) * plan.waypoint_dt_ns
    wp, wp_ok = reader.ego.poses_at(wp_t)
    wp_ego = poses_to_ego_frame(wp, ex, ey, eyaw)
    wp_ego[~wp_ok] = 0.0
    boxes = np.zeros((K, max_boxes, 7), np.float32)
    boxes_ok = np.zeros((K, max_boxes), bool)
    for k in np.flatnonzero(wp_ok):
        b = reader.box_sets.at(int(wp_t[k]), interpolate=True, max_age_ns=box_max_age_ns)
        n = len(b)
        if n:
            boxes[k, :n] = boxes_to_ego_frame(b.xyz_lwh_yaw, ex, ey, eyaw, ez)
            boxes_ok[k, :n] = True
    motion = [float(interpolate_scalar(np.array([t]), reader.ego.t_ns, v)[0])
              for v in (reader.ego.speed_mps, reader.ego.accel_mps2, reader.ego.yaw_rate_radps)]
    label = reader.scenarios.at(t)
    rec = _ClipRecord(
        t_ns=t, frame_t_ns=frame_t.astype(np.int64), ego=np.array(motion, np.float32),
        command=reader.commands.at(t), history_xyyaw=poses_to_ego_frame(hist, ex, ey, eyaw).astype(np.float32),
        waypoints_xyyaw=wp_ego.astype(np.float32), waypoints_valid=wp_ok.astype(bool), boxes=boxes,
        boxes_valid=boxes_ok, drive=drive, scenario=scenario_ids.setdefault(label, len(scenario_ids)))
    return rec, ""


# ----------------------------------------------------------------------------------------------------
# Writing shards

class _ShardWriter:
    """Collects clips and their distinct frames; writes a shard directory every ``shard_clips`` clips."""

    def __init__(self, root: Path, shard_clips: int, frame_hw: tuple[int, int]) -> None:
        self.root, self.shard_clips, self.frame_hw = root, shard_clips, frame_hw
        self.shards: list[dict[str, Any]] = []
        self._clips: list[_ClipRecord] = []
        self._rows: list[list[int]] = []
        self._pool: list[np.ndarray] = []
        self._pool_index: dict[tuple[int, int], int] = {}

    @property
    def num_clips(self) -> int:
        return sum(s["clips"] for s in self.shards) + len(self._clips)

    def add(self, rec: _ClipRecord, frames: Sequence[tuple[tuple[int, int], np.ndarray]]) -> None:
        rows = []
        for key, img in frames:
            row = self._pool_index.get(key)
            if row is None:
                row = self._pool_index[key] = len(self._pool)
                self._pool.append(img)
            rows.append(row)
        self._clips.append(rec)
        self._rows.append(rows)
        if len(self._clips) >= self.shard_clips:
            self.flush()

    def flush(self) -> None:
        if not self._clips:
            return
        name = f"shard_{len(self.shards):05d}"
        c = self._clips
        arrays: dict[str, np.ndarray] = {
            "frame_index": np.array(self._rows, np.int32),
            "frame_t_ns": np.stack([r.frame_t_ns for r in c]).astype(np.int64),
            "t_ns": np.array([r.t_ns for r in c], np.int64),
            "ego": np.stack([r.ego for r in c]).astype(np.float32),
            "command": np.array([r.command for r in c], np.uint8),
            "history_xyyaw": np.stack([r.history_xyyaw for r in c]),
            "waypoints_xyyaw": np.stack([r.waypoints_xyyaw for r in c]),
            "waypoints_valid": np.stack([r.waypoints_valid for r in c]),
            "boxes": np.stack([r.boxes for r in c]),
            "boxes_valid": np.stack([r.boxes_valid for r in c]),
            "drive": np.array([r.drive for r in c], np.int32),
            "scenario": np.array([r.scenario for r in c], np.int32),
        }
        with atomic_path(self.root / name, is_dir=True) as tmp:
            tmp.mkdir()
            h, w = self.frame_hw
            frames = np.lib.format.open_memmap(tmp / "frames.npy", mode="w+", dtype=np.uint8,
                                               shape=(len(self._pool), h, w, 3))
            for i, img in enumerate(self._pool):
                frames[i] = img
            frames.flush()
            del frames
            for key, arr in arrays.items():
                np.save(tmp / f"{key}.npy", arr)
        self.shards.append({"name": name, "clips": len(c), "frames": len(self._pool)})
        self._clips, self._rows, self._pool, self._pool_index = [], [], [], {}


# ----------------------------------------------------------------------------------------------------
# Building

def _check_bag(reader: DriveReader, cfg: PwmConfig) -> None:
    cam = cfg.camera
    stamps = reader.frame_stamps(limit=33)
    if len(stamps) >= 3:
        period_s = float(np.median(np.diff(stamps))) / 1e9
        expected_s = 1.0 / cam.frame_rate_hz
        if period_s <= 0 or abs(period_s - expected_s) > FRAME_RATE_TOLERANCE * expected_s:
            rate = 1.0 / period_s if period_s > 0 else math.inf
            raise DataError(f"bag {reader.path} has its camera at {rate:.3g} Hz, but camera.frame_rate_hz is "
                            f"{cam.frame_rate_hz:g}: set camera.frame_rate_hz to match")


def _drive_camera(reader: DriveReader, frame_hw: tuple[int, int]) -> dict[str, Any]:
    """What index.json records of a drive's camera: size, topic, CameraInfo, and the crop of the aspect rule."""
    s = reader.summary
    hw = (s.image_height_px, s.image_width_px)
    top, left, rows, cols = model_window(hw, frame_hw)
    return {"width_px": int(s.image_width_px), "height_px": int(s.image_height_px), "topic": s.camera_topic,
            "compressed": bool(s.camera_compressed), "camera_info": bool(s.has_camera_info),
            "model_window_px": {"top": top, "left": left, "rows": rows, "cols": cols}, "fit": fit_note(hw, frame_hw)}


def _check_odometry(readers: Sequence[DriveReader]) -> bool:
    """Whether the store gets labels: every bag has odometry (True) or none has (False); a mix is refused."""
    without = [r for r in readers if not r.summary.has_odometry]
    if without and len(without) < len(readers):
        r = without[0]
        raise DataError(f"bag {r.path} has no odometry on {r.topics.odometry}, but other bags given have: index the "
                        f"{len(without)} bag(s) without odometry into a store of their own (no labels: tokenizer and "
                        f"pretraining only), or name their odometry topic with --set data.topics.odometry=TOPIC")
    return not without


def _drive_ids(bags: Sequence[Path]) -> list[str]:
    ids: list[str] = []
    for p in bags:
        base = p.stem if p.is_file() else p.name
        name, k = base, 2
        while name in ids:
            name, k = f"{base}-{k}", k + 1
        ids.append(name)
    return ids


def _progress(enabled: bool, text: str, final: bool = False) -> None:
    if not enabled:
        return
    if sys.stderr.isatty():
        sys.stderr.write(f"\r\033[K{text}" + ("\n" if final else ""))
    elif final:
        sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _iter_drive(reader: DriveReader, plan: _Plan, drive: int, max_boxes: int, scenario_ids: dict[str, int],
                stats: dict[str, int], progress: bool, prefix: str, labelled: bool = True
                ) -> Iterator[tuple[_ClipRecord, list[tuple[tuple[int, int], np.ndarray]]]]:
    """Stream one drive's camera frames once, keeping only the frames that pending clips still need."""
    period = reader.box_sets.median_period_ns()
    box_max_age = int(1.5 * period) + plan.camera_period_ns if period > 0 else None
    h, w = plan.frame_hw
    camera_hw = (reader.summary.image_height_px, reader.summary.image_width_px)
    window: dict[int, tuple[int, np.ndarray | None]] = {}
    m = 0
    for i, t_ns, rgb in reader.frames(select=plan.needed):
        if rgb is not None:
            if rgb.shape[:2] != camera_hw:
                raise DataError(f"camera frame {i} in {reader.path} is {rgb.shape[1]}x{rgb.shape[0]} px, but the "
                                f"drive started at {camera_hw[1]}x{camera_hw[0]} px")
            small = fit_rgb(rgb, h, w)
            window[i] = (t_ns, small)
        stats["frames"] += 1
        while m * plan.step + plan.span <= i:
            idx = [m * plan.step + j * plan.stride for j in range(plan.frames)]
            frame_t = np.array([window[k][0] for k in idx], np.int64)
            rec, why = _make_clip(reader, plan, frame_t, max_boxes, drive, scenario_ids, box_max_age, labelled)
            if rec is None:
                stats[why] = stats.get(why, 0) + 1
            else:
                stats["clips"] += 1
                yield rec, [((drive, k), window[k][1]) for k in idx]
            m += 1
            for k in [k for k in window if k < m * plan.step]:
                del window[k]
        if i % 200 == 0:
            _progress(progress, f"{prefix}: frame {i}, {stats['clips']} clips")


def build_clip_store(bags: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], cfg: PwmConfig, *,
                     progress: bool = True) -> ClipStoreMeta:
    """Index bags (or directories of bags, searched recursively) into a clip store at ``out``.

    Every bag is opened and checked first (camera, frame rate, odometry in all bags or in none);
    nothing is written when one is unusable. Bags without odometry give a store without labels (module docstring).
    The store is built in a temporary sibling directory and renamed at the end; an existing clip store at ``out``
    is replaced. Raises DataError (one sentence) on bad input or when no clip fits any drive.
    """
    cfg.validate()
    out = Path(out)
    paths = find_bags(bags)
    if not paths:
        raise DataError("no bags to index")
    for p in paths:
        if out.resolve() == p.resolve() or out.resolve() in p.resolve().parents:
            raise DataError(f"the clip store {out} must not contain the input bag {p}")
    if out.exists() and not (out.is_dir() and ((out / INDEX_FILE).is_file() or not any(out.iterdir()))):
        raise DataError(f"refusing to overwrite {out}: it exists and is not a clip store")
    plan = _Plan.from_config(cfg)
    readers = []
    for k, p in enumerate(paths):
        _progress(progress, f"[{k + 1}/{len(paths)}] checking {p}")
        reader = DriveReader(p, cfg.data.topics)
        _check_bag(reader, cfg)
        readers.append(reader)
    labelled = _check_odometry(readers)
    if not labelled:
        _progress(progress, f"note: no bag has odometry on {cfg.data.topics.odometry}: the clips get no ego labels "
                  "(the store serves the tokenizer and pretraining; fine-tuning and `pwm eval` refuse it)",
                  final=True)
    max_boxes = max(r.box_sets.max_boxes for r in readers) if labelled else 0  # boxes need the ego pose
    ids = _drive_ids(paths)
    scenario_ids: dict[str, int] = {}
    drives: list[dict[str, Any]] = []
    started = time.monotonic()
    with atomic_path(out, is_dir=True) as tmp:
        tmp.mkdir()
        writer = _ShardWriter(tmp, cfg.data.shard_clips, plan.frame_hw)
        for k, (reader, drive_id) in enumerate(zip(readers, ids)):
            prefix = f"[{k + 1}/{len(readers)}] {drive_id}"
            stats: dict[str, int] = {"frames": 0, "clips": 0}
            for rec, frames in _iter_drive(reader, plan, k, max_boxes, scenario_ids, stats, progress, prefix,
                                           labelled):
                writer.add(rec, frames)
            sha, size = _hash_bag(reader.path)
            skipped = {key: v for key, v in stats.items() if key not in ("frames", "clips")}
            drives.append({"drive_id": drive_id, "path": str(reader.path), "storage": reader.summary.storage,
                           "size_bytes": size, "sha256": sha, "odometry": labelled, "camera_frames": stats["frames"],
                           "duration_s": round(reader.summary.duration_s, 3), "clips": stats["clips"],
                           "skipped_clips": skipped, "camera": _drive_camera(reader, plan.frame_hw)})
            _progress(progress, f"{prefix}: {stats['frames']} frames -> {stats['clips']} clips"
                      + (f" (skipped: {skipped})" if skipped else ""), final=True)
        writer.flush()
        if writer.num_clips == 0:
            need_s = plan.span / cfg.camera.frame_rate_hz
            raise DataError(f"no clip fits in the {len(paths)} bag(s): a clip needs {plan.frames} model frames "
                            f"({need_s:.1f} s of camera)" + (" with odometry throughout" if labelled else ""))
        index = _index_dict(cfg, plan, writer, drives, scenario_ids, max_boxes, tmp, labelled)
        write_json_atomic(tmp / INDEX_FILE, index)
    _progress(progress, f"indexed {index['num_clips']} clips in {time.monotonic() - started:.1f} s", final=True)
    return ClipStoreMeta.from_index(out, index)


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _index_dict(cfg: PwmConfig, plan: _Plan, writer: _ShardWriter, drives: list[dict[str, Any]],
                scenario_ids: dict[str, int], max_boxes: int, root: Path, labelled: bool) -> dict[str, Any]:
    names = sorted(scenario_ids, key=scenario_ids.__getitem__)
    counts = dict.fromkeys(names, 0)
    for s in writer.shards:
        ids = np.load(root / s["name"] / "scenario.npy")
        for i, c in zip(*np.unique(ids, return_counts=True)):
            counts[names[int(i)]] += int(c)
    plain = cfg.to_dict()
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_unix_s": int(time.time()),
        "preset": cfg.preset,
        "num_clips": writer.num_clips,
        "num_shards": len(writer.shards),
        "ego_labels": labelled,  # false: drives without odometry, no ego / waypoint / box labels
        "clip_frames": plan.frames,
        "frame_height_px": plan.frame_hw[0],
        "frame_width_px": plan.frame_hw[1],
        "max_boxes": max_boxes,
        "box_fields": list(BOX_FIELDS),
        "model_dt_s": cfg.model_dt_s,
        "config": {"camera": plain["camera"], "data": plain["data"],
                   "tokenizer": {"ctx_height_px": cfg.tokenizer.ctx_height_px,
                                 "ctx_width_px": cfg.tokenizer.ctx_width_px}},
        "drives": drives,
        "scenarios": names,
        "scenario_counts": counts,
        "size_bytes": _dir_size(root),
        "shards": writer.shards,
    }


