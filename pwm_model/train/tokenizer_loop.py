"""Stage 1: train the tokenizer, ctx branch first, then the dyn branch against the frozen ctx branch, then (when
``train.tokenizer_decoder_steps`` > 0) fine-tune both decoders with everything else frozen.

Per step (VQGAN recipe): L1 reconstruction (+ optional perceptual loss) + LFQ commitment and entropy losses, and,
from ``tokenizer.gan_start_step`` on, a PatchGAN hinge loss whose weight is ``gan_weight`` times VQGAN's adaptive
balance; the discriminator trains from the same step. AdamW with linear warm-up and cosine decay to
``LR_FLOOR`` of the peak. The dyn stage copies the ctx weights into the dyn branch, freezes the ctx branch and feeds
(guide frame f-1, frame f) pairs, degrading ``GUIDE_DEGRADE_PROB`` of the guides.

The decoder stage (``train_decoder_stage``) keeps encoders and quantizers frozen, so every token stays what it was
(a world model trained on the tokens keeps working) while the decoders, and with them every decoded image, get
sharper: ``l1_weight`` * L1 + ``decoder_mse_weight`` * MSE, no GAN (like the MSE-fine-tuned decoder of Stable
Diffusion's autoencoder), ctx decoder first, then the dyn decoder against the new ctx decoder's guide maps.

Outputs in ``out``: the checkpoint (config.yaml, tokenizer.safetensors, metrics.json), ``recon_<branch>.png``
grids, ``train_log.jsonl`` (one line per ``LOG_EVERY`` steps).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pwm_model.checkpoint import (
    check_state_dict,
    load_config,
    load_metrics,
    load_state_dict,
    save_checkpoint,
)
from pwm_model.config import PwmConfig
from pwm_model.data.datasets import CtxFrames, DynPairs, FrameBank, to_uint8
from pwm_model.errors import ConfigError, ModelError
from pwm_model.io_utils import write_bytes_atomic
from pwm_model.tokenizer.discriminator import PatchDiscriminator
from pwm_model.tokenizer.losses import (
    PerceptualLoss,
    adaptive_gan_weight,
    hinge_d_loss,
    hinge_g_loss,
    l1_loss,
    psnr_db,
)
from pwm_model.tokenizer.model import Tokenizer
from pwm_model.train.tokenizer_eval import make_grid

log = logging.getLogger(__name__)

GUIDE_DEGRADE_PROB = 0.3  # share of dyn-stage guides degraded (down to dyn size and back): robust to blurred guides
LR_FLOOR = 0.1  # the cosine schedule ends at this share of the peak learning rate
DISC_LAYERS = 2  # PatchGAN depth: 2 stride-2 layers suit 32..64 px tall images (receptive field 34 px)
LOG_EVERY = 25  # steps between train_log.jsonl lines
GRID_COUNT = 6  # frames per reconstruction grid
DECODER_BATCH_MULT = 2  # decoder-stage batch = this x train.tokenizer_batch_size (no encoder gradients: cheap)
BRANCHES = ("ctx", "dyn", "both", "decoders")


@dataclass
class StageStats:
    branch: str
    steps: int
    seconds: float
    loss: float
    l1: float
    psnr_db: float
    usage: float | None  # code usage of the trained branch's quantizer (None: the decoder stage trains none)

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def lr_factor(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from 1 to LR_FLOOR at ``steps``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return LR_FLOOR + (1 - LR_FLOOR) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def _batches(dataset: torch.utils.data.Dataset, batch_size: int, seed: int) -> Iterator[Any]:
    """Endless random batches (with replacement) from ``dataset``, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    n = len(dataset)  # type: ignore[arg-type]
    while True:
        items = [dataset[int(i)] for i in rng.integers(0, n, batch_size)]
        yield torch.utils.data.default_collate(items)


