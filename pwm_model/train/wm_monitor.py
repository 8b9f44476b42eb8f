"""What a world-model run reports besides its progress lines: the ``on_step`` hook of ``Trainer.run``.

- Every step: the step's scalars (loss, its parts, token accuracy, lr, gradient norm) to TensorBoard.
- Every ``train.eval_every`` steps and at the last step: the stage's teacher-forced losses on held-out clips
  (``--eval-data``; to TensorBoard ``eval/*`` and ``train_log.jsonl``) and a forecast image grid (true future frames
  over the model's greedy forecast, decoded with the run's tokenizer) of a few clips.

Every rank calls the hook (under FSDP a forward pass needs all of them); rank 0 writes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pwm_model.train.distributed import DistEnv, all_reduce_sum, autocast, is_sharded
from pwm_model.train.tb_logging import TBLogger, forecast_rows
from pwm_model.train.wm_data import WorldModelData
from pwm_model.train.wm_trainer import LOG_FILE, Trainer

EVAL_CLIPS = 256  # held-out clips scored at each evaluation (evenly spread over the set)
GRID_CLIPS = 4  # clips in each forecast grid


def spread(n: int, count: int) -> torch.Tensor:
    """``count`` indices evenly spread over ``range(n)`` (all of them when ``count >= n``)."""
    if count >= n:
        return torch.arange(n)
    return torch.from_numpy(np.unique(np.linspace(0, n - 1, count).round().astype(np.int64)))


@torch.no_grad()
def held_out_losses(trainer: Trainer, data: WorldModelData, max_clips: int = EVAL_CLIPS) -> dict[str, float]:
    """The stage's teacher-forced losses (and token accuracy) over up to ``max_clips`` clips of ``data``.

    The ranks split the clips (a multiple of the world size of them, so every rank makes the same passes) and the
    clip-weighted means are summed over the ranks: every rank returns the same numbers.
    """
    world, rank = trainer.world_size, trainer.rank
    n = min(len(data), max_clips)
    idx = spread(len(data), n)
    if len(idx) >= world:
        idx = idx[: len(idx) - len(idx) % world]
    else:  # fewer clips than ranks: every rank scores them all
        idx = idx.repeat(world)
    keys = ("loss", "video_loss", "traj_loss", "token_acc")
    sums = torch.zeros(len(keys) + 1, dtype=torch.float64)
    chunk = trainer.cfg.train.batch_size * world
    was_training = trainer.model.training
    trainer.model.eval()
    for start in range(0, len(idx), chunk):
        mine = idx[start:start + chunk][rank::world]
        with autocast(trainer.device, trainer.autocast_dtype):
            out = trainer.losses(data.batch(mine, trainer.device))
        for i, k in enumerate(keys):
            if k in out:
                sums[i] += float(out[k]) * len(mine)
        sums[-1] += len(mine)
    trainer.model.train(was_training)
    present = [k in out for k in keys]  # the same keys on every pass of a stage
    sums = all_reduce_sum(sums.to(trainer.device)).cpu()
    return {k: float(sums[i] / sums[-1]) for i, k in enumerate(keys) if present[i]}


class TrainMonitor:
    """``on_step(trainer, record)`` for ``Trainer.run``: TensorBoard scalars, periodic held-out losses and grids."""

    def __init__(self, env: DistEnv, tb: TBLogger, stop_step: int, *, eval_data: WorldModelData | None = None,
                 grids: bool = False, tokenizer: torch.nn.Module | None = None,
                 grid_data: WorldModelData | None = None, eval_clips: int = EVAL_CLIPS, grid_clips: int = GRID_CLIPS,
                 log: Callable[[str], None] = print) -> None:
        """``grids``: make forecast grids (the same on every rank); ``tokenizer`` decodes them (rank 0 only)."""
        self.env, self.tb, self.stop_step = env, tb, stop_step
        self.eval_data, self.grids, self.tokenizer = eval_data, grids, tokenizer
        self.grid_data = grid_data if grid_data is not None else eval_data
        self.eval_clips, self.grid_clips, self.log = eval_clips, grid_clips, log
        self.history: list[dict[str, float]] = []

    def __call__(self, trainer: Trainer, record: dict[str, float]) -> None:
        self.tb.scalars(trainer.step, record, "train")
        if trainer.step % trainer.cfg.train.eval_every == 0 or trainer.step == self.stop_step:
            self.evaluate(trainer)
            self.tb.flush()

    def evaluate(self, trainer: Trainer) -> None:
        step = trainer.step
        if self.eval_data is not None:
            scores = held_out_losses(trainer, self.eval_data, self.eval_clips)
            self.history.append({"step": step, **scores})
            if self.env.is_main:
                self.tb.scalars(step, scores, "eval")
                self.log(f"{trainer.stage} step {step} held-out: "
                         + "  ".join(f"{k} {v:.4f}" for k, v in scores.items()))
                if trainer.out_dir is not None:
                    trainer.out_dir.mkdir(parents=True, exist_ok=True)
                    with open(trainer.out_dir / LOG_FILE, "a") as fh:
                        fh.write(json.dumps({"stage": trainer.stage, "eval": True, "step": step,
                                             **{k: round(v, 6) for k, v in scores.items()}}) + "\n")
        self.grid(trainer)

    @torch.no_grad()
    def grid(self, trainer: Trainer) -> None:
        """The forecast grid of the first clips of the grid data (every rank rolls out; rank 0 decodes and logs)."""
        data = self.grid_data if self.grid_data is not None else trainer.data
        model = trainer.model
        if not self.grids or model.forecast_frames == 0:
            return
        if not self.env.is_main and not is_sharded(model):
            return  # only rank 0 draws; under FSDP the rollout is a collective every rank joins
        batch = data.batch(spread(len(data), self.grid_clips), trainer.device)
        ego_valid = batch["ego_valid"] if trainer.stage == "finetune" else torch.zeros_like(batch["ego_valid"])
        h = model.history_frames
        was_training = model.training
        model.eval()
        with autocast(trainer.device, trainer.autocast_dtype):
            forecast, _ = model.rollout(batch["ctx_tokens"], batch["dyn_tokens"][:, :h], batch["ego"],
                                        ego_valid=ego_valid, temperature=0.0)
        model.train(was_training)
        if self.env.is_main and self.tokenizer is not None:
            true = batch["dyn_tokens"][:, h:h + model.forecast_frames]
            self.tb.image_grid("forecast/true_over_predicted", trainer.step,
                               forecast_rows(self.tokenizer, batch["ctx_tokens"], true, forecast))


def load_grid_tokenizer(tokenizer_dir: str | Path, device: torch.device,
                        log: Callable[[str], None] = print) -> torch.nn.Module | None:
    """The run's tokenizer (to decode forecast grids), in eval mode on ``device``; None, with a warning, when it
    does not load (the grids are a view on training, not a reason to stop it)."""
    from pwm_model.errors import PwmError
    from pwm_model.tokenizer.model import load_tokenizer

    try:
        _, tok = load_tokenizer(str(tokenizer_dir))
    except PwmError as exc:
        log(f"warning: no forecast grids: {exc}")
        return None
    return tok.to(device).eval()
