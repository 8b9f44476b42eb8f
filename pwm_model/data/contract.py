"""The train/serve contract: what training, evaluation and the runtime all feed the model, defined once (no torch).

- **The aspect rule.** A camera image whose aspect ratio (width / height) is within ``ASPECT_TOLERANCE`` (2 %) of
  the model input's is resized whole; any other is first centre-cropped to the model's aspect ratio (the largest
  centred window: a wider camera loses columns at both sides, a taller one rows at top and bottom), then resized.
  It is never squashed: squashing changes the shape of every object and the slope of every lane line, which the
  model never saw, while a crop keeps the pixels square and the view of the road ahead as the model learnt it (a
  letterbox would keep everything but add black bars the model never saw). ``model_window`` gives the crop,
  ``fit_rgb`` applies it, ``fit_note`` says it in one sentence. The clip store (``pwm index``), the runtime (the ROS
  node, ``pwm eval-bag``, the demo) and the exported graphs (``--camera-size``) all map a camera image to the model
  input through them; ``camera_on_image`` places the model's own (synthetic) camera on such an image by the same rule.
- **The resize.** Camera frames reach the tokenizer through ``cv2.resize``: area averaging to shrink, bilinear to
  enlarge (per image: when either axis grows the whole resize is bilinear). The clip store writes camera frames at
  the ctx resolution with it, the datasets make dyn-resolution frames with it, and the runtime, the bag evaluator and
  the exported graphs resize the live camera with it. Both kernels are linear and separable, so a resize is two
  matrix products ``Ry @ img @ Rx.T`` whose matrices are read off OpenCV itself (resizing an identity image); an
  exported graph carries them as constants and matches ``cv2.resize`` on float images exactly and on uint8 images
  within one grey level (OpenCV's uint8 kernels use fixed-point weights). Integer shrink factors become a plain box
  average.
- **The ego vector.** ``[speed_mps, accel_mps2, one_hot(command, 3), yaw_rate_radps]`` (``EGO_DIM`` = 6), float32.
  The yaw rate came last (models before it read the first 5 entries; their checkpoints load with a zero weight on it).
- **Frame pairing.** Consecutive model frames (training pairs, the runtime's history and guide frames) may sit
  ``FRAME_PAIR_TOLERANCE`` of ``model_dt_s`` away from their ideal spacing.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pwm_model.data.schema import COMMAND_STRAIGHT
from pwm_model.geometry import PinholeCamera

ASPECT_TOLERANCE = 0.02  # aspect ratios this close (relative) to the model input's are resized without a crop
EGO_DIM = 6
EGO_DIM_WITHOUT_YAW_RATE = 5  # the ego vector of models trained before the yaw rate joined it
COMMANDS = 3  # left, straight, right (pwm_model.data.schema)
COMMAND_SLICE = slice(2, 2 + COMMANDS)  # the command's one-hot in the ego vector
FRAME_PAIR_TOLERANCE = 0.25  # share of model_dt_s a consecutive model frame may deviate from its ideal stamp
MAX_PLAUSIBLE_SPEED_MPS = 70.0  # an ego speed beyond this (252 km/h) is a sensor fault, not a state to plan from
MAX_PLAUSIBLE_YAW_RATE_RADPS = 3.0  # a road vehicle turns slower (a full circle in 2 s); beyond is a sensor fault


def ego_vectors(speed_mps: np.ndarray, accel_mps2: np.ndarray, command: np.ndarray,
                yaw_rate_radps: np.ndarray | None = None) -> np.ndarray:
    """The model's ego input for n clips: (n,) speed, acceleration, command, yaw rate -> (n, EGO_DIM) float32.

    Commands outside 0..2 are clipped to the nearest valid one; no yaw rate gives zeros.
    """
    speed = np.asarray(speed_mps, np.float32).reshape(-1)
    out = np.zeros((len(speed), EGO_DIM), np.float32)
    out[:, 0] = speed
    out[:, 1] = np.asarray(accel_mps2, np.float32).reshape(-1)
    cmd = np.clip(np.asarray(command).astype(np.int64).reshape(-1), 0, COMMANDS - 1)
    out[np.arange(len(speed)), COMMAND_SLICE.start + cmd] = 1.0
    if yaw_rate_radps is not None:
        out[:, 2 + COMMANDS] = np.asarray(yaw_rate_radps, np.float32).reshape(-1)
    return out


@dataclass
class EgoInput:
    """Ego state at the camera stamp (from odometry when available) and the route command."""

    speed_mps: float = 0.0
    accel_mps2: float = 0.0
    command: int = COMMAND_STRAIGHT  # 0 left, 1 straight, 2 right
    yaw_rate_radps: float = 0.0  # positive turning left (counter-clockwise seen from above), as REP 103

    def as_vector(self) -> np.ndarray:
        """The world model's ego input (``ego_vectors``): float32 (EGO_DIM,)."""
        return ego_vectors(np.array([self.speed_mps]), np.array([self.accel_mps2]), np.array([self.command]),
                           np.array([self.yaw_rate_radps]))[0]


