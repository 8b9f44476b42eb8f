"""The clip store: rosbag2 drives indexed into fixed-shape training clips (``schema.Clip``) in memory-mappable shards.

    meta = build_clip_store(["out/drives"], "out/clips", cfg)      # clip_builder.py
    store = ClipStore("out/clips"); store.check_compatible(cfg); clip = store[0]

Layout (every array a plain ``.npy`` file, opened with ``np.load(mmap_mode="r")``):

    STORE/index.json          format version, counts, the config sections that shaped the clips, source bags
                              (path, size, sha256, odometry, clips), scenario names and counts, shards, and
                              ``ego_labels``: false for a store of drives without odometry (no labels below)
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

import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pwm_model.config import PwmConfig
from pwm_model.data.schema import Clip
from pwm_model.errors import DataError
from pwm_model.io_utils import read_json_document

FORMAT = "pwm-clip-store"
FORMAT_VERSION = 1
INDEX_FILE = "index.json"
ARRAYS = ("frames", "frame_index", "frame_t_ns", "t_ns", "ego", "command", "history_xyyaw", "waypoints_xyyaw",
          "waypoints_valid", "boxes", "boxes_valid", "drive", "scenario")
FRAME_RATE_TOLERANCE = 0.2  # a bag's camera period may differ this much (relative) from camera.frame_rate_hz
GAP_TOLERANCE = 0.5  # clip frames may deviate this many camera periods from model_dt_s (else: dropped frames)


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
    ego_labels: bool = True  # False: indexed from drives without odometry (no ego, waypoint or box labels)

    @property
    def history_frames(self) -> int:
        return int(self.data["history_frames"])

    @property
    def future_frames(self) -> int:
        return int(self.data["future_frames"])

    @property
    def num_waypoints(self) -> int:
        return int(self.data["num_waypoints"])

    def drive_cameras(self) -> list[dict[str, Any]]:
        """Each drive's camera (index.json ``drives[i]["camera"]``: width_px, height_px, topic, ...); a store indexed
        before drives recorded it had the config's camera size throughout and the config's image topic."""
        topics = self.data.get("topics") or {}
        old = {"width_px": self.camera.get("width_px"), "height_px": self.camera.get("height_px"),
               "topic": topics.get("image")}
        return [dict(d.get("camera") or old) for d in self.drives]

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
            size_bytes=int(index["size_bytes"]), preset=str(index.get("preset", "")), shards=list(index["shards"]),
            ego_labels=bool(index.get("ego_labels", True)))


def camera_record(metas: list[ClipStoreMeta]) -> dict[str, Any]:
    """The camera a set of clip stores came from, as a checkpoint records it: ``width_px`` / ``height_px`` (None
    when the drives differ; every size in ``sizes_px``), ``camera_topic`` (None when they differ), the stores'
    ``topics`` (their ``data.topics``; None when they differ), ``camera_info`` (every drive had one) and the
    ``stores``."""
    cams = [c for m in metas for c in m.drive_cameras()]
    sizes = sorted({(int(c["width_px"]), int(c["height_px"])) for c in cams if c.get("width_px")})
    cam_topics = sorted({str(c["topic"]) for c in cams if c.get("topic")})
    topics = [m.data.get("topics") for m in metas]
    one = len(sizes) == 1
    return {"width_px": sizes[0][0] if one else None, "height_px": sizes[0][1] if one else None,
            "sizes_px": [list(wh) for wh in sizes], "camera_topic": cam_topics[0] if len(cam_topics) == 1 else None,
            "topics": topics[0] if topics and all(t == topics[0] for t in topics) else None,
            "camera_info": bool(cams) and all(bool(c.get("camera_info")) for c in cams),
            "stores": [str(m.path) for m in metas]}


def _read_index(path: Path) -> ClipStoreMeta:
    if not path.exists():
        raise DataError(f"clip store {path} does not exist")
    index_path = path / INDEX_FILE
    if not index_path.is_file():
        raise DataError(f"{path} is not a clip store: it has no {INDEX_FILE} (build one with `pwm index`)")
    index = read_json_document(index_path, what="clip store index", error=DataError, fmt=FORMAT,
                               version=FORMAT_VERSION, hint="rebuild it with `pwm index`")
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
