"""The world-model training loop (stage 2 ``pretrain``, stage 3 ``finetune``), written rank-aware.

- AdamW without weight decay on biases, norms and embeddings; cosine schedule with linear warm-up; gradient
  clipping; gradient accumulation. Fine-tuning can train the pretrained trunk slower than the new heads
  (``train.trunk_lr_scale``) and keep an EMA of the weights for evaluation and export (``train.ema_decay``).
- Sampling: with ``train.clip_stride`` s > 1 an epoch takes one clip at random from every window of s consecutive
  clips (clips 0.2 s apart are near copies), in a seeded order. With ``train.turn_repeat`` r > 1 the windows that hold
  a clip whose route command is left or right enter the epoch r times (they are a few percent of the clips, and the
  only ones that teach the plan to follow the command).
- Deterministic by seed: the batch of global step s, micro-step j is a slice of a per-epoch permutation seeded by
  ``(train.seed, epoch)``, so it depends on the step only and a resumed run draws the same batches. With
  ``world_size`` ranks each rank takes every ``world_size``-th sample of the global batch (DDP / FSDP wrap the model
  from outside; the loop itself does not change).
- Why not ``DistributedSampler``: within an epoch it gives rank r the same samples (every ``world_size``-th of a
  seeded permutation), but it pads or drops each epoch to a multiple of the world size and keeps its position in
  iterator state. Here the global batch of a step does not depend on the number of ranks (epochs run on across
  step boundaries), so N processes follow the one-process run of the same global batch, and a resumed run needs
  only the step number to draw the same batches.
- Several processes (``pwm_model.train.distributed``): the forward goes through ``wrapped`` (DDP / FSDP); gradients
  sync on the last accumulation micro-step only; logged losses are averaged over the ranks; bf16 autocast where
  ``train.precision`` is bf16 on a GPU.
- pretrain: action-free video only (the EGO position keeps the no-ego embedding, no planning pass);
  finetune: ``video_weight * L_video + traj_weight * L_traj`` (0.3 / 1.0 in the paper).
- Exposure bias: with ``plan_on_rollout`` p > 0, a share p of the fine-tuning steps plans from the model's own
  detached greedy forecast instead of the teacher-forced true future frames (what inference sees); with
  ``plan_future_noise`` q > 0, the other steps' planning pass reads the true future frames with a share q of their
  codes replaced by random ones (true futures that look as wrong as a forecast).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pwm_model.config import PwmConfig
from pwm_model.data.contract import COMMAND_SLICE
from pwm_model.data.schema import COMMAND_STRAIGHT
from pwm_model.errors import ConfigError, ModelError
from pwm_model.io_utils import atomic_path
from pwm_model.train.collision_loss import overlap_penalty
from pwm_model.train.distributed import (
    all_reduce_mean,
    autocast,
    autocast_dtype,
    clip_grad_norm,
    full_optimizer_state,
    grad_sync,
    is_sharded,
    load_optimizer_state,
)
from pwm_model.train.wm_data import WorldModelData
from pwm_model.world_model.model import PolicyWorldModel

STAGES = ("pretrain", "finetune")
TRAIN_STATE_FILE = "train_state.pt"
LOG_FILE = "train_log.jsonl"


HEAD_MODULES = ("ego_mlp", "plan_ego", "waypoint_head", "ego_branch")  # what fine-tuning adds to the pretrained trunk


def param_groups(model: nn.Module, weight_decay: float, lr: float = 1.0, trunk_lr_scale: float = 1.0
                 ) -> list[dict[str, Any]]:
    """AdamW groups: matrices of Linear layers decay, biases, norms and embeddings do not; the trunk (everything but
    ``HEAD_MODULES``) at ``lr * trunk_lr_scale``, the heads at ``lr``. Empty groups are left out."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for module_name, module in model.named_modules():
        head = module_name.split(".")[0] in HEAD_MODULES
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            decays = isinstance(module, nn.Linear) and name == "weight"
            groups.setdefault((head, decays), []).append(p)
    return [{"params": params, "weight_decay": weight_decay if decays else 0.0,
             "lr": lr if head else lr * trunk_lr_scale}
            for (head, decays), params in sorted(groups.items())]