def resize_interpolation(in_hw: tuple[int, int], out_hw: tuple[int, int]) -> int:
    """The OpenCV interpolation the training pipeline uses: area to shrink, bilinear to enlarge."""
    shrink = out_hw[0] <= in_hw[0] and out_hw[1] <= in_hw[1]
    return cv2.INTER_AREA if shrink else cv2.INTER_LINEAR


def resize_rgb(img: np.ndarray, height_px: int, width_px: int) -> np.ndarray:
    """The one resize of a camera frame (H, W, 3) uint8 to (height_px, width_px): area to shrink, else bilinear."""
    if img.shape[:2] == (height_px, width_px):
        return img
    interp = resize_interpolation(img.shape[:2], (height_px, width_px))
    return cv2.resize(img, (width_px, height_px), interpolation=interp)


def model_window(in_hw: tuple[int, int], model_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """``(top_px, left_px, rows_px, cols_px)``: the part of an ``in_hw`` camera image that becomes the model's
    ``model_hw`` input under the aspect rule (module docstring): the whole image, or its centred crop."""
    rows, cols = int(in_hw[0]), int(in_hw[1])
    h, w = int(model_hw[0]), int(model_hw[1])
    ratio = (cols * h) / (rows * w)  # camera aspect over model aspect
    if abs(ratio - 1.0) <= ASPECT_TOLERANCE:
        return 0, 0, rows, cols
    if ratio > 1.0:  # wider than the model: keep the middle columns
        keep = min(cols, max(1, round(rows * w / h)))
        return 0, (cols - keep) // 2, rows, keep
    keep = min(rows, max(1, round(cols * h / w)))  # taller: keep the middle rows
    return (rows - keep) // 2, 0, keep, cols


def fit_rgb(img: np.ndarray, height_px: int, width_px: int) -> np.ndarray:
    """A camera image (H, W, 3) uint8 as the model's (height_px, width_px) input: centre-cropped to its aspect ratio
    when the aspect rule says so, then ``resize_rgb``."""
    top, left, rows, cols = model_window(img.shape[:2], (height_px, width_px))
    if (rows, cols) != tuple(img.shape[:2]):
        img = np.ascontiguousarray(img[top:top + rows, left:left + cols])
    return resize_rgb(img, height_px, width_px)


def fit_note(in_hw: tuple[int, int], model_hw: tuple[int, int]) -> str | None:
    """One sentence saying how an ``in_hw`` camera image is cropped for the ``model_hw`` input, or None when it is
    only resized."""
    top, left, rows, cols = model_window(in_hw, model_hw)
    if (rows, cols) == (int(in_hw[0]), int(in_hw[1])):
        return None
    kept = f"columns {left}-{left + cols - 1}" if cols != in_hw[1] else f"rows {top}-{top + rows - 1}"
    return (f"camera images are {in_hw[1]}x{in_hw[0]} px ({in_hw[1] / in_hw[0]:.3g}:1) but the model takes "
            f"{model_hw[1] / model_hw[0]:.3g}:1 ({model_hw[1]}x{model_hw[0]} px): each is centre-cropped to "
            f"{cols}x{rows} px ({kept}), then resized (never squashed)")


def camera_on_image(camera: PinholeCamera, height_px: int, width_px: int) -> PinholeCamera:
    """``camera`` drawn onto an image of another size: resampled when the aspect ratios agree (aspect rule), else
    placed on the image's centred window of the camera's aspect ratio, the part the model sees (``model_window``),
    with square pixels kept."""
    if (camera.width_px, camera.height_px) == (width_px, height_px):
        return camera
    top, left, rows, cols = model_window((height_px, width_px), (camera.height_px, camera.width_px))
    if (rows, cols) == (height_px, width_px):
        return camera.scaled(width_px, height_px)
    inner = camera.scaled(cols, rows)
    return PinholeCamera(width_px, height_px, inner.fx, inner.fy, inner.cx + left, inner.cy + top,
                         camera.base_from_camera)


def resize_matrix(in_len: int, out_len: int, interpolation: int) -> np.ndarray:
    """(out_len, in_len) float32 weights of a 1-D OpenCV resize: ``out = R @ in`` along one image axis."""
    eye = np.eye(in_len, dtype=np.float32)  # row i: an impulse at column i
    return np.ascontiguousarray(cv2.resize(eye, (out_len, in_len), interpolation=interpolation).T)


def integer_factor(in_hw: tuple[int, int], out_hw: tuple[int, int]) -> int | None:
    """The shrink factor when both axes shrink by the same whole number (a box average), else None."""
    if in_hw[0] % out_hw[0] or in_hw[1] % out_hw[1]:
        return None
    fy, fx = in_hw[0] // out_hw[0], in_hw[1] // out_hw[1]
    return fy if fy == fx else None


def resize_chain(in_hw: tuple[int, int], stages: list[tuple[int, int]]
                 ) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(from, to) pairs of the resizes from ``in_hw`` through each stage size, skipping identities."""
    pairs, cur = [], tuple(in_hw)
    for hw in stages:
        if tuple(hw) != cur:
            pairs.append((cur, tuple(hw)))
            cur = tuple(hw)
    return pairs
