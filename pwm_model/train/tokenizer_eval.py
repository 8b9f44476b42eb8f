"""Tokenizer evaluation on held-out frames: PSNR / SSIM of both branches, code usage, reconstruction grids.

The dyn branch is scored the way it runs: frame f is dyn-encoded against the ctx encoder maps of frame f-1 and
decoded against the ctx decoder maps computed from frame f-1's ctx *tokens*. ``psnr_dyn_lowres_guide_db`` repeats
this with a guide that went down to the dyn resolution and back up (a blurred guide, as a decoded frame would be).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from pwm_model.data.contract import resize_rgb
from pwm_model.data.datasets import FrameBank, degrade_rgb, to_tensor, to_uint8
from pwm_model.tokenizer.lfq import code_histogram, perplexity
from pwm_model.tokenizer.losses import psnr_db, ssim
from pwm_model.tokenizer.model import Tokenizer, bits_per_pixel, compression_ratio


def _batch(bank: FrameBank, rows: np.ndarray, hw: tuple[int, int] | None = None, degrade: tuple[int, int] | None = None
           ) -> torch.Tensor:
    imgs = []
    for r in rows:
        img = bank.frames[int(r)]
        if degrade is not None:
            img = degrade_rgb(img, *degrade)
        if hw is not None:
            img = resize_rgb(img, *hw)
        imgs.append(to_tensor(img))
    return torch.stack(imgs)


def eval_pairs(bank: FrameBank, max_pairs: int | None) -> np.ndarray:
    """The (f-1, f) pairs to score: all, or ``max_pairs`` evenly spread ones."""
    pairs = bank.pairs
    if max_pairs is not None and len(pairs) > max_pairs:
        pairs = pairs[np.linspace(0, len(pairs) - 1, max_pairs).round().astype(int)]
    return pairs


@torch.no_grad()
def evaluate_tokenizer(tok: Tokenizer, bank: FrameBank, *, max_pairs: int | None = 512, batch_size: int = 32,
                       progress: bool = False) -> dict[str, Any]:
    """Scores over (f-1, f) pairs of ``bank``; returns the metrics dict (keys in docs/RESULTS.md)."""
    cfg = tok.cfg
    tok.eval()
    pairs = eval_pairs(bank, max_pairs)
    dyn_hw = (cfg.dyn_height_px, cfg.dyn_width_px)
    sums = {"psnr_ctx": 0.0, "ssim_ctx": 0.0, "psnr_dyn": 0.0, "ssim_dyn": 0.0, "psnr_dyn_low": 0.0}
    hist_ctx = torch.zeros(cfg.codebook_size, dtype=torch.int64)
    hist_dyn = torch.zeros(cfg.codebook_size, dtype=torch.int64)
    n = 0
    starts = range(0, len(pairs), batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="eval", unit="batch", leave=False)
    for s in starts:
        p = pairs[s:s + batch_size]
        prev, cur = _batch(bank, p[:, 0]), _batch(bank, p[:, 1])
        cur_dyn = _batch(bank, p[:, 1], dyn_hw)
        ctx_tokens, _ = tok.encode_ctx(cur)
        rec_ctx = tok.decode_ctx(ctx_tokens)
        prev_tokens, guide_enc = tok.encode_ctx(prev)
        guide_dec = tok.ctx_guide_dec(prev_tokens)
        dyn_tokens = tok.encode_dyn(cur_dyn, guide_enc)
        rec_dyn = tok.decode_dyn(dyn_tokens, guide_dec)
        low_tokens, low_enc = tok.encode_ctx(_batch(bank, p[:, 0], degrade=dyn_hw))
        rec_low = tok.decode_dyn(tok.encode_dyn(cur_dyn, low_enc), tok.ctx_guide_dec(low_tokens))
        sums["psnr_ctx"] += float(psnr_db(rec_ctx, cur).sum())
        sums["ssim_ctx"] += float(ssim(rec_ctx, cur).sum())
        sums["psnr_dyn"] += float(psnr_db(rec_dyn, cur_dyn).sum())
        sums["ssim_dyn"] += float(ssim(rec_dyn, cur_dyn).sum())
        sums["psnr_dyn_low"] += float(psnr_db(rec_low, cur_dyn).sum())
        hist_ctx += code_histogram(ctx_tokens, cfg.codebook_size)
        hist_dyn += code_histogram(dyn_tokens, cfg.codebook_size)
        n += len(p)
    return {
        "psnr_ctx_db": round(sums["psnr_ctx"] / n, 3),
        "psnr_dyn_db": round(sums["psnr_dyn"] / n, 3),
        "ssim_ctx": round(sums["ssim_ctx"] / n, 4),
        "ssim_dyn": round(sums["ssim_dyn"] / n, 4),
        "psnr_dyn_lowres_guide_db": round(sums["psnr_dyn_low"] / n, 3),
        "code_usage_ctx": round(float((hist_ctx > 0).float().mean()), 4),
        "code_usage_dyn": round(float((hist_dyn > 0).float().mean()), 4),
        "perplexity_ctx": round(perplexity(hist_ctx), 1),
        "perplexity_dyn": round(perplexity(hist_dyn), 1),
        "tokens_ctx": cfg.ctx_tokens,
        "tokens_dyn": cfg.dyn_tokens,
        "compression_ratio": round(compression_ratio(cfg), 3),
        "bits_per_pixel_ctx": round(bits_per_pixel(cfg, "ctx"), 4),
        "bits_per_pixel_dyn": round(bits_per_pixel(cfg, "dyn"), 4),
        "codebook_size": cfg.codebook_size,
        "guidance": cfg.guidance,
        "pairs": n,
    }


def make_grid(rows: list[list[np.ndarray]], pad_px: int = 2) -> np.ndarray:
    """Tile (H, W, 3) uint8 images row by row (each row's images share a height) on a white background."""
    heights = [max(im.shape[0] for im in r) for r in rows]
    widths = [sum(im.shape[1] for im in r) + pad_px * (len(r) + 1) for r in rows]
    out = np.full((sum(heights) + pad_px * (len(rows) + 1), max(widths), 3), 255, np.uint8)
    y = pad_px
    for r, h in zip(rows, heights):
        x = pad_px
        for im in r:
            out[y:y + im.shape[0], x:x + im.shape[1]] = im
            x += im.shape[1] + pad_px
        y += h + pad_px
    return out


@torch.no_grad()
def recon_grid(tok: Tokenizer, bank: FrameBank, count: int = 6, scale: int = 2) -> np.ndarray:
    """Rows: ctx originals, ctx reconstructions, dyn originals (upsampled), dyn reconstructions (upsampled).

    Columns are ``count`` evenly spread pairs (f-1, f) of the bank; every image is shown at the ctx size x ``scale``.
    """
    import cv2

    cfg = tok.cfg
    tok.eval()
    pairs = eval_pairs(bank, count)
    dyn_hw = (cfg.dyn_height_px, cfg.dyn_width_px)
    prev, cur = _batch(bank, pairs[:, 0]), _batch(bank, pairs[:, 1])
    cur_dyn = _batch(bank, pairs[:, 1], dyn_hw)
    ctx_tokens, _ = tok.encode_ctx(cur)
    prev_tokens, guide_enc = tok.encode_ctx(prev)
    rec_ctx = tok.decode_ctx(ctx_tokens)
    rec_dyn = tok.decode_dyn(tok.encode_dyn(cur_dyn, guide_enc), tok.ctx_guide_dec(prev_tokens))
    size = (cfg.ctx_width_px * scale, cfg.ctx_height_px * scale)

    def row(x: torch.Tensor) -> list[np.ndarray]:
        return [cv2.resize(im, size, interpolation=cv2.INTER_NEAREST) for im in to_uint8(x)]

    return make_grid([row(cur), row(rec_ctx), row(cur_dyn), row(rec_dyn)])


def format_table(metrics: dict[str, Any]) -> str:
    """The metrics as a two-column table for people."""
    width = max(len(k) for k in metrics)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  -----"]
    for k, v in metrics.items():
        if isinstance(v, float) and not math.isfinite(v):
            v = "nan"
        lines.append(f"{k:<{width}}  {v}")
    return "\n".join(lines)
