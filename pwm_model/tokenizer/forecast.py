"""Decoding forecast dyn tokens to images, the way the runtime previews them (docs/ARCHITECTURE.md).

Every forecast frame t+k is decoded against the ctx decoder maps of frame t (from its ctx tokens), the one real
frame the forecast has. The dyn tokens of frame t+k were made against frame t+k-1, but decoding against the
re-encoded *decoded* frame t+k-1 compounds blur and re-quantisation frame after frame and scores lower at every
horizon (docs/RESULTS.md).
"""

from __future__ import annotations

import numpy as np
import torch

from pwm_model.data.datasets import to_uint8


@torch.no_grad()
def decode_forecast(tokenizer: torch.nn.Module, ctx_tokens: torch.Tensor, dyn_tokens: torch.Tensor) -> np.ndarray:
    """ctx tokens of frame t (B, Lc) and dyn tokens of frames t+1 .. t+F (B, F, Ld) -> (B, F, Hd, Wd, 3) uint8."""
    cfg = tokenizer.cfg
    b, f, _ = dyn_tokens.shape
    out = np.zeros((b, f, cfg.dyn_height_px, cfg.dyn_width_px, 3), np.uint8)
    guide_dec = tokenizer.ctx_guide_dec(ctx_tokens.long())
    for k in range(f):
        out[:, k] = to_uint8(tokenizer.decode_dyn(dyn_tokens[:, k].long(), guide_dec))  # (B, Hd, Wd, 3)
    return out
