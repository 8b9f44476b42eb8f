"""The clip store: rosbag2 drives indexed into fixed-shape training clips (``schema.Clip``) in memory-mappable shards.

    meta = build_clip_store(["out/drives"], "out/clips", cfg)
    store = ClipStore("out/clips"); store.check_compatible(cfg); clip = store[0]

Layout (every array a plain ``.npy`` file, opened with ``np.load(mmap_mode="r")``):

    STORE/index.json          format version, counts, the config sections that shaped the clips, source bags
                              (path, size, sha256, clips), scenario names and counts, shards
    STORE/shard_00000/
      frames.npy              (M, h, w, 3) uint8   the distinct model frames of the shard's clips (ctx size)
      frame_index.npy         (n, T) int32         rows of frames.npy of each clip's T = 1 + H + F frames
      frame_t_ns.npy          (n, T) int64         their stamps
      t_ns.npy                (n,) int64           stamp of the current frame (frame H)
      ego.npy                 (n, 3) float32       speed_mps, accel_mps2, yaw_rate_radps at t
      command.npy             (n,) uint8
      history_xyyaw.npy       (n, H, 3) float32    ego poses at the history frames, ego frame at t
      waypoints_xyyaw.npy     (n, K, 3) float32    ego poses at k * waypoint_dt_s, ego frame at t (0 where invalid)
      waypoints_valid.npy     (n, K) bool
      boxes.npy               (n, K, N, 7) float32 boxes at each waypoint time, ego frame at t, padded to N
      boxes_valid.npy         (n, K, N) bool
      drive.npy, scenario.npy (n,) int32           rows of index.json ``drives`` / ``scenarios``

Consecutive clips of a drive share most frames, so each shard stores a frame once and clips refer to it.
The store is built in a temporary directory and renamed at the end; each shard is written the same way.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pwm_model.config import PwmConfig
from pwm_model.data.bag import DriveReader, is_bag_path
from pwm_model.data.schema import BOX_FIELDS, Clip
from pwm_model.errors import DataError
from pwm_model.geometry import boxes_to_ego_frame, interpolate_scalar, poses_to_ego_frame
from pwm_model.io_utils import atomic_path, write_json_atomic

FORMAT = "pwm-clip-store"
FORMAT_VERSION = 1
INDEX_FILE = "index.json"
ARRAYS = ("frames", "frame_index", "frame_t_ns", "t_ns", "ego", "command", "history_xyyaw", "waypoints_xyyaw",
          "waypoints_valid", "boxes", "boxes_valid", "drive", "scenario")
FRAME_RATE_TOLERANCE = 0.2  # a bag's camera period may differ this much (relative) from camera.frame_rate_hz
GAP_TOLERANCE = 0.5  # clip frames may deviate this many camera periods from model_dt_s (else: dropped frames)


# ----------------------------------------------------------------------------------------------------
# Finding bags

def find_bags(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Bags named by ``paths``: bag directories, .mcap / .db3 files, or directories searched recursively."""
    out: list[Path] = []
    for item in paths:
        p = Path(item)
        if not p.exists():
            raise DataError(f"bag path {p} does not exist")
        if is_bag_path(p):
            out.append(p)
        elif p.is_dir():
            found = _bags_under(p)
            if not found:
                raise DataError(f"no rosbag2 bags (directories with metadata.yaml, .mcap or .db3 files) under {p}")
            out += found
        else:
            raise DataError(f"{p} is not a rosbag2 bag: expected a bag directory or a .mcap or .db3 file")
    seen: set[Path] = set()
    unique = []
    for p in out:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique


def _bags_under(root: Path) -> list[Path]:
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))  # skip hidden / unfinished outputs
        if "metadata.yaml" in filenames:
            found.append(here)
            dirnames.clear()
            continue
        found += [here / f for f in sorted(filenames) if f.endswith((".mcap", ".db3"))]
    return found


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
    camera_hw: tuple[int, int]

    @staticmethod
    def from_config(cfg: PwmConfig) -> _Plan:
        d = cfg.data
        return _Plan(d.history_frames, d.future_frames, d.num_waypoints, d.frame_stride, d.clip_step_frames,
                     round(cfg.model_dt_s * 1e9), round(1e9 / cfg.camera.frame_rate_hz),
                     round(d.waypoint_dt_s * 1e9), (cfg.tokenizer.ctx_height_px, cfg.tokenizer.ctx_width_px),
                     (cfg.camera.height_px, cfg.camera.width_px))

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


