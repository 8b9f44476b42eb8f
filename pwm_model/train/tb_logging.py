"""TensorBoard event files of a training run: scalars and image grids, written by rank 0 only.

    tb = TBLogger(out / "tb", enabled=env.is_main, purge_step=resumed_step)
    tb.scalars(step, {"loss": 0.41, "lr": 3e-4}, prefix="train")
    tb.image_grid("forecast", step, rows)        # rows of (H, W, 3) uint8 images
    tb.close()

View them with ``tensorboard --logdir out/`` (every run directory keeps its events in ``tb/``). A resumed run passes
the step it resumed from as ``purge_step``: events the interrupted run wrote after its last checkpoint are dropped,
so the curves show one run.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from pwm_model.train.tokenizer_eval import make_grid

GRID_MIN_HEIGHT_PX = 96  # small frames (the tiny preset's 32 px dyn frames) are enlarged to at least this height


class TBLogger:
    """A ``SummaryWriter`` on rank 0; every method is a no-op where ``enabled`` is False (other ranks, opted out)."""

    def __init__(self, log_dir: str | os.PathLike[str], *, enabled: bool = True, purge_step: int | None = None
                 ) -> None:
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(log_dir), purge_step=purge_step or None)

    @property
    def active(self) -> bool:
        return self.writer is not None

    def scalars(self, step: int, values: Mapping[str, float], prefix: str = "train") -> None:
        """One scalar per finite value, tagged ``prefix/name`` (``step`` keys are skipped: it is the x axis)."""
        if self.writer is None:
            return
        for name, value in values.items():
            if name != "step" and math.isfinite(float(value)):
                self.writer.add_scalar(f"{prefix}/{name}", float(value), step)

    def image_grid(self, tag: str, step: int, rows: Sequence[Sequence[np.ndarray]]) -> None:
        """Tile rows of (H, W, 3) uint8 images into one image (``make_grid``) and log it under ``tag``."""
        if self.writer is None or not rows:
            return
        self.writer.add_image(tag, make_grid([list(r) for r in rows]), step, dataformats="HWC")

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def enlarge(images: np.ndarray, min_height_px: int = GRID_MIN_HEIGHT_PX) -> np.ndarray:
    """(N, H, W, 3) uint8 images scaled up by a whole factor (nearest) until at least ``min_height_px`` tall."""
    factor = max(1, math.ceil(min_height_px / max(images.shape[1], 1)))
    if factor == 1:
        return images
    return images.repeat(factor, axis=1).repeat(factor, axis=2)


@torch.no_grad()
def forecast_rows(tokenizer: torch.nn.Module, ctx_tokens: torch.Tensor, true_future: torch.Tensor,
                  forecast: torch.Tensor) -> list[list[np.ndarray]]:
    """Two grid rows per clip: its true future frames t+1 .. t+F over the model's forecast of them, both decoded
    from tokens the way the runtime previews them (``tokenizer.forecast.decode_forecast``).

    ctx_tokens (B, Lc) of frame t, true_future and forecast (B, F, Ld) dyn codes, on the tokenizer's device.
    """
    from pwm_model.tokenizer.forecast import decode_forecast

    if forecast.shape[1] == 0:
        return []
    true = enlarge_frames(decode_forecast(tokenizer, ctx_tokens, true_future))
    pred = enlarge_frames(decode_forecast(tokenizer, ctx_tokens, forecast))
    rows: list[list[np.ndarray]] = []
    for i in range(len(true)):
        rows += [list(true[i]), list(pred[i])]
    return rows


def enlarge_frames(frames: np.ndarray) -> np.ndarray:
    """(B, F, H, W, 3) -> the same, each frame enlarged by ``enlarge``."""
    b, f = frames.shape[:2]
    return enlarge(frames.reshape(b * f, *frames.shape[2:])).reshape(b, f, *enlarge(frames[:1, 0]).shape[1:])