def load_whole_tokenizer(tok: Tokenizer, init: str | os.PathLike[str]) -> None:
    """Load both branches of a tokenizer checkpoint into ``tok`` (shapes must match)."""
    state = load_state_dict(init, "tokenizer")
    check_state_dict(state, tok, str(Path(init) / "tokenizer.safetensors"))
    tok.load_state_dict(state)


def load_ctx_branch(tok: Tokenizer, init: str | os.PathLike[str]) -> None:
    """Load the ctx branch of a tokenizer checkpoint into ``tok`` (shapes must match)."""
    state = load_state_dict(init, "tokenizer")
    ctx_state = {k[len("ctx."):]: v for k, v in state.items() if k.startswith("ctx.")}
    check_state_dict(ctx_state, tok.ctx, f"the ctx branch of {Path(init) / 'tokenizer.safetensors'}")
    tok.ctx.load_state_dict(ctx_state)


class _Progress:
    """A tqdm bar on a terminal; a log line every ``LOG_EVERY`` steps otherwise (e.g. under nohup)."""

    def __init__(self, total: int, desc: str, enabled: bool) -> None:
        self.bar = None
        self.desc, self.total, self.enabled = desc, total, enabled
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True)
        self.t0 = time.monotonic()

    def update(self, step: int, info: dict[str, float]) -> None:
        text = " ".join(f"{k}={v:.4g}" for k, v in info.items())
        if self.bar is not None:
            self.bar.update(1)
            if step % 5 == 0:
                self.bar.set_postfix_str(text)
        elif self.enabled and (step % LOG_EVERY == 0 or step == self.total):
            el = time.monotonic() - self.t0
            eta = el / max(step, 1) * (self.total - step)
            print(f"{self.desc} {step}/{self.total} [{el / 60:.1f} min, eta {eta / 60:.1f} min] {text}",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _StageLog:
    """One stage's running means (EMA 0.95) of its step metrics: the progress display, ``train_log.jsonl`` lines
    every ``LOG_EVERY`` steps and the final ``StageStats``."""

    def __init__(self, name: str, steps: int, out: Path, progress: bool, shown: tuple[str, ...]) -> None:
        self.name, self.steps, self.path, self.shown = name, steps, out / "train_log.jsonl", shown
        self.bar = _Progress(steps, f"train {name}", progress)
        self.ema: dict[str, float] = {}
        self.t0 = time.monotonic()

    def record(self, step: int, info: dict[str, float]) -> None:
        """Fold in the metrics of step ``step`` (1-based)."""
        for k, v in info.items():
            self.ema[k] = v if k not in self.ema else 0.95 * self.ema[k] + 0.05 * v
        self.bar.update(step, {k: self.ema[k] for k in self.shown})
        if step % LOG_EVERY == 0 or step == self.steps:
            with self.path.open("a") as f:
                f.write(json.dumps({"branch": self.name, "step": step, "t_s": round(time.monotonic() - self.t0, 1),
                                    **{k: round(v, 5) for k, v in self.ema.items()}}) + "\n")

    def finish(self) -> StageStats:
        self.bar.close()
        e = self.ema
        return StageStats(self.name, self.steps, time.monotonic() - self.t0, e.get("loss", math.nan),
                          e.get("l1", math.nan), e.get("psnr", math.nan), e.get("usage"))


def _grid_png(tok: Tokenizer, branch: str, batch: Any, count: int = GRID_COUNT) -> bytes:
    """Originals over reconstructions of a training batch (dyn: guide, target, reconstruction)."""
    import cv2

    tok.eval()
    with torch.no_grad():
        if branch == "ctx":
            x = batch[:count]
            rec, _ = tok.forward_ctx(x)
            rows = [list(to_uint8(x)), list(to_uint8(rec))]
        else:
            guide, x = batch[0][:count], batch[1][:count]
            ge, gd = tok.guides(guide)
            rec, _ = tok.forward_dyn(x, ge, gd)
            size = (guide.shape[3], guide.shape[2])
            up = [[cv2.resize(im, size, interpolation=cv2.INTER_NEAREST) for im in to_uint8(t)] for t in (x, rec)]
            rows = [list(to_uint8(guide))] + up
    tok.train()
    ok, png = cv2.imencode(".png", cv2.cvtColor(make_grid(rows), cv2.COLOR_RGB2BGR))
    assert ok
    return png.tobytes()


def train_stage(tok: Tokenizer, branch: str, bank: FrameBank, cfg: PwmConfig, out: Path, *, steps: int,
                progress: bool = True, perceptual: nn.Module | None = None) -> StageStats:
    """Train one branch of ``tok`` in place for ``steps`` steps; the other branch is frozen."""
    tc, tr = cfg.tokenizer, cfg.train
    torch.manual_seed(tr.seed + (0 if branch == "ctx" else 1))
    train_mod, frozen = (tok.ctx, tok.dyn) if branch == "ctx" else (tok.dyn, tok.ctx)
    frozen.requires_grad_(False).eval()
    train_mod.requires_grad_(True).train()
    disc = PatchDiscriminator(tc.base_channels, DISC_LAYERS)
    params = [p for p in train_mod.parameters() if p.requires_grad]
    opt_g = torch.optim.AdamW(params, lr=tr.tokenizer_lr, betas=(tr.beta1, tr.beta2), eps=tr.eps,
                              weight_decay=tr.weight_decay)
    opt_d = torch.optim.AdamW(disc.parameters(), lr=tr.tokenizer_lr, betas=(tr.beta1, tr.beta2), eps=tr.eps,
                              weight_decay=tr.weight_decay)
    last_layer = train_mod.decoder.conv_out.weight
    if branch == "ctx":
        data = _batches(CtxFrames(bank), tr.tokenizer_batch_size, tr.seed)
    else:
        data = _batches(DynPairs(bank, tc, GUIDE_DEGRADE_PROB, seed=tr.seed), tr.tokenizer_batch_size, tr.seed + 1)
    stage_log = _StageLog(branch, steps, out, progress, ("loss", "psnr", "usage"))
    batch: Any = None
    for step in range(steps):
        batch = next(data)
        for g in (opt_g, opt_d):
            for group in g.param_groups:
                group["lr"] = tr.tokenizer_lr * lr_factor(step, steps, tr.warmup_steps)
        if branch == "ctx":
            x = batch
            rec, q = tok.forward_ctx(x)
        else:
            guide, x = batch[0], batch[1]
            ge, gd = tok.guides(guide) if tc.guidance else (None, None)
            rec, q = tok.forward_dyn(x, ge, gd)
        l1 = l1_loss(rec, x)
        rec_loss = tc.l1_weight * l1
        if perceptual is not None and tc.perceptual_weight > 0:
            rec_loss = rec_loss + tc.perceptual_weight * perceptual(rec, x)
        loss = rec_loss + tc.commit_weight * q.commit_loss + tc.entropy_weight * q.entropy_loss
        gan_on = tc.gan_weight > 0 and step >= tc.gan_start_step
        g_loss = torch.zeros(())
        if gan_on:
            disc.requires_grad_(False)
            g_loss = hinge_g_loss(disc(rec))
            loss = loss + tc.gan_weight * adaptive_gan_weight(rec_loss, g_loss, last_layer) * g_loss
        if not torch.isfinite(loss):
            raise ModelError(f"the {branch} tokenizer loss became {float(loss)} at step {step}: "
                             "lower train.tokenizer_lr")
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, tr.grad_clip)
        opt_g.step()
        d_loss = torch.zeros(())
        if gan_on:
            disc.requires_grad_(True)
            d_loss = hinge_d_loss(disc(x), disc(rec.detach()))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
        info = {"loss": float(loss.detach()), "l1": float(l1.detach()), "psnr": float(psnr_db(rec.detach(), x).mean()),
                "commit": float(q.commit_loss.detach()), "entropy": float(q.entropy_loss.detach()),
                "usage": float(q.usage),
                "g": float(g_loss.detach()), "d": float(d_loss.detach())}
        stage_log.record(step + 1, info)
        if (step + 1) % tr.eval_every == 0 and step + 1 < steps:
            write_bytes_atomic(out / f"recon_{branch}.png", _grid_png(tok, branch, batch))
        if (step + 1) % tr.save_every == 0 and step + 1 < steps:
            save_checkpoint(out, cfg, {"tokenizer": tok})
    stats = stage_log.finish()
    if batch is not None:
        write_bytes_atomic(out / f"recon_{branch}.png", _grid_png(tok, branch, batch))
    frozen.requires_grad_(True)
    return stats