def _make_clip(reader: DriveReader, plan: _Plan, frame_t: np.ndarray, max_boxes: int, drive: int,
               scenario_ids: dict[str, int], box_max_age_ns: int | None) -> tuple[_ClipRecord | None, str]:
    """The labels of one clip whose frames have stamps ``frame_t``; ``(None, reason)`` when it must be skipped."""
    gaps = np.abs(np.diff(frame_t) - plan.model_dt_ns)
    if np.any(gaps > GAP_TOLERANCE * plan.camera_period_ns):
        return None, "dropped_frames"
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
    s = reader.summary
    if not s.has_odometry:
        raise DataError(f"bag {reader.path} has no odometry on {reader.topics.odometry}, which clips need for the "
                        f"ego trajectory")
    cam = cfg.camera
    if (s.image_width_px, s.image_height_px) != (cam.width_px, cam.height_px):
        raise DataError(f"bag {reader.path} has {s.image_width_px}x{s.image_height_px} px camera images, but the "
                        f"config's camera is {cam.width_px}x{cam.height_px} px: set camera.width_px and "
                        f"camera.height_px to match")
    stamps = reader.frame_stamps(limit=33)
    if len(stamps) >= 3:
        period_s = float(np.median(np.diff(stamps))) / 1e9
        expected_s = 1.0 / cam.frame_rate_hz
        if period_s <= 0 or abs(period_s - expected_s) > FRAME_RATE_TOLERANCE * expected_s:
            rate = 1.0 / period_s if period_s > 0 else math.inf
            raise DataError(f"bag {reader.path} has its camera at {rate:.3g} Hz, but camera.frame_rate_hz is "
                            f"{cam.frame_rate_hz:g}: set camera.frame_rate_hz to match")


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
                stats: dict[str, int], progress: bool, prefix: str
                ) -> Iterator[tuple[_ClipRecord, list[tuple[tuple[int, int], np.ndarray]]]]:
    """Stream one drive's camera frames once, keeping only the frames that pending clips still need."""
    period = reader.box_sets.median_period_ns()
    box_max_age = int(1.5 * period) + plan.camera_period_ns if period > 0 else None
    h, w = plan.frame_hw
    window: dict[int, tuple[int, np.ndarray | None]] = {}
    m = 0
    for i, t_ns, rgb in reader.frames(select=plan.needed):
        if rgb is not None:
            if rgb.shape[:2] != plan.camera_hw:
                raise DataError(f"camera frame {i} in {reader.path} is {rgb.shape[1]}x{rgb.shape[0]} px, but the "
                                f"drive started at {plan.camera_hw[1]}x{plan.camera_hw[0]} px")
            small = rgb if rgb.shape[:2] == (h, w) else cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
            window[i] = (t_ns, small)
        stats["frames"] += 1
        while m * plan.step + plan.span <= i:
            idx = [m * plan.step + j * plan.stride for j in range(plan.frames)]
            frame_t = np.array([window[k][0] for k in idx], np.int64)
            rec, why = _make_clip(reader, plan, frame_t, max_boxes, drive, scenario_ids, box_max_age)
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

    Every bag is opened and checked first (camera, odometry, image size, frame rate); nothing is written when
    one is unusable. The store is built in a temporary sibling directory and renamed at the end; an existing clip
    store at ``out`` is replaced. Raises DataError (one sentence) on bad input or when no clip fits any drive.
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
    max_boxes = max(r.box_sets.max_boxes for r in readers)
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
            for rec, frames in _iter_drive(reader, plan, k, max_boxes, scenario_ids, stats, progress, prefix):
                writer.add(rec, frames)
            sha, size = _hash_bag(reader.path)
            skipped = {key: v for key, v in stats.items() if key not in ("frames", "clips")}
            drives.append({"drive_id": drive_id, "path": str(reader.path), "storage": reader.summary.storage,
                           "size_bytes": size, "sha256": sha, "camera_frames": stats["frames"],
                           "duration_s": round(reader.summary.duration_s, 3), "clips": stats["clips"],
                           "skipped_clips": skipped})
            _progress(progress, f"{prefix}: {stats['frames']} frames -> {stats['clips']} clips"
                      + (f" (skipped: {skipped})" if skipped else ""), final=True)
        writer.flush()
        if writer.num_clips == 0:
            need_s = plan.span / cfg.camera.frame_rate_hz
            raise DataError(f"no clip fits in the {len(paths)} bag(s): a clip needs {plan.frames} model frames "
                            f"({need_s:.1f} s of camera) with odometry throughout")
        index = _index_dict(cfg, plan, writer, drives, scenario_ids, max_boxes, tmp)
        write_json_atomic(tmp / INDEX_FILE, index)
    _progress(progress, f"indexed {index['num_clips']} clips in {time.monotonic() - started:.1f} s", final=True)
    return ClipStoreMeta.from_index(out, index)


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _index_dict(cfg: PwmConfig, plan: _Plan, writer: _ShardWriter, drives: list[dict[str, Any]],
                scenario_ids: dict[str, int], max_boxes: int, root: Path) -> dict[str, Any]:
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


