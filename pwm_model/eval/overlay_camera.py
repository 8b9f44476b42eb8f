"""The camera ``pwm eval-bag`` draws plans with, chosen once per bag, in this order:

1. the bag's own ``sensor_msgs/CameraInfo`` (``topics.camera_info``) where it has a usable K (fx, fy > 0, finite);
2. intrinsics given on the command line (``--camera-intrinsics FX,FY,CX,CY``, pixels at the bag's image size);
3. the model's synthetic camera (its config's field of view), placed on the image by the contract's aspect rule
   (``contract.camera_on_image``) and said once on stderr.

CameraInfo carries no mounting, so the mounting in ``base_link`` is the model config's unless ``--camera-mount`` /
``--camera-pitch-down-deg`` give it. What was used is recorded in ``metrics.json`` (``inputs.overlay_camera``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pwm_model.config import CameraConfig
from pwm_model.data.contract import camera_on_image
from pwm_model.errors import ConfigError
from pwm_model.geometry import PinholeCamera

CAMERA_INFO, COMMAND_LINE, SYNTHETIC = "camera_info", "--camera-intrinsics", "synthetic"
MAX_PITCH_DEG = 45.0  # as camera.pitch_down_deg


@dataclass(frozen=True)
class CameraOptions:
    """The overlay camera given on the command line (None: not given)."""

    intrinsics_px: tuple[float, float, float, float] | None = None  # fx, fy, cx, cy at the bag's image size
    mount_xyz_m: tuple[float, float, float] | None = None  # camera origin in base_link
    pitch_down_deg: float | None = None  # positive tilts the optical axis towards the road


def _floats(text: str, flag: str, names: tuple[str, ...]) -> tuple[float, ...]:
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != len(names):
        raise ConfigError(f"{flag} must be {len(names)} numbers {','.join(names)} separated by commas, got {text!r}")
    bad = [n for n, v in zip(names, values) if not math.isfinite(v)]
    if bad:
        raise ConfigError(f"{flag} {text} has a value that is not a finite number ({bad[0]}): give finite numbers")
    return values


def camera_options(intrinsics: str | None = None, mount: str | None = None,
                   pitch_down_deg: float | None = None) -> CameraOptions:
    """The checked command-line camera; raises ConfigError (one sentence) on a bad value."""
    k = None
    if intrinsics is not None:
        fx, fy, cx, cy = _floats(intrinsics, "--camera-intrinsics", ("FX", "FY", "CX", "CY"))
        if fx <= 0 or fy <= 0:
            raise ConfigError(f"--camera-intrinsics {intrinsics} has a focal length that is not positive (fx {fx:g}, "
                              f"fy {fy:g} px): give the camera's K[0,0] and K[1,1] in pixels")
        k = (fx, fy, cx, cy)
    xyz = None
    if mount is not None:
        x, y, z = _floats(mount, "--camera-mount", ("X", "Y", "Z"))
        if z <= 0:
            raise ConfigError(f"--camera-mount {mount} puts the camera at {z:g} m, not above the ground: give its "
                              "height above base_link's ground plane as Z in metres")
        xyz = (x, y, z)
    if pitch_down_deg is not None and not (math.isfinite(pitch_down_deg) and abs(pitch_down_deg) <= MAX_PITCH_DEG):
        raise ConfigError(f"--camera-pitch-down-deg must be a number of degrees within +-{MAX_PITCH_DEG:g}, got "
                          f"{pitch_down_deg!r}")
    return CameraOptions(k, xyz, pitch_down_deg)


def mounted(camera: CameraConfig, opts: CameraOptions | None) -> PinholeCamera:
    """The configured (synthetic) camera with the mounting ``opts`` gives, where it gives one."""
    change: dict[str, float] = {}
    if opts is not None and opts.mount_xyz_m is not None:
        change.update(zip(("mount_x_m", "mount_y_m", "mount_z_m"), opts.mount_xyz_m))
    if opts is not None and opts.pitch_down_deg is not None:
        change["pitch_down_deg"] = float(opts.pitch_down_deg)
    return PinholeCamera.from_config(dataclasses.replace(camera, **change) if change else camera)


def _usable_k(info: dict[str, Any] | None) -> np.ndarray | None:
    if not info:
        return None
    k = np.asarray(info["K"], np.float64)
    return k if np.all(np.isfinite(k)) and k[0, 0] > 0 and k[1, 1] > 0 else None


def overlay_camera(reader: Any, configured: PinholeCamera,
                   intrinsics_px: tuple[float, float, float, float] | None = None) -> tuple[PinholeCamera, str]:
    """``(camera, source)`` for the bag ``reader`` streams (module docstring); ``configured`` gives the mounting and
    the synthetic fallback. Raises ConfigError when ``intrinsics_px`` put the principal point off the image."""
    s = reader.summary
    w_px, h_px = int(s.image_width_px), int(s.image_height_px)
    info = reader.camera_info
    k = _usable_k(info)
    pose = configured.base_from_camera
    if k is not None:
        w = int(info["width_px"]) if info["width_px"] > 0 and info["height_px"] > 0 else w_px
        h = int(info["height_px"]) if info["width_px"] > 0 and info["height_px"] > 0 else h_px
        return PinholeCamera(w, h, float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]), pose), CAMERA_INFO
    if intrinsics_px is not None:
        fx, fy, cx, cy = intrinsics_px
        if not (0.0 <= cx <= w_px - 1 and 0.0 <= cy <= h_px - 1):
            raise ConfigError(f"--camera-intrinsics puts the principal point at ({cx:g}, {cy:g}) px, outside the "
                              f"{w_px}x{h_px} px images of {reader.path}: give the intrinsics at the bag's image size")
        return PinholeCamera(w_px, h_px, float(fx), float(fy), float(cx), float(cy), pose), COMMAND_LINE
    return configured, SYNTHETIC


def describe(camera: PinholeCamera, source: str, width_px: int, height_px: int) -> dict[str, Any]:
    """The overlay camera as ``metrics.json`` records it: its source and its intrinsics on the bag's images."""
    cam = camera_on_image(camera, height_px, width_px) if width_px > 0 and height_px > 0 else camera
    t = cam.base_from_camera.translation
    return {"source": source, "width_px": cam.width_px, "height_px": cam.height_px,
            "fx_px": round(cam.fx, 4), "fy_px": round(cam.fy, 4), "cx_px": round(cam.cx, 4), "cy_px": round(cam.cy, 4),
            "mount_xyz_m": [round(float(v), 4) for v in t]}
