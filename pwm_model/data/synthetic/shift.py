"""Distribution shifts: conditions the training world never samples, for out-of-distribution (surprise) checks.

A shift changes only how a drive looks (its appearance, or the camera that renders it), never the traffic, the ego
motion, the labels, the poses or the route command: a shifted drive and the nominal drive of the same seed have
identical trajectories and scenario timelines. Nothing here draws from the drive's random streams.

- ``snow``: an overcast winter day: grass and shoulders near-white, asphalt lighter and bluish-grey, a pale sky,
  snow-dusted trees and bushes (an appearance shift);
- ``sodium``: night lit by sodium street lamps: the whole image in an orange monochrome (a lighting shift);
- ``camera_mount``: the camera mounted differently, 4 deg more pitch down, 3 deg of roll and 0.35 m higher; the
  model's camera config is unchanged, only the rendering camera moves (a camera-mounting shift).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import cv2
import numpy as np

from pwm_model.config import CameraConfig
from pwm_model.data.synthetic.agents import VehicleView
from pwm_model.data.synthetic.appearance import Appearance
from pwm_model.data.synthetic.names import SHIFTS
from pwm_model.data.synthetic.render import Renderer
from pwm_model.data.synthetic.road import Road
from pwm_model.data.synthetic.scenery import KIND_BUSH, KIND_PATCH, KIND_TREE, Scenery
from pwm_model.errors import ConfigError

__all__ = ["SHIFTS", "ShiftedRenderer", "check_shift", "make_renderer", "render_mount", "shift_appearance",
           "shift_scenery"]

MOUNT_PITCH_DOWN_DEG = 4.0  # camera_mount: extra pitch towards the road
MOUNT_ROLL_DEG = 3.0  # camera_mount: roll about the optical axis (REP-103 sense: positive lifts the camera's left)
MOUNT_DZ_M = 0.35  # camera_mount: extra mounting height

_SNOW = (236.0, 239.0, 244.0)
_SNOW_PATCH = (222.0, 227.0, 235.0)
_SNOW_DUST = 0.4  # fraction of snow white mixed into trees and bushes
SODIUM_RGB = (1.35, 0.74, 0.16)  # sodium lamp colour: output channel = this x image luminance


def check_shift(shift: str | None) -> None:
    """Raise ``ConfigError`` (one sentence) unless ``shift`` is None or one of ``SHIFTS``."""
    if shift is not None and shift not in SHIFTS:
        raise ConfigError(f"unknown shift {shift!r}: choose one of {', '.join(SHIFTS)}")


# ----------------------------------------------------------------------------------------------------
# appearance and scenery
def shift_appearance(app: Appearance, shift: str | None) -> Appearance:
    """The drive's look under ``shift`` (the nominal one for None and camera_mount)."""
    check_shift(shift)
    if shift == "snow":
        return _snow(app)
    if shift == "sodium":
        return _sodium(app)
    return app


def _snow(app: Appearance) -> Appearance:
    grey = float(np.mean(app.asphalt))  # keeps the drive's own asphalt shade, lifted and turned bluish
    return dataclasses.replace(
        app, time_of_day="day", sky_top=(196.0, 202.0, 210.0), sky_horizon=(224.0, 227.0, 232.0),
        hills=(205.0, 210.0, 220.0), grass=_SNOW, grass_patch=_SNOW_PATCH,
        asphalt=(grey + 45.0, grey + 53.0, grey + 68.0), shoulder=(228.0, 231.0, 237.0),
        fog=(218.0, 221.0, 227.0), fog_dist_m=260.0, light=1.0, lamps_on=False, sun_dir=(0.0, 0.0, 1.0),
    )


def _sodium(app: Appearance) -> Appearance:
    return dataclasses.replace(
        app, time_of_day="night", sky_top=(12.0, 10.0, 8.0), sky_horizon=(70.0, 48.0, 24.0),
        hills=(22.0, 18.0, 14.0), fog=(34.0, 24.0, 12.0), fog_dist_m=110.0, light=0.9, lamps_on=True,
        sun_dir=(0.0, 0.0, 1.0),
    )


def shift_scenery(scenery: Scenery, shift: str | None) -> Scenery:
    """Roadside objects under ``shift``: for snow, white ground patches and snow-dusted trees and bushes."""
    check_shift(shift)
    if shift != "snow" or not len(scenery):
        return scenery
    colors = scenery.colors.copy()
    patch = scenery.kind == KIND_PATCH
    if patch.any():  # keep each patch's small offset from the mean, so the ground keeps its texture
        colors[patch] = np.clip(colors[patch] - colors[patch].mean(axis=0) + _SNOW_PATCH, 0, 255)
    plant = np.isin(scenery.kind, (KIND_TREE, KIND_BUSH))
    colors[plant] += (np.asarray(_SNOW) - colors[plant]) * _SNOW_DUST
    return dataclasses.replace(scenery, colors=colors)