# ----------------------------------------------------------------------------------------------------
# Reading

@dataclass
class ClipStoreMeta:
    """What index.json says about a clip store."""

    path: Path
    format_version: int
    num_clips: int
    num_shards: int
    clip_frames: int
    frame_height_px: int
    frame_width_px: int
    max_boxes: int
    model_dt_s: float
    camera: dict[str, Any]
    data: dict[str, Any]
    tokenizer: dict[str, Any]
    drives: list[dict[str, Any]]
    scenarios: list[str]
    scenario_counts: dict[str, int]
    size_bytes: int
    preset: str
    shards: list[dict[str, Any]] = field(default_factory=list)

    @property
    def history_frames(self) -> int:
        return int(self.data["history_frames"])

    @property
    def future_frames(self) -> int:
        return int(self.data["future_frames"])

    @property
    def num_waypoints(self) -> int:
        return int(self.data["num_waypoints"])

    @staticmethod
    def from_index(path: Path, index: dict[str, Any]) -> ClipStoreMeta:
        cfg = index["config"]
        return ClipStoreMeta(
            path=Path(path), format_version=int(index["format_version"]), num_clips=int(index["num_clips"]),
            num_shards=int(index["num_shards"]), clip_frames=int(index["clip_frames"]),
            frame_height_px=int(index["frame_height_px"]), frame_width_px=int(index["frame_width_px"]),
            max_boxes=int(index["max_boxes"]), model_dt_s=float(index["model_dt_s"]), camera=dict(cfg["camera"]),
            data=dict(cfg["data"]), tokenizer=dict(cfg["tokenizer"]), drives=list(index["drives"]),
            scenarios=[str(s) for s in index["scenarios"]],
            scenario_counts={str(k): int(v) for k, v in index["scenario_counts"].items()},
            size_bytes=int(index["size_bytes"]), preset=str(index.get("preset", "")), shards=list(index["shards"]))


def _read_index(path: Path) -> ClipStoreMeta:
    if not path.exists():
        raise DataError(f"clip store {path} does not exist")
    index_path = path / INDEX_FILE
    if not index_path.is_file():
        raise DataError(f"{path} is not a clip store: it has no {INDEX_FILE} (build one with `pwm index`)")
    try:
        index = json.loads(index_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"clip store index {index_path} is corrupt ({exc})") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise DataError(f"{index_path} is not a pwm clip store index")
    if index.get("format_version") != FORMAT_VERSION:
        raise DataError(f"clip store {path} has format version {index.get('format_version')}, but this pwm reads "
                        f"version {FORMAT_VERSION}: rebuild it with `pwm index`")
    try:
        meta = ClipStoreMeta.from_index(path, index)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataError(f"clip store index {index_path} is corrupt (bad or missing entry {exc})") from None
    if sum(int(s["clips"]) for s in meta.shards) != meta.num_clips or len(meta.shards) != meta.num_shards:
        raise DataError(f"clip store index {index_path} is corrupt: its shard counts do not add up")
    return meta


