"""Camera frames to verify, compare and calibrate with: a rosbag2 drive, a clip store, or the synthetic world.

    for rgb, t_ns, ego in camera_frames(source, cfg, max_frames=20):
        plan = runner.step(rgb, t_ns, ego)

``source`` None renders a held-out synthetic drive (seed 0, the demo drive) at the configured camera, ``synthetic:N``
the synthetic drive of seed N (calibration frames without a dataset: seeds < 1000 are held out). A clip store
yields each clip's frames at the ctx resolution (model frames only, consecutive clips merged by stamp).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pwm_model.config import PwmConfig
from pwm_model.data.contract import EgoInput, fit_rgb
from pwm_model.errors import DataError

SYNTHETIC_SEED = 0  # held-out evaluation drive (seeds < 1000; pwm_model/data/synthetic)
SYNTHETIC_PREFIX = "synthetic:"


def camera_frames(source: str | os.PathLike[str] | None, cfg: PwmConfig, max_frames: int,
                  camera_size: tuple[int, int] | None = None) -> Iterator[tuple[np.ndarray, int, EgoInput]]:
    """Up to ``max_frames`` (rgb uint8, t_ns, EgoInput) in stamp order; ``camera_size`` (cols, rows) fits them to that
    size by the contract's aspect rule (``fit_rgb``)."""
    frames = _frames(source, cfg, max_frames)
    for rgb, t_ns, ego in frames:
        if camera_size is not None:
            rgb = fit_rgb(rgb, camera_size[1], camera_size[0])
        yield np.ascontiguousarray(rgb), t_ns, ego


def synthetic_seed(source: str | os.PathLike[str] | None) -> int | None:
    """The seed a source names (None: the held-out drive; ``synthetic:N``: seed N), or None for a path."""
    if source is None:
        return SYNTHETIC_SEED
    text = str(source)
    if not text.startswith(SYNTHETIC_PREFIX):
        return None
    try:
        return int(text[len(SYNTHETIC_PREFIX):])
    except ValueError:
        raise DataError(f"{text!r} is not a synthetic drive: write {SYNTHETIC_PREFIX}SEED, e.g. synthetic:7") from None


def _frames(source: str | os.PathLike[str] | None, cfg: PwmConfig, max_frames: int
            ) -> Iterator[tuple[np.ndarray, int, EgoInput]]:
    seed = synthetic_seed(source)
    if seed is not None:
        from pwm_model.data.synthetic import simulate_drive

        seconds = (max_frames + 1) / cfg.camera.frame_rate_hz
        for i, s in enumerate(simulate_drive(seed=seed, seconds=seconds, camera=cfg.camera)):
            if i >= max_frames:
                return
            yield s.image_rgb, s.t_ns, EgoInput(s.ego.speed_mps, s.ego.accel_mps2, s.command, s.ego.yaw_rate_radps)
        return
    path = Path(source)
    from pwm_model.data.bag import DriveReader, is_bag_path

    if is_bag_path(path):
        for i, s in enumerate(DriveReader(path, cfg.data.topics).samples()):
            if i >= max_frames:
                return
            yield s.image_rgb, s.t_ns, EgoInput(s.ego.speed_mps, s.ego.accel_mps2, s.command, s.ego.yaw_rate_radps)
        return
    if (path / "index.json").is_file():
        from pwm_model.data.clips import ClipStore

        store = ClipStore(path)
        drive, last, n = None, None, 0
        for i in range(len(store)):
            clip = store[i]
            if drive is not None and clip.drive_id != drive:
                return  # one drive only: another drive's stamps do not continue this one
            for rgb, t in zip(clip.frames_rgb, clip.frame_t_ns):
                if last is not None and int(t) <= last:
                    continue  # consecutive clips share frames
                drive, last = clip.drive_id, int(t)
                yield np.asarray(rgb), int(t), EgoInput(clip.speed_mps, clip.accel_mps2, clip.command,
                                                          clip.yaw_rate_radps)
                n += 1
                if n >= max_frames:
                    return
        return
    raise DataError(f"{path} is neither a rosbag2 drive nor a clip store (no index.json)")