def decoder_modules(tok: Tokenizer, branch: str) -> list[nn.Module]:
    """What the decoder stage trains in one branch: its decoder and, for a compressed branch, the token MLP that
    expands codes before it."""
    b = tok.ctx if branch == "ctx" else tok.dyn
    return [b.decoder] + ([b.expand] if b.expand is not None else [])


def train_decoder_stage(tok: Tokenizer, branch: str, bank: FrameBank, cfg: PwmConfig, out: Path, *, steps: int,
                        progress: bool = True) -> StageStats:
    """Fine-tune the decoder of one branch of ``tok`` in place; encoders, quantizers and the other branch stay
    frozen, so the tokens of every image are unchanged."""
    tc, tr = cfg.tokenizer, cfg.train
    torch.manual_seed(tr.seed + (2 if branch == "ctx" else 3))
    tok.requires_grad_(False).eval()
    modules = decoder_modules(tok, branch)
    for m in modules:
        m.requires_grad_(True).train()
    params = [p for m in modules for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=tr.tokenizer_decoder_lr, betas=(tr.beta1, tr.beta2), eps=tr.eps,
                            weight_decay=0.0)
    batch_size = DECODER_BATCH_MULT * tr.tokenizer_batch_size
    if branch == "ctx":
        data = _batches(CtxFrames(bank), batch_size, tr.seed + 2)
    else:
        data = _batches(DynPairs(bank, tc, GUIDE_DEGRADE_PROB, seed=tr.seed + 3), batch_size, tr.seed + 3)
    name = f"{branch}_decoder"
    stage_log = _StageLog(name, steps, out, progress, ("loss", "psnr"))
    warmup = min(tr.warmup_steps, steps // 10)
    batch: Any = None
    for step in range(steps):
        batch = next(data)
        for group in opt.param_groups:
            group["lr"] = tr.tokenizer_decoder_lr * lr_factor(step, steps, warmup)
        with torch.no_grad():
            if branch == "ctx":
                x, gd = batch, None
                tokens, _ = tok.encode_ctx(x)
                codes = tok.ctx.tokens_to_codes(tokens)
            else:
                guide, x = batch[0], batch[1]
                ge, gd = tok.guides(guide) if tc.guidance else (None, None)
                codes = tok.dyn.tokens_to_codes(tok.encode_dyn(x, ge))
        rec = (tok.ctx if branch == "ctx" else tok.dyn).decode_codes(codes, gd)
        l1 = l1_loss(rec, x)
        loss = tc.l1_weight * l1 + tc.decoder_mse_weight * ((rec - x) ** 2).mean()
        if not torch.isfinite(loss):
            raise ModelError(f"the {name} loss became {float(loss)} at step {step}: lower train.tokenizer_decoder_lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, tr.grad_clip)
        opt.step()
        stage_log.record(step + 1, {"loss": float(loss.detach()), "l1": float(l1.detach()),
                                    "psnr": float(psnr_db(rec.detach(), x).mean())})
        if (step + 1) % tr.save_every == 0 and step + 1 < steps:
            save_checkpoint(out, cfg, {"tokenizer": tok})
    stats = stage_log.finish()
    tok.requires_grad_(True).eval()
    if batch is not None:
        write_bytes_atomic(out / f"recon_{branch}.png", _grid_png(tok, branch, batch))
    return stats


def train_tokenizer(cfg: PwmConfig, data: str | os.PathLike[str], out: str | os.PathLike[str], *,
                    branch: str = "both", init: str | os.PathLike[str] | None = None, progress: bool = True,
                    max_clips: int | None = None) -> dict[str, Any]:
    """Train the branches ``branch`` names; write the checkpoint to ``out``; return the training metrics.

    ``branch="dyn"`` needs ``init``: a tokenizer checkpoint whose ctx branch is loaded and kept frozen;
    ``branch="decoders"`` needs a whole tokenizer checkpoint whose decoders it fine-tunes. ``both`` runs every stage:
    ctx, dyn, then the decoders when ``train.tokenizer_decoder_steps`` > 0.
    """
    if branch not in BRANCHES:
        raise ConfigError(f"branch must be one of {', '.join(BRANCHES)}, got {branch!r}")
    if branch == "dyn" and init is None:
        raise ConfigError("training the dyn branch alone needs --init CHECKPOINT (a trained ctx branch)")
    if branch == "decoders" and init is None:
        raise ConfigError("fine-tuning the decoders needs --init CHECKPOINT (a trained tokenizer, both branches)")
    if branch == "decoders" and cfg.train.tokenizer_decoder_steps == 0:
        raise ConfigError("train.tokenizer_decoder_steps is 0: set it (e.g. --set train.tokenizer_decoder_steps=1500)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(cfg.tokenizer)
    earlier: dict[str, Any] = {}
    if init is not None:
        load_config(init)  # a clear error when it is not a checkpoint
        if branch == "decoders":
            load_whole_tokenizer(tok, init)
            prior = load_metrics(init).get("tokenizer_train", {})
            earlier = {k: v for k, v in prior.items() if k in ("ctx", "dyn")}  # the stages the init went through
        else:
            load_ctx_branch(tok, init)
    perceptual = PerceptualLoss(cfg.tokenizer.perceptual_weights_path) if cfg.tokenizer.perceptual_weight > 0 else None
    t_load = time.monotonic()
    bank = FrameBank.from_store(data, cfg.tokenizer, cfg.model_dt_s, max_clips=max_clips)
    log.info("loaded %d frames, %d consecutive pairs from %s in %.1f s", len(bank), len(bank.pairs), data,
             time.monotonic() - t_load)
    stats: dict[str, Any] = {"frames": len(bank), "pairs": int(len(bank.pairs)), "drives": len(bank.drive_ids),
                             **earlier}
    if branch in ("ctx", "both"):
        s = train_stage(tok, "ctx", bank, cfg, out, steps=cfg.train.tokenizer_ctx_steps, progress=progress,
                        perceptual=perceptual)
        stats["ctx"] = s.as_dict()
        save_checkpoint(out, cfg, {"tokenizer": tok}, {"tokenizer_train": stats})
    if branch in ("dyn", "both"):
        copied = tok.init_dyn_from_ctx()
        log.info("dyn branch initialised from %d ctx tensors", copied)
        s = train_stage(tok, "dyn", bank, cfg, out, steps=cfg.train.tokenizer_dyn_steps, progress=progress,
                        perceptual=perceptual)
        stats["dyn"] = s.as_dict()
        if init is not None:
            stats["init"] = str(init)
        save_checkpoint(out, cfg, {"tokenizer": tok}, {"tokenizer_train": stats})
    if branch == "decoders" or (branch == "both" and cfg.train.tokenizer_decoder_steps > 0):
        for b in ("ctx", "dyn"):
            s = train_decoder_stage(tok, b, bank, cfg, out, steps=cfg.train.tokenizer_decoder_steps,
                                    progress=progress)
            stats[s.branch] = s.as_dict()
        if init is not None:
            stats["init"] = str(init)
        save_checkpoint(out, cfg, {"tokenizer": tok}, {"tokenizer_train": stats})
    return stats