class ClipStore:
    """Random access to the clips of a store; safe to share with DataLoader worker processes.

    Shards are opened lazily with ``np.load(mmap_mode="r")``, per process (a forked or unpickled copy reopens
    them), and at most ``max_open_shards`` stay open.
    """

    def __init__(self, path: str | os.PathLike[str], *, max_open_shards: int = 16) -> None:
        self.path = Path(path)
        self.meta = _read_index(self.path)
        for s in self.meta.shards:
            if not (self.path / s["name"]).is_dir():
                raise DataError(f"clip store {self.path} is incomplete: shard {s['name']} is missing")
        self._starts = np.cumsum([0] + [int(s["clips"]) for s in self.meta.shards])
        self.max_open_shards = max(1, int(max_open_shards))
        self._open: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        self._pid = os.getpid()

    def __len__(self) -> int:
        return self.meta.num_clips

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_open"] = OrderedDict()
        return state

    @property
    def scenario_counts(self) -> dict[str, int]:
        return dict(self.meta.scenario_counts)

    def _shard(self, k: int) -> dict[str, np.ndarray]:
        if self._pid != os.getpid():  # a forked worker: never share the parent's maps
            self._open, self._pid = OrderedDict(), os.getpid()
        arrays = self._open.get(k)
        if arrays is not None:
            self._open.move_to_end(k)
            return arrays
        info = self.meta.shards[k]
        shard = self.path / info["name"]
        arrays = {}
        for name in ARRAYS:
            f = shard / f"{name}.npy"
            try:
                arrays[name] = np.load(f, mmap_mode="r", allow_pickle=False)
            except FileNotFoundError:
                raise DataError(f"clip store {self.path} is incomplete: {info['name']}/{f.name} is missing") from None
            except (OSError, ValueError, EOFError) as exc:
                raise DataError(f"clip store file {f} is corrupt or truncated ({exc})") from None
        self._check_shard(k, arrays)
        self._open[k] = arrays
        while len(self._open) > self.max_open_shards:
            self._open.popitem(last=False)
        return arrays

    def _check_shard(self, k: int, a: dict[str, np.ndarray]) -> None:
        m, info = self.meta, self.meta.shards[k]
        n, T, K, N = int(info["clips"]), m.clip_frames, m.num_waypoints, m.max_boxes
        want = {"frames": (int(info["frames"]), m.frame_height_px, m.frame_width_px, 3), "frame_index": (n, T),
                "frame_t_ns": (n, T), "t_ns": (n,), "ego": (n, 3), "command": (n,),
                "history_xyyaw": (n, m.history_frames, 3), "waypoints_xyyaw": (n, K, 3), "waypoints_valid": (n, K),
                "boxes": (n, K, N, 7), "boxes_valid": (n, K, N), "drive": (n,), "scenario": (n,)}
        for name, shape in want.items():
            if a[name].shape != shape:
                raise DataError(f"clip store file {self.path / info['name'] / name}.npy is corrupt: shape "
                                f"{a[name].shape} instead of {shape}")

    def __getitem__(self, i: int) -> Clip:
        n = len(self)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"clip {i} is out of range for a store of {n} clips")
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        a = self._shard(k)
        r = i - int(self._starts[k])
        rows = np.asarray(a["frame_index"][r])
        if rows.min(initial=0) < 0 or rows.max(initial=0) >= a["frames"].shape[0]:
            raise DataError(f"clip store {self.path} shard {self.meta.shards[k]['name']} is corrupt: clip {r} refers "
                            f"to frames it does not have")
        ego = np.asarray(a["ego"][r], np.float64)
        drive, scenario = int(a["drive"][r]), int(a["scenario"][r])
        return Clip(
            drive_id=str(self.meta.drives[drive]["drive_id"]) if 0 <= drive < len(self.meta.drives) else "",
            t_ns=int(a["t_ns"][r]), frames_rgb=np.asarray(a["frames"][rows]),
            frame_t_ns=np.array(a["frame_t_ns"][r]), speed_mps=float(ego[0]), accel_mps2=float(ego[1]),
            yaw_rate_radps=float(ego[2]), command=int(a["command"][r]),
            history_xyyaw=np.array(a["history_xyyaw"][r]), waypoints_xyyaw=np.array(a["waypoints_xyyaw"][r]),
            waypoints_valid=np.array(a["waypoints_valid"][r]), boxes=np.array(a["boxes"][r]),
            boxes_valid=np.array(a["boxes_valid"][r]),
            scenario=self.meta.scenarios[scenario] if 0 <= scenario < len(self.meta.scenarios) else "")

    def check_compatible(self, cfg: PwmConfig) -> None:
        """Raise DataError (one sentence) when the store's clips were shaped by another config."""
        m = self.meta
        have = {"ctx image size": f"{m.frame_height_px}x{m.frame_width_px}",
                "model frame interval": f"{m.model_dt_s:.4g} s",
                "history frames": m.history_frames, "future frames": m.future_frames,
                "waypoints": m.num_waypoints, "waypoint interval": f"{float(m.data['waypoint_dt_s']):.4g} s"}
        want = {"ctx image size": f"{cfg.tokenizer.ctx_height_px}x{cfg.tokenizer.ctx_width_px}",
                "model frame interval": f"{cfg.model_dt_s:.4g} s",
                "history frames": cfg.data.history_frames, "future frames": cfg.data.future_frames,
                "waypoints": cfg.data.num_waypoints, "waypoint interval": f"{cfg.data.waypoint_dt_s:.4g} s"}
        diffs = [f"{k} {have[k]} (config: {want[k]})" for k in have if have[k] != want[k]]
        if diffs:
            raise DataError(f"clip store {self.path} was built for another config ({'; '.join(diffs)}): rebuild it "
                            f"with `pwm index` and this config")
