"""Torch datasets over a clip store for the tokenizer (stage 1).

``FrameBank`` loads the distinct model frames of a store once (consecutive clips share most frames) and knows
which frames follow each other (``model_dt_s`` apart in the same drive). ``CtxFrames`` yields single frames at
the ctx resolution; ``DynPairs`` yields (guide frame f-1 at ctx resolution, frame f at dyn resolution), the
guidance rule of docs/ARCHITECTURE.md, and degrades a share of the guides (down to the dyn resolution and back up)
so that decoding against decoded frames stays stable.

Images leave as float32 (3, H, W) tensors in [-1, 1]. Dyn-resolution frames are area-downsampled from the
ctx-resolution frames (``resize_rgb``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from pwm_model.config import TokenizerConfig
from pwm_model.data.contract import FRAME_PAIR_TOLERANCE, resize_rgb
from pwm_model.errors import DataError


def degrade_rgb(img: np.ndarray, height_px: int, width_px: int) -> np.ndarray:
    """Down to (height_px, width_px) and back up: what a guide frame decoded from dyn tokens lacks."""
    h, w = img.shape[:2]
    return cv2.resize(resize_rgb(img, height_px, width_px), (w, h), interpolation=cv2.INTER_LINEAR)


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float() / 127.5 - 1.0


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """(3, H, W) or (B, 3, H, W) in [-1, 1] -> (H, W, 3) / (B, H, W, 3) uint8."""
    x = ((img.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).cpu().numpy()
    return np.moveaxis(x, -3, -1)


@dataclass
class FrameBank:
    """The distinct frames of a clip store at the ctx resolution and the pairs of consecutive frames."""

    frames: np.ndarray  # (N, Hc, Wc, 3) uint8
    drive: np.ndarray  # (N,) int32: drive number
    t_ns: np.ndarray  # (N,) int64
    pairs: np.ndarray  # (P, 2) int64: rows (f-1, f) of consecutive model frames of one drive
    drive_ids: list[str]

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @staticmethod
    def from_store(path: str | os.PathLike[str], cfg: TokenizerConfig, model_dt_s: float,
                   max_clips: int | None = None) -> FrameBank:
        """Read every clip of the store at ``path`` (or ``max_clips`` evenly spread ones)."""
        from pwm_model.data.clips import ClipStore

        store = ClipStore(path)
        n = len(store)
        if n == 0:
            raise DataError(f"clip store {path} holds no clips")
        rows = np.arange(n) if max_clips is None or max_clips >= n else np.linspace(0, n - 1, max_clips).round()
        seen: dict[tuple[str, int], int] = {}
        frames: list[np.ndarray] = []
        drive_ids: dict[str, int] = {}
        drive: list[int] = []
        t_ns: list[int] = []
        hc, wc = cfg.ctx_height_px, cfg.ctx_width_px
        for i in rows:
            clip = store[int(i)]
            d = drive_ids.setdefault(clip.drive_id, len(drive_ids))
            for img, t in zip(clip.frames_rgb, clip.frame_t_ns):
                key = (clip.drive_id, int(t))
                if key in seen:
                    continue
                if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                    raise DataError(f"clip store {path} holds frames of shape {img.shape} and type {img.dtype}, "
                                    "not (H, W, 3) uint8")
                seen[key] = len(frames)
                frames.append(resize_rgb(np.asarray(img), hc, wc))
                drive.append(d)
                t_ns.append(int(t))
        bank = FrameBank(np.stack(frames), np.asarray(drive, np.int32), np.asarray(t_ns, np.int64),
                         np.zeros((0, 2), np.int64), list(drive_ids))
        bank.pairs = consecutive_pairs(bank.drive, bank.t_ns, model_dt_s)
        return bank


def consecutive_pairs(drive: np.ndarray, t_ns: np.ndarray, model_dt_s: float) -> np.ndarray:
    """(P, 2) row pairs (f-1, f): same drive, stamps ``model_dt_s`` apart (within FRAME_PAIR_TOLERANCE)."""
    order = np.lexsort((t_ns, drive))
    a, b = order[:-1], order[1:]
    dt_s = (t_ns[b] - t_ns[a]) * 1e-9
    ok = (drive[a] == drive[b]) & (np.abs(dt_s - model_dt_s) <= FRAME_PAIR_TOLERANCE * model_dt_s)
    return np.stack([a[ok], b[ok]], axis=1).astype(np.int64)


class CtxFrames(Dataset):
    """Single frames at the ctx resolution: (3, Hc, Wc) in [-1, 1]."""

    def __init__(self, bank: FrameBank) -> None:
        if len(bank) == 0:
            raise DataError("the clip store holds no frames")
        self.bank = bank

    def __len__(self) -> int:
        return len(self.bank)

    def __getitem__(self, i: int) -> torch.Tensor:
        return to_tensor(self.bank.frames[i])


class DynPairs(Dataset):
    """(guide (3, Hc, Wc), target (3, Hd, Wd), degraded flag) for consecutive model frames (f-1, f).

    With probability ``degrade_prob`` the guide is replaced by its down-to-dyn-resolution-and-back copy (drawn from
    a generator seeded with ``seed``: a single-process run repeats exactly).
    """

    def __init__(self, bank: FrameBank, cfg: TokenizerConfig, degrade_prob: float = 0.0, seed: int = 0) -> None:
        if len(bank.pairs) == 0:
            raise DataError("the clip store holds no pairs of consecutive model frames (are the drives too short?)")
        if not 0.0 <= degrade_prob <= 1.0:
            raise DataError(f"degrade_prob must be in [0, 1], got {degrade_prob}")
        self.bank, self.cfg, self.degrade_prob = bank, cfg, degrade_prob
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return int(self.bank.pairs.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
        prev, cur = self.bank.pairs[i]
        guide = self.bank.frames[prev]
        degraded = self.degrade_prob > 0 and bool(self.rng.random() < self.degrade_prob)
        if degraded:
            guide = degrade_rgb(guide, self.cfg.dyn_height_px, self.cfg.dyn_width_px)
        target = resize_rgb(self.bank.frames[cur], self.cfg.dyn_height_px, self.cfg.dyn_width_px)
        return to_tensor(guide), to_tensor(target), degraded
