"""models/pwm-tiny: the committed checkpoint loads, fits its size budget and reconstructs a drive it never saw."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "pwm-tiny"
SIZE_BUDGET_MB = 25.0

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """Eight consecutive model frames (5 Hz) of a held-out synthetic drive (seed 7) at the camera size."""
    from pwm_model.config import CameraConfig
    from pwm_model.data.synthetic import simulate_drive

    cam = CameraConfig(width_px=256, height_px=128)
    samples = list(simulate_drive(seed=7, seconds=1.6, camera=cam))
    return np.stack([s.image_rgb for s in samples[::2]])


def test_shipped_files_fit_the_budget() -> None:
    names = {p.name for p in SHIPPED.iterdir()}
    assert {"config.yaml", "tokenizer.safetensors", "world_model.safetensors", "metrics.json", "COMMANDS.md"} <= names
    total_mb = sum(p.stat().st_size for p in SHIPPED.iterdir()) / 2**20
    assert total_mb <= SIZE_BUDGET_MB, total_mb
    metrics = json.loads((SHIPPED / "metrics.json").read_text())
    stages = metrics["tokenizer_train"]
    assert {"ctx", "dyn", "ctx_decoder", "dyn_decoder"} <= set(stages)
    assert stages["minutes"] <= 60.0  # the tokenizer's training budget on 2 cores


def test_shipped_tokenizer_reconstructs_a_held_out_drive(frames: np.ndarray) -> None:
    from pwm_model.data.contract import resize_rgb
    from pwm_model.data.datasets import to_tensor
    from pwm_model.tokenizer.losses import psnr_db
    from pwm_model.tokenizer.model import load_tokenizer

    cfg, tok = load_tokenizer(str(SHIPPED))
    tk = cfg.tokenizer
    ctx = torch.stack([to_tensor(resize_rgb(f, tk.ctx_height_px, tk.ctx_width_px)) for f in frames])
    dyn = torch.stack([to_tensor(resize_rgb(f, tk.dyn_height_px, tk.dyn_width_px)) for f in frames])
    with torch.no_grad():
        tokens, guide_enc = tok.encode_ctx(ctx)
        rec_ctx = tok.decode_ctx(tokens)
        dyn_tokens = tok.encode_dyn(dyn[1:], [g[:-1] for g in guide_enc])
        rec_dyn = tok.decode_dyn(dyn_tokens, [g[:-1] for g in tok.ctx_guide_dec(tokens)])
    assert tokens.shape == (len(frames), tk.ctx_tokens) and dyn_tokens.shape == (len(frames) - 1, tk.dyn_tokens)
    # these 8 frames score 27.7 / 28.3 dB (a random tokenizer 8 / 12 dB); one drive varies, so the floor has a margin
    assert float(psnr_db(rec_ctx, ctx).mean()) > 25.0
    assert float(psnr_db(rec_dyn, dyn[1:]).mean()) > 25.0


def test_shipped_world_model_plans_from_the_shipped_tokens(frames: np.ndarray) -> None:
    from pwm_model.data.contract import resize_rgb
    from pwm_model.data.datasets import to_tensor
    from pwm_model.tokenizer.model import load_tokenizer
    from pwm_model.world_model.checkpoint import load_world_model

    model, cfg = load_world_model(SHIPPED)
    _, tok = load_tokenizer(str(SHIPPED))
    tk, h = cfg.tokenizer, model.history_frames
    ctx = torch.stack([to_tensor(resize_rgb(f, tk.ctx_height_px, tk.ctx_width_px)) for f in frames[:h + 1]])
    dyn = torch.stack([to_tensor(resize_rgb(f, tk.dyn_height_px, tk.dyn_width_px)) for f in frames[:h + 1]])
    with torch.no_grad():
        ctx_tokens, guide_enc = tok.encode_ctx(ctx)
        hist = tok.encode_dyn(dyn[1:], [g[:-1] for g in guide_enc])  # frames 1..h, each guided by the one before
        ego = torch.tensor([[8.0, 0.0, 0.0, 1.0, 0.0, 0.0, 5.0]])  # 8 m/s, accel 0, straight for long, yaw rate 0
        forecast, waypoints = model.rollout(ctx_tokens[-1:], hist[None], ego, temperature=0.0)
    assert forecast.shape == (1, model.forecast_frames, tk.dyn_tokens)
    assert int(forecast.min()) >= 0 and int(forecast.max()) < tk.codebook_size
    assert waypoints.shape == (1, model.num_waypoints, 3) and bool(torch.isfinite(waypoints).all())
    xy = waypoints[0, :, :2]
    assert float(xy[-1, 0]) > float(xy[0, 0]) > 0.0  # driving on: forward and further forward
