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
- **The ego vector.** ``[speed_mps, accel_mps2, one_hot(command, 3), yaw_rate_radps, command_age_s]`` (``EGO_DIM``
  = 7), float32. ``command_age_s`` is how long the route command has had its present value, capped at
  ``MAX_COMMAND_AGE_S`` (an unknown age reads as the cap: a command that has stood for long): a lane-change command
  leads its manoeuvre by a second or two, so its age says when the manoeuvre starts. The yaw rate and then the age
  came last (models before them read the first 5 or 6 entries; their checkpoints load with a zero weight there).
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
EGO_DIM = 7
EGO_DIM_WITHOUT_YAW_RATE = 5  # the ego vector of models trained before the yaw rate joined it
EGO_DIM_WITHOUT_COMMAND_AGE = 6  # ... and of models trained before the command's age joined it
MAX_COMMAND_AGE_S = 5.0  # the command age saturates here: past it, how long a command has stood says nothing more
COMMANDS = 3  # left, straight, right (pwm_model.data.schema)
COMMAND_SLICE = slice(2, 2 + COMMANDS)  # the command's one-hot in the ego vector
YAW_RATE_INDEX, COMMAND_AGE_INDEX = 2 + COMMANDS, 3 + COMMANDS  # the ego vector's last two entries
FRAME_PAIR_TOLERANCE = 0.25  # share of model_dt_s a consecutive model frame may deviate from its ideal stamp
MAX_PLAUSIBLE_SPEED_MPS = 70.0  # an ego speed beyond this (252 km/h) is a sensor fault, not a state to plan from
MAX_PLAUSIBLE_YAW_RATE_RADPS = 3.0  # a road vehicle turns slower (a full circle in 2 s); beyond is a sensor fault


def ego_vectors(speed_mps: np.ndarray, accel_mps2: np.ndarray, command: np.ndarray,
                yaw_rate_radps: np.ndarray | None = None, command_age_s: np.ndarray | None = None) -> np.ndarray:
    """The model's ego input for n clips: (n,) speed, acceleration, command, yaw rate, command age -> (n, EGO_DIM)
    float32.

    Commands outside 0..2 are clipped to the nearest valid one; no yaw rate gives zeros; ages are clipped to
    0..MAX_COMMAND_AGE_S, and no age (or a NaN one) reads as MAX_COMMAND_AGE_S.
    """
    speed = np.asarray(speed_mps, np.float32).reshape(-1)
    out = np.zeros((len(speed), EGO_DIM), np.float32)
    out[:, 0] = speed
    out[:, 1] = np.asarray(accel_mps2, np.float32).reshape(-1)
    cmd = np.clip(np.asarray(command).astype(np.int64).reshape(-1), 0, COMMANDS - 1)
    out[np.arange(len(speed)), COMMAND_SLICE.start + cmd] = 1.0
    if yaw_rate_radps is not None:
        out[:, YAW_RATE_INDEX] = np.asarray(yaw_rate_radps, np.float32).reshape(-1)
    out[:, COMMAND_AGE_INDEX] = MAX_COMMAND_AGE_S
    if command_age_s is not None:
        age = np.asarray(command_age_s, np.float32).reshape(-1)
        out[:, COMMAND_AGE_INDEX] = np.clip(np.where(np.isfinite(age), age, MAX_COMMAND_AGE_S), 0.0, MAX_COMMAND_AGE_S)
    return out


def command_ages_s(t_ns: np.ndarray, drive: np.ndarray, command: np.ndarray) -> np.ndarray:
    """(n,) seconds each clip's route command has had its value, from the clips' own sequence (clips of one drive
    in time order; a run of equal commands starts at a change): the clip where the command changed is age 0, the
    next ones count on from it. A run that starts with the drive's first clip, or after a gap of more than twice
    the drive's usual clip spacing, has no known start and reads as ``MAX_COMMAND_AGE_S``. Capped there."""
    t = np.asarray(t_ns, np.int64).reshape(-1)
    d, c = np.asarray(drive).reshape(-1), np.asarray(command).reshape(-1)
    age = np.full(len(t), MAX_COMMAND_AGE_S, np.float32)
    for one in np.unique(d):
        rows = np.nonzero(d == one)[0]
        rows = rows[np.argsort(t[rows], kind="stable")]
        steps = np.diff(t[rows])
        max_gap = 2 * int(np.median(steps)) if len(steps) else 0
        start = None  # stamp of the change that began the present run, None while unknown
        for j, r in enumerate(rows):
            if j > 0 and steps[j - 1] > max_gap:
                start = None
            elif j > 0 and c[r] != c[rows[j - 1]]:
                start = int(t[r])
            if start is not None:
                age[r] = min((int(t[r]) - start) / 1e9, MAX_COMMAND_AGE_S)
    return age


class CommandAge:
    """How long a stream of route commands has had its present value (the node, the closed loop): ``see`` each
    command, ``age_s`` at a later stamp. Until the value first changes its age is unknown and reads as
    ``MAX_COMMAND_AGE_S``, as ``command_ages_s`` and ``Commands.age_s`` of a bag read it. A change seen without a stamp
    (``std_msgs/UInt8`` carries none) takes the stamp of the next ``age_s`` call: the next camera frame's, so the age
    lives on the camera's clock whatever the node's clock is."""

    def __init__(self) -> None:
        self.value: int | None = None
        self.since_ns: int | None = None
        self._pending = False

    def see(self, command: int, t_ns: int | None = None) -> None:
        if self.value is not None and int(command) != self.value:
            self.since_ns, self._pending = (None, True) if t_ns is None else (int(t_ns), False)
        self.value = int(command)

    def age_s(self, t_ns: int) -> float:
        if self._pending:
            self.since_ns, self._pending = int(t_ns), False
        if self.since_ns is None:
            return MAX_COMMAND_AGE_S
        return float(min(max(int(t_ns) - self.since_ns, 0) / 1e9, MAX_COMMAND_AGE_S))

    def reset(self) -> None:
        self.value = self.since_ns = None
        self._pending = False


def label_ego_vectors(labels: dict[str, np.ndarray]) -> np.ndarray:
    """The ego vectors of a clip store's labels (``pwm_model.data.tokens.load_labels``)."""
    return ego_vectors(labels["ego"][:, 0], labels["ego"][:, 1], labels["command"], labels["ego"][:, 2],
                       labels.get("command_age_s"))


@dataclass
class EgoInput:
    """Ego state at the camera stamp (from odometry when available) and the route command."""

    speed_mps: float = 0.0
    accel_mps2: float = 0.0
    command: int = COMMAND_STRAIGHT  # 0 left, 1 straight, 2 right
    yaw_rate_radps: float = 0.0  # positive turning left (counter-clockwise seen from above), as REP 103
    command_age_s: float = MAX_COMMAND_AGE_S  # how long the command has had its value (unknown: the cap)

    def as_vector(self) -> np.ndarray:
        """The world model's ego input (``ego_vectors``): float32 (EGO_DIM,)."""
        return ego_vectors(np.array([self.speed_mps]), np.array([self.accel_mps2]), np.array([self.command]),
                           np.array([self.yaw_rate_radps]), np.array([self.command_age_s]))[0]


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