def cosine_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate factor: linear warm-up to 1 over ``warmup_steps``, then a cosine to 0 at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _fmt_s(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"


def corrupt_codes(codes: torch.Tensor, share: float, codebook_size: int) -> torch.Tensor:
    """``codes`` with each one replaced, with probability ``share``, by a code drawn uniformly (torch's RNG)."""
    swap = torch.rand(codes.shape, device=codes.device) < share
    return torch.where(swap, torch.randint_like(codes, codebook_size), codes)


class Trainer:
    """Runs ``steps`` optimiser steps of one stage on one rank."""

    def __init__(self, cfg: PwmConfig, model: PolicyWorldModel, data: WorldModelData, stage: str, steps: int, *,
                 out_dir: str | Path | None = None, device: str | torch.device = "cpu", rank: int = 0,
                 world_size: int = 1, plan_on_rollout: float = 0.0, log_every: int = 25,
                 log: Callable[[str], None] = print, wrapped: nn.Module | None = None) -> None:
        if stage not in STAGES:
            raise ConfigError(f"unknown stage {stage!r}: choose pretrain or finetune")
        if steps < 1:
            raise ConfigError("the number of training steps must be at least 1")
        if stage == "pretrain" and model.forecast_frames == 0:
            raise ConfigError("pretraining learns to forecast frames; it needs world_model.forecast_frames >= 1")
        if len(data) == 0:
            raise ConfigError("the training set holds no clips")
        if stage == "finetune" and not bool(data.waypoints_valid.any()):
            raise ConfigError("fine-tuning needs clips with waypoint labels; this training set has none")
        if not 0.0 <= plan_on_rollout <= 1.0:
            raise ConfigError("plan_on_rollout must be in [0, 1]")
        self.cfg, self.model, self.data, self.stage, self.steps = cfg, model, data, stage, steps
        self.device = torch.device(device)
        self.rank, self.world_size = rank, world_size
        self.wrapped = model if wrapped is None else wrapped  # what the training forward goes through (DDP / FSDP)
        self.autocast_dtype = autocast_dtype(cfg.train.precision, self.device)
        self.plan_on_rollout = plan_on_rollout
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.log, self.log_every = log, log_every
        t = cfg.train
        trunk_scale = t.trunk_lr_scale if stage == "finetune" else 1.0
        self.optimizer = torch.optim.AdamW(param_groups(model, t.weight_decay, t.lr, trunk_scale), lr=t.lr,
                                           betas=(t.beta1, t.beta2), eps=t.eps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: cosine_factor(s, min(t.warmup_steps, steps // 2), steps))
        self.step = 0
        self.history: list[dict[str, float]] = []
        self._perm, self._perm_epoch = torch.zeros(0, dtype=torch.long), -1
        self._windows: torch.Tensor | None = None
        self.ema: dict[str, torch.Tensor] | None = None  # name -> fp32 average, with train.ema_decay > 0
        if t.ema_decay > 0 and is_sharded(self.wrapped):
            raise ConfigError("train.ema_decay keeps a full copy of every weight per process, which FSDP's shards do "
                              "not: set train.ema_decay=0 with train.strategy=fsdp (or use ddp)")
        if t.ema_decay > 0:
            self.ema = {k: p.detach().float().clone() for k, p in model.named_parameters()}

    # -- EMA ---------------------------------------------------------------------------------------------------
    def _update_ema(self) -> None:
        if self.ema is None:
            return
        # the usual warm-up of the decay: early steps average over fewer steps (no pull towards the initial weights)
        decay = min(self.cfg.train.ema_decay, (1.0 + self.step) / (10.0 + self.step))
        with torch.no_grad():
            for k, p in self.model.named_parameters():
                self.ema[k].mul_(decay).add_(p.detach().float(), alpha=1.0 - decay)

    @contextlib.contextmanager
    def averaged_weights(self) -> Iterator[None]:
        """Inside, the model holds the EMA weights (when there is an EMA); the raw weights come back after."""
        if self.ema is None:
            yield
            return
        params = dict(self.model.named_parameters())
        raw = {k: p.detach().clone() for k, p in params.items()}
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(self.ema[k].to(p.dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for k, p in params.items():
                    p.copy_(raw[k])

    # -- batches ---------------------------------------------------------------------------------------------
    def epoch_windows(self) -> torch.Tensor:
        """The windows of ``train.clip_stride`` consecutive clips one epoch visits (turning windows repeated)."""
        t = self.cfg.train
        n, stride = len(self.data), t.clip_stride
        windows = torch.arange(-(-n // stride))
        if t.turn_repeat <= 1:
            return windows
        cmd = self.data.ego[:, COMMAND_SLICE]
        turning = self.data.ego_valid & (cmd[:, COMMAND_STRAIGHT] < 0.5) & (cmd.sum(1) > 0.5)
        pad = torch.zeros(len(windows) * stride - n, dtype=torch.bool)
        turning_windows = windows[torch.cat([turning, pad]).view(-1, stride).any(1)]
        return torch.cat([windows, turning_windows.repeat(t.turn_repeat - 1)])

    def batch_indices(self, step: int, micro: int) -> torch.Tensor:
        """This rank's sample indices for global step ``step``, micro-step ``micro`` (a pure function of both)."""
        t = self.cfg.train
        n, per_rank, stride = len(self.data), t.batch_size, t.clip_stride
        if self._windows is None:
            self._windows = self.epoch_windows()
        epoch_len = len(self._windows)
        global_b = per_rank * self.world_size
        first = (step * t.grad_accum + micro) * global_b
        idx = []
        for c in range(first, first + global_b):
            epoch, pos = divmod(c, epoch_len)
            if epoch != self._perm_epoch:
                g = torch.Generator().manual_seed(t.seed * 1_000_003 + epoch)
                order = self._windows[torch.randperm(epoch_len, generator=g)]
                if stride > 1:
                    order = (order * stride + torch.randint(0, stride, (epoch_len,), generator=g)).clamp_max(n - 1)
                self._perm, self._perm_epoch = order, epoch
            idx.append(int(self._perm[pos]))
        return torch.tensor(idx[self.rank::self.world_size], dtype=torch.long)

    # -- one step --------------------------------------------------------------------------------------------
    def _use_rollout(self, step: int) -> bool:
        if self.stage != "finetune" or self.plan_on_rollout <= 0 or self.model.forecast_frames < 2:
            return False
        if not self.cfg.world_model.plan_reads_forecast:
            return False  # the plan does not read the future frames: nothing to roll out for
        return random.Random(self.cfg.train.seed * 7919 + step).random() < self.plan_on_rollout

    def losses(self, batch: dict[str, torch.Tensor], use_rollout: bool = False) -> dict[str, torch.Tensor]:
        """The stage's losses for one batch; ``loss`` is what is optimised."""
        wm = self.cfg.world_model
        model = self.model
        if self.stage == "pretrain":
            batch = dict(batch, ego_valid=torch.zeros_like(batch["ego_valid"]))
            out = self.wrapped(batch, with_plan=False)
            out["loss"] = out["video_loss"]
            return out
        plan_future = None
        if use_rollout:
            was_training = model.training
            model.eval()
            h = model.history_frames
            forecast, _ = model.rollout(batch["ctx_tokens"], batch["dyn_tokens"][:, :h], batch["ego"],
                                        ego_valid=batch["ego_valid"], temperature=0.0)
            model.train(was_training)
            plan_future = forecast[:, :-1].detach()  # frames t+1 .. t+F-1, as the queries see them at inference
        elif wm.plan_future_noise > 0 and wm.plan_reads_forecast and model.forecast_frames >= 2:
            plan_future = corrupt_codes(batch["dyn_tokens"][:, model.history_frames:model.history_frames
                                                             + model.forecast_frames - 1],
                                        wm.plan_future_noise, model.codebook_size)
        out = self.wrapped(batch, plan_future=plan_future)
        video = out.get("video_loss", torch.zeros((), device=out["traj_loss"].device))
        out["loss"] = wm.video_weight * video + wm.traj_weight * out["traj_loss"]
        t = self.cfg.train
        if t.collision_weight > 0 and "boxes" in batch:
            out["collision_loss"] = overlap_penalty(out["waypoints"], batch["boxes"], batch["boxes_valid"],
                                                    batch["waypoints_valid"], t.collision_margin_m)
            out["loss"] = out["loss"] + t.collision_weight * out["collision_loss"]
        return out

    def train_step(self) -> dict[str, float]:
        t = self.cfg.train
        self.model.train()
        use_rollout = self._use_rollout(self.step)
        sums: dict[str, float] = {}
        for micro in range(t.grad_accum):
            batch = self.data.batch(self.batch_indices(self.step, micro), self.device)
            with grad_sync(self.wrapped, micro == t.grad_accum - 1):
                with autocast(self.device, self.autocast_dtype):
                    out = self.losses(batch, use_rollout)
                (out["loss"] / t.grad_accum).backward()
            for k in ("loss", "video_loss", "traj_loss", "token_acc", "collision_loss"):
                if k in out:
                    sums[k] = sums.get(k, 0.0) + float(out[k].detach()) / t.grad_accum
        sums = all_reduce_mean(sums, self.device)
        grad_norm = clip_grad_norm(self.model, t.grad_clip)
        if not math.isfinite(sums["loss"]) or not math.isfinite(grad_norm):
            raise ModelError(f"training diverged at step {self.step}: the loss is {sums['loss']} (lower train.lr)")
        self.optimizer.step()
        self._update_ema()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        sums.update(step=self.step, lr=self.scheduler.get_last_lr()[0], grad_norm=grad_norm,
                    rollout=float(use_rollout))
        return sums

    # -- the loop ----------------------------------------------------------------------------------------------
    def run(self, on_save: Callable[[Trainer], None] | None = None, *, max_steps: int | None = None,
            on_step: Callable[[Trainer, dict[str, float]], None] | None = None) -> list[dict[str, float]]:
        """Train until ``steps`` (or stop at step ``max_steps``); log every ``log_every`` steps with the ETA; call
        ``on_step`` after every step (every rank) and ``on_save`` every ``train.save_every`` steps and at the end
        (rank 0 only; every rank under FSDP, whose state gathering is collective)."""
        t = self.cfg.train
        started, first_step = time.monotonic(), self.step
        stop = self.steps if max_steps is None else min(self.steps, max_steps)
        save_ranks = is_sharded(self.wrapped) or self.rank == 0
        window: list[dict[str, float]] = []
        while self.step < stop:
            rec = self.train_step()
            window.append(rec)
            if self.step % self.log_every == 0 or self.step == stop:
                mean = {k: float(np.mean([r[k] for r in window if k in r])) for k in window[-1]}
                mean["step"], mean["lr"] = self.step, rec["lr"]
                elapsed = time.monotonic() - started
                per_step = elapsed / max(self.step - first_step, 1)
                mean["s_per_step"] = per_step
                self.history.append(mean)
                if self.rank == 0:
                    parts = [f"{self.stage} step {self.step}/{self.steps}", f"loss {mean['loss']:.4f}"]
                    for k, label in (("video_loss", "video"), ("traj_loss", "traj"), ("token_acc", "acc"),
                                     ("collision_loss", "overlap m")):
                        if k in mean:
                            parts.append(f"{label} {mean[k]:.4f}")
                    parts += [f"lr {mean['lr']:.2e}", f"{per_step:.2f} s/step",
                              f"ETA {_fmt_s(per_step * (self.steps - self.step))}"]
                    self.log("  ".join(parts))
                    self._append_log(mean)
                window = []
            if on_step is not None:
                on_step(self, rec)
            if on_save is not None and save_ranks and (self.step % t.save_every == 0 or self.step == stop):
                on_save(self)
        return self.history

    def _append_log(self, rec: dict[str, float]) -> None:
        if self.out_dir is None:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / LOG_FILE, "a") as fh:
            fh.write(json.dumps({"stage": self.stage, **{k: round(v, 6) for k, v in rec.items()}}) + "\n")

    # -- state ---------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = {"stage": self.stage, "step": self.step, "steps": self.steps,
                 "optimizer": full_optimizer_state(self.model, self.optimizer),
                 "scheduler": self.scheduler.state_dict(),
                 "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                         "numpy": np.random.get_state()}}
        if self.ema is not None:  # the checkpoint's weights are the average: keep the raw ones to go on from
            state["ema"] = {k: v.clone() for k, v in self.ema.items()}
            state["raw_weights"] = {k: p.detach().clone() for k, p in self.model.named_parameters()}
        return state

    def save_state(self, directory: str | Path) -> None:
        """Optimizer, scheduler, step and RNG states beside the weights (``train_state.pt``), atomically.

        Rank 0 writes (every rank calls it under FSDP: the optimizer state is gathered; the RNG states of the ranks
        are equal, as every rank seeds alike and draws the same shapes)."""
        state = self.state_dict()
        if self.rank != 0:
            return
        with atomic_path(Path(directory) / TRAIN_STATE_FILE) as tmp:
            torch.save(state, tmp)

    def load_state(self, directory: str | Path) -> None:
        path = Path(directory) / TRAIN_STATE_FILE
        if not path.is_file():
            raise ModelError(f"{directory} has no {TRAIN_STATE_FILE} to resume from")
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except (OSError, RuntimeError, EOFError) as exc:
            raise ModelError(f"{path} is corrupt ({str(exc).splitlines()[0]})") from None
        if state.get("stage") != self.stage:
            raise ModelError(f"{path} is from the {state.get('stage')} stage, not {self.stage}")
        load_optimizer_state(self.model, self.optimizer, state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            if "ema" not in state:
                raise ModelError(f"{path} was written without train.ema_decay; resume with the same config")
            self.ema = {k: v.float().clone() for k, v in state["ema"].items()}
            with torch.no_grad():
                for k, p in self.model.named_parameters():
                    p.copy_(state["raw_weights"][k].to(p.dtype))
        self.step = int(state["step"])
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        np.random.set_state(state["rng"]["numpy"])
