"""Decoding forecast dyn tokens to images, the way the runtime previews them (docs/ARCHITECTURE.md).

Forecast frame t+1 is decoded against the ctx decoder maps of frame t (from its ctx tokens); frame t+k (k >= 2)
against the ctx maps of the decoded frame t+k-1, upsampled to the ctx resolution (bilinear, as the tokenizer's
guide degradation) and ctx-encoded.
"""

from __future__ import annotations

import numpy as np
import torch

from pwm_model.data.datasets import resize_rgb, to_tensor, to_uint8


@torch.no_grad()
def decode_forecast(tokenizer: torch.nn.Module, ctx_tokens: torch.Tensor, dyn_tokens: torch.Tensor) -> np.ndarray:
    """ctx tokens of frame t (B, Lc) and dyn tokens of frames t+1 .. t+F (B, F, Ld) -> (B, F, Hd, Wd, 3) uint8."""
    cfg = tokenizer.cfg
    b, f, _ = dyn_tokens.shape
    out = np.zeros((b, f, cfg.dyn_height_px, cfg.dyn_width_px, 3), np.uint8)
    guide_dec = tokenizer.ctx_guide_dec(ctx_tokens.long())
    for k in range(f):
        img = to_uint8(tokenizer.decode_dyn(dyn_tokens[:, k].long(), guide_dec))  # (B, Hd, Wd, 3)
        out[:, k] = img
        if k < f - 1:
            up = torch.stack([to_tensor(resize_rgb(im, cfg.ctx_height_px, cfg.ctx_width_px)) for im in img])
            toks, _ = tokenizer.encode_ctx(up.to(ctx_tokens.device))
            guide_dec = tokenizer.ctx_guide_dec(toks)
    return out