# ----------------------------------------------------------------------------------------------------
# the rendering camera
def render_mount(camera: CameraConfig, shift: str | None) -> tuple[CameraConfig, float]:
    """The camera that renders a drive under ``shift`` and its roll about the optical axis (rad)."""
    check_shift(shift)
    if shift != "camera_mount":
        return camera, 0.0
    moved = dataclasses.replace(camera, pitch_down_deg=camera.pitch_down_deg + MOUNT_PITCH_DOWN_DEG,
                                mount_z_m=camera.mount_z_m + MOUNT_DZ_M)
    return moved, math.radians(MOUNT_ROLL_DEG)


def make_renderer(camera: CameraConfig, road: Road, scenery: Scenery, appearance: Appearance, shift: str | None, *,
                  width_px: int | None = None, height_px: int | None = None) -> Renderer | ShiftedRenderer:
    """The drive's renderer under ``shift`` (exactly the nominal ``Renderer`` for None and snow)."""
    cam, roll_rad = render_mount(camera, shift)
    tint = SODIUM_RGB if shift == "sodium" else None
    if roll_rad == 0.0 and tint is None:
        return Renderer(cam, road, scenery, appearance, width_px=width_px, height_px=height_px)
    return ShiftedRenderer(cam, road, scenery, appearance, roll_rad=roll_rad, tint_rgb=tint, width_px=width_px,
                           height_px=height_px)


class ShiftedRenderer:
    """A ``Renderer`` whose image is rolled about the principal point and / or tinted by one light colour.

    A roll about the optical axis is exactly a rotation of the image about the principal point (square pixels), so
    the scene is rendered on a canvas padded to cover the rotated frame, with the same focal length, then warped.
    """

    def __init__(self, camera: CameraConfig, road: Road, scenery: Scenery, appearance: Appearance, *,
                 roll_rad: float = 0.0, tint_rgb: tuple[float, float, float] | None = None,
                 width_px: int | None = None, height_px: int | None = None) -> None:
        self.out_w, self.out_h = int(width_px or camera.width_px), int(height_px or camera.height_px)
        self.roll_rad = float(roll_rad)
        c, s = math.cos(self.roll_rad), abs(math.sin(self.roll_rad))
        self.pad_x = math.ceil((c - 1.0) * self.out_w / 2 + s * self.out_h / 2) + 2 if roll_rad else 0
        self.pad_y = math.ceil(s * self.out_w / 2 + (c - 1.0) * self.out_h / 2) + 2 if roll_rad else 0
        w, h = self.out_w + 2 * self.pad_x, self.out_h + 2 * self.pad_y
        fx_px = (self.out_w / 2.0) / math.tan(math.radians(camera.hfov_deg) / 2.0)
        canvas = dataclasses.replace(camera, width_px=w, height_px=h,
                                     hfov_deg=math.degrees(2.0 * math.atan(w / 2.0 / fx_px)))
        self.inner = Renderer(canvas, road, scenery, appearance, supersample=2 if self.out_h <= 320 else 1)
        self.warp = _roll_warp(self.roll_rad, (w - 1) / 2.0, (h - 1) / 2.0, self.pad_x, self.pad_y)
        self.tint_lut = None if tint_rgb is None else _tint_lut(tint_rgb)

    def render(self, x_m: float, y_m: float, yaw_rad: float, vehicles: Sequence[VehicleView] = (), *,
               s_hint_m: float | None = None) -> np.ndarray:
        """The camera image (out_h, out_w, 3) uint8 RGB; arguments as ``Renderer.render``."""
        img = self.inner.render(x_m, y_m, yaw_rad, vehicles, s_hint_m=s_hint_m)
        if self.roll_rad:
            img = cv2.warpAffine(img, self.warp, (self.out_w, self.out_h), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE)
        if self.tint_lut is not None:
            img = self.tint_lut[cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)]
        return img

    def project_world(self, points_world: np.ndarray, x_m: float, y_m: float, yaw_rad: float
                      ) -> tuple[np.ndarray, np.ndarray]:
        """World points (..., 3) -> pixels (..., 2) of the output image and ``in_front``, as ``Renderer``'s."""
        uv, in_front = self.inner.project_world(points_world, x_m, y_m, yaw_rad)
        return uv @ self.warp[:, :2].T + self.warp[:, 2], in_front


def _roll_warp(roll_rad: float, cx_px: float, cy_px: float, pad_x: int, pad_y: int) -> np.ndarray:
    """2 x 3 affine map from canvas pixels to output pixels: rotate about the principal point, crop the padding.

    A positive roll lifts the camera's left side, so the scene turns counter-clockwise on screen (v points down).
    """
    c, s = math.cos(roll_rad), math.sin(roll_rad)
    rot = np.array([[c, s], [-s, c]])
    centre = np.array([cx_px, cy_px])
    return np.concatenate([rot, (centre - rot @ centre - np.array([pad_x, pad_y]))[:, None]], axis=1)


def _tint_lut(rgb: tuple[float, float, float]) -> np.ndarray:
    """(256, 3) uint8: luminance -> the colour of a single light."""
    return np.clip(np.arange(256, dtype=float)[:, None] * np.asarray(rgb)[None, :], 0, 255).round().astype(np.uint8)
