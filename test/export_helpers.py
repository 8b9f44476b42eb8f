"""Small real checkpoints (random weights) and model directories exported from them, made once per test process."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from test.model_utils import random_world_model

# The tiny preset, narrower (fast to export and run; every code path of the full size).
SMALL_OVERRIDES = ("world_model.layers=2", "world_model.d_model=64", "world_model.heads=2",
                   "world_model.ego_hidden=32", "world_model.head_hidden=64", "tokenizer.base_channels=16",
                   "tokenizer.dyn_mlp_hidden=32")
CAMERA_SIZE = (256, 128)  # the tiny preset's camera (width, height): twice the ctx size, resized in the graph

_ROOT = Path(tempfile.mkdtemp(prefix="pwm-export-test-"))
atexit.register(shutil.rmtree, _ROOT, True)


def make_checkpoint(out: Path, overrides: tuple[str, ...] = SMALL_OVERRIDES, seed: int = 0) -> Path:
    """A checkpoint directory (config.yaml, tokenizer.safetensors, world_model.safetensors) with random weights."""
    import torch

    from pwm_model.checkpoint import save_checkpoint
    from pwm_model.config import apply_overrides, preset
    from pwm_model.tokenizer.model import Tokenizer

    torch.manual_seed(seed)
    cfg = apply_overrides(preset("tiny"), list(overrides))
    tok = Tokenizer(cfg.tokenizer)
    with torch.no_grad():  # the cross-attention output projections start at zero: give the guidance an effect
        for name, p in tok.named_parameters():
            if ".cross." in name and name.endswith("proj.weight"):
                p.normal_(0.0, 0.3)
    save_checkpoint(out, cfg, {"tokenizer": tok, "world_model": random_world_model(cfg)})
    return out


@functools.cache
def checkpoint() -> Path:
    return make_checkpoint(_ROOT / "ckpt")


def model_dir(rollout: str = "unrolled", camera: bool = True) -> Path:
    """The small checkpoint exported (verified on 4 frames), shared by the tests of one process; treat as read-only."""
    return _model_dir(rollout, camera)


@functools.cache
def _model_dir(rollout: str, camera: bool) -> Path:
    import torch

    from pwm_model.export.onnx import export_model

    torch.set_num_threads(2)
    out = _ROOT / f"model-{rollout}-{'camera' if camera else 'ctx'}"
    export_model(checkpoint(), out, camera_size=CAMERA_SIZE if camera else None, rollout=rollout,
                 preview=rollout == "unrolled", verify_frames=4, echo=lambda *a, **k: None)
    return out


def copy_model_dir(dst: Path, rollout: str = "unrolled") -> Path:
    """A private copy of the exported model directory (for tests that modify or break it)."""
    shutil.copytree(model_dir(rollout), dst)
    return dst
