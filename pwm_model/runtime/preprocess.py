"""Image resizing shared by the exported graphs and the CPU path of the runner (numpy + OpenCV, no torch).

Training frames reach the tokenizer through ``cv2.resize``: area averaging to shrink (camera -> ctx resolution when
the clip store is written, ctx -> dyn resolution for the dyn branch), bilinear to enlarge (a camera smaller than the
ctx resolution). Both are linear and separable, so a resize is two matrix
products ``Ry @ img @ Rx.T`` whose matrices are read off OpenCV itself (resizing an identity image); an exported graph
carries them as constants and matches ``cv2.resize`` on float images exactly and on uint8 images within one grey
level (OpenCV's uint8 kernels use fixed-point weights). Integer shrink factors become a plain box average.
"""

from __future__ import annotations

import cv2
import numpy as np


def resize_interpolation(in_hw: tuple[int, int], out_hw: tuple[int, int]) -> int:
    """The OpenCV interpolation the training pipeline uses: area to shrink, bilinear to enlarge."""
    shrink = out_hw[0] <= in_hw[0] and out_hw[1] <= in_hw[1]
    return cv2.INTER_AREA if shrink else cv2.INTER_LINEAR


def resize_rgb(img: np.ndarray, height_px: int, width_px: int) -> np.ndarray:
    """Resize an (H, W, 3) uint8 image the way training does (``pwm_model.data.datasets.resize_rgb``)."""
    if img.shape[:2] == (height_px, width_px):
        return img
    interp = resize_interpolation(img.shape[:2], (height_px, width_px))
    return cv2.resize(img, (width_px, height_px), interpolation=interp)


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
