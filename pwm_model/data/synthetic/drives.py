"""Synthetic drives written as rosbag2 bags with ``scenes.json`` beside them (``pwm gen-data``).

    write_synthetic_drives("out/drives", cfg, cfg.camera, seeds=[1000, 1001], seconds=60)

Each seed's drive goes to OUT/drive_seed<SEED>/; ``scenes.json`` lists every drive with its seed, split, length,
frame count, distribution shift (``shift``, null for the nominal world), scenario-label spans and ``events``:
every lead brake, cut-in and pull-out with its family, ``precursor_s`` (lamps or indicator on) and ``onset_s`` (the
vehicle brakes or moves across), seconds from the first frame. OUT is written to
a temporary sibling and renamed at the end: a failed run leaves nothing behind, and an existing OUT is replaced only
if it is empty or an earlier output of this function.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import TextIO

from pwm_model.config import CameraConfig, PwmConfig
from pwm_model.data.bag_writer import write_drive
from pwm_model.data.synthetic import EPOCH_NS, TRAIN_SEED_MIN, World
from pwm_model.data.synthetic.shift import check_shift, render_mount
from pwm_model.errors import DataError
from pwm_model.io_utils import atomic_path, write_json_atomic

MANIFEST = "scenes.json"
MANIFEST_FORMAT = "pwm-synthetic-drives"


def label_spans(labels: list[str], frame_dt_s: float) -> list[dict[str, float | str]]:
    """Runs of equal labels as ``{"label", "start_s", "end_s"}`` (end exclusive, relative to the first frame)."""
    spans: list[dict[str, float | str]] = []
    for i, label in enumerate(labels):
        if spans and spans[-1]["label"] == label:
            spans[-1]["end_s"] = round((i + 1) * frame_dt_s, 6)
        else:
            spans.append({"label": label, "start_s": round(i * frame_dt_s, 6), "end_s": round((i + 1) * frame_dt_s, 6)})
    return spans


def write_synthetic_drives(out: str | os.PathLike[str], cfg: PwmConfig, camera: CameraConfig, *, seeds: list[int],
                           seconds: float, scenario: str | None = None, compressed: bool = False,
                           storage: str = "mcap", shift: str | None = None, log: TextIO | None = None) -> Path:
    """Simulate one drive per seed with ``camera`` and write them under ``out`` (see the module docstring).

    ``shift`` renders every drive under one of ``SHIFTS`` (out-of-distribution data; the bag's CameraInfo stays
    ``camera``'s). Progress goes to ``log`` (default: standard error), a line per drive.
    """
    log = log if log is not None else sys.stderr
    check_shift(shift)
    camera.validate("camera")
    out = Path(out)
    _check_out(out)
    if seeds[0] < TRAIN_SEED_MIN <= seeds[-1]:
        print(f"note: seeds {seeds[0]}..{seeds[-1]} mix evaluation (< {TRAIN_SEED_MIN}) and training seeds",
              file=log)
    n_frames = max(1, round(seconds * camera.frame_rate_hz))
    frame_dt = 1.0 / camera.frame_rate_hz
    scenes = []
    start = time.monotonic()
    with atomic_path(out, is_dir=True) as tmp:
        tmp.mkdir(parents=True)
        for i, seed in enumerate(seeds):
            t0 = time.monotonic()
            world = World(seed, camera, scenario=scenario, seconds=seconds, shift=shift)
            renderer = world.renderer()
            labels: list[str] = []
            commands: list[int] = []

            def samples(world: World = world, renderer=renderer, labels: list[str] = labels,  # noqa: ANN001
                        commands: list[int] = commands):
                for k in range(n_frames):
                    if k:
                        world.step_frame()
                    sample = world.sample(renderer)
                    labels.append(sample.scenario)
                    commands.append(sample.command)
                    yield sample

            name = f"drive_seed{seed}"
            write_drive(tmp / name, samples(), camera, cfg.data.topics, compressed=compressed,
                        storage=storage)
            spans = label_spans(labels, frame_dt)
            scenes.append({
                "drive": name, "seed": seed, "split": "train" if seed >= TRAIN_SEED_MIN else "eval",
                "seconds": round(n_frames * frame_dt, 6), "frames": len(labels), "scenario": scenario,
                "time_of_day": world.appearance.time_of_day, "shift": shift, **_mount_entry(camera, shift),
                "lanes_forward": world.road.n_forward, "lanes_oncoming": world.road.n_oncoming,
                "lane_changes": int(world.ego.lane_changes_done), "labels": spans,
                "events": [e for e in world.events if "onset_s" in e],
            })
            summary = ", ".join(f"{k} {sum(1 for x in labels if x == k) * frame_dt:.1f} s"
                                for k in dict.fromkeys(labels))
            look = world.appearance.time_of_day + (f", shift {shift}" if shift else "")
            print(f"[{i + 1}/{len(seeds)}] {name}: {len(labels)} frames, {camera.width_px}x{camera.height_px} px, "
                  f"{look}; {summary} ({time.monotonic() - t0:.1f} s)", file=log, flush=True)
        write_json_atomic(tmp / MANIFEST, {
            "format": MANIFEST_FORMAT, "version": 1, "preset": cfg.preset, "camera": dataclasses.asdict(camera),
            "topics": dataclasses.asdict(cfg.data.topics), "storage": storage, "compressed": bool(compressed),
            "epoch_ns": EPOCH_NS,
            "scenes": scenes,
        })
    print(f"wrote {len(scenes)} drive(s), {sum(s['frames'] for s in scenes)} frames, to {out} in "
          f"{time.monotonic() - start:.1f} s", file=log)
    return out


def _mount_entry(camera: CameraConfig, shift: str | None) -> dict[str, dict[str, float]]:
    """``{"render_mount": ...}``: the rendering camera's mounting when a shift moves it, else nothing."""
    moved, roll_rad = render_mount(camera, shift)
    if moved == camera and roll_rad == 0.0:
        return {}
    return {"render_mount": {"mount_z_m": round(moved.mount_z_m, 6),
                             "pitch_down_deg": round(moved.pitch_down_deg, 6),
                             "roll_deg": round(math.degrees(roll_rad), 6)}}


def _check_out(out: Path) -> None:
    """Refuse to replace anything but an empty folder or an earlier gen-data output."""
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise DataError(f"refusing to overwrite {out}: it exists and is not a folder")
    if not any(out.iterdir()):
        return
    try:
        ours = json.loads((out / MANIFEST).read_text()).get("format") == MANIFEST_FORMAT
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise DataError(f"refusing to overwrite {out}: it is not empty and holds no gen-data {MANIFEST}")


