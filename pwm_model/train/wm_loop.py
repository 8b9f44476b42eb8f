"""Stages 2 and 3 of the world model: action-free video pretraining and joint fine-tuning (``pwm train``).

    train_world_model(cfg, WorldModelRun(stage="finetune", data=["out/store"], out="out/wm", init="out/wm_pre"))

The driver mirrors stage 1's ``tokenizer_loop.train_tokenizer``: it reads the token caches and labels, builds (or
loads) the model, trains it with ``Trainer`` under one process or a torchrun world, and writes the checkpoint
(weights, config, tokenizer copy, metrics, COMMANDS.md, train_state.pt for ``resume``, TensorBoard events).
``metrics.json`` ``train_<stage>`` records the camera of the clip stores trained on (``clips.camera_record``: image
size, camera topic, the stores' topics), which the export carries into ``manifest.json`` (``source.metrics``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pwm_model.config import PwmConfig, apply_overrides


@dataclass
class WorldModelRun:
    """What one ``pwm train`` run does (its options; the config is passed beside it)."""

    stage: str  # "pretrain" (video only) or "finetune" (video + trajectory)
    data: list[str]  # training clip stores
    out: str  # checkpoint directory to write
    tokenizer: str | None = None  # tokenizer checkpoint (default: the init one)
    init: str | None = None  # world-model checkpoint to start from
    resume: bool = False  # continue the run in ``out`` from its train_state.pt
    steps: int | None = None  # optimiser steps (default: the config's for the stage)
    max_steps: int | None = None  # stop (with a checkpoint) at this step of the schedule
    save_every: int | None = None
    eval_every: int | None = None
    eval_data: str | None = None  # held-out clip store scored every eval_every steps
    tensorboard: bool = True
    plan_on_rollout: float | None = None  # share of fine-tuning steps planning from the model's own forecast
    device: str = "cpu"
    log_every: int = 25
    weights_dtype: str = "float32"  # of the saved weights: float32 or float16
    command_line: list[str] = field(default_factory=list)  # recorded in COMMANDS.md


def train_world_model(cfg: PwmConfig, spec: WorldModelRun) -> None:
    """Run stage 2 or 3 in this process, or as this rank of a torchrun world (see the module docstring)."""
    from pwm_model.train.distributed import init_from_env, teardown

    cfg = apply_overrides(cfg, [f"train.{k}={getattr(spec, k)}" for k in ("save_every", "eval_every")
                                if getattr(spec, k) is not None])
    env = init_from_env(spec.device)  # one process, or this rank of a torchrun world
    try:
        _train(spec, cfg, env)
    except BaseException:
        teardown(wait=False)  # torchrun stops the other ranks
        raise
    teardown()


def _train(spec: WorldModelRun, cfg: PwmConfig, env: Any) -> None:
    import functools

    import torch

    from pwm_model.checkpoint import load_metrics, save_checkpoint
    from pwm_model.data.clips import ClipStore, camera_record
    from pwm_model.data.tokens import load_labels, token_cache
    from pwm_model.train.distributed import broadcast_flag, full_model_state, is_sharded, rank0_first, wrap_model
    from pwm_model.train.ego_branch import fit_ego_branch
    from pwm_model.train.provenance import append_command, copy_tokenizer
    from pwm_model.train.tb_logging import TBLogger
    from pwm_model.train.wm_data import WorldModelData
    from pwm_model.train.wm_monitor import TrainMonitor, load_grid_tokenizer
    from pwm_model.train.wm_trainer import Trainer
    from pwm_model.world_model.checkpoint import init_from
    from pwm_model.world_model.model import PolicyWorldModel, count_parameters

    tok_dir = spec.out if spec.resume else (spec.tokenizer or spec.init)
    stage = spec.stage
    steps = spec.steps if spec.steps is not None else (
        cfg.train.pretrain_steps if stage == "pretrain" else cfg.train.finetune_steps)
    plan_p = spec.plan_on_rollout if spec.plan_on_rollout is not None else cfg.world_model.plan_on_rollout

    parts = []
    with rank0_first(env):  # rank 0 builds a missing token cache; the others then read it
        for store in spec.data:
            cache = token_cache(store, tok_dir, cfg, progress=env.is_main)
            labels = None if stage == "pretrain" else load_labels(store)
            parts.append(WorldModelData.from_arrays(cache, labels, with_boxes=cfg.train.collision_weight > 0))
        eval_data = None
        if spec.eval_data:
            eval_data = WorldModelData.from_arrays(token_cache(spec.eval_data, tok_dir, cfg, progress=env.is_main),
                                                   None if stage == "pretrain" else load_labels(spec.eval_data))
    camera = camera_record([ClipStore(store).meta for store in spec.data])
    data = WorldModelData(*(torch.cat([getattr(p, f) for p in parts]) for f in (
        "ctx_tokens", "dyn_tokens", "ego", "ego_valid", "waypoints", "waypoints_valid")))
    if all(p.boxes is not None for p in parts):  # train.collision_weight: the boxes, padded to the most per clip
        most = max(p.boxes.shape[2] for p in parts)
        data.boxes = torch.cat([torch.nn.functional.pad(p.boxes, (0, 0, 0, most - p.boxes.shape[2])) for p in parts])
        data.boxes_valid = torch.cat([torch.nn.functional.pad(p.boxes_valid, (0, most - p.boxes_valid.shape[2]))
                                      for p in parts])

    torch.manual_seed(cfg.train.seed)
    model = PolicyWorldModel(cfg)
    if spec.resume:
        init_from(model, spec.out)
    elif spec.init:
        init_from(model, spec.init)
    fit = None
    if stage == "finetune" and not spec.resume and model.ego_branch is not None and cfg.train.ego_branch_refit:
        model.reset_ego_branch()  # train.ego_branch_refit: a fresh branch, fitted below
    if (stage == "finetune" and not spec.resume and model.ego_branch is not None and cfg.train.ego_branch_fit_steps
            and not bool(model.ego_branch[-1].weight.any())):  # a fresh branch: fit it to the ego labels first
        fit = fit_ego_branch(model, data, cfg.train.ego_branch_fit_steps, seed=cfg.train.seed,
                             log=functools.partial(print, flush=True) if env.is_main else (lambda text: None))
    model.to(env.device)
    n_params = count_parameters(model)
    # after loading the weights, before the optimizer; pretraining (or planning without forecasting) leaves a head
    # out of the graph
    wrapped = wrap_model(model, env, cfg.train.strategy,
                         find_unused=stage == "pretrain" or cfg.world_model.forecast_frames == 0)
    log = functools.partial(print, flush=True) if env.is_main else (lambda text: None)
    trainer = Trainer(cfg, model, data, stage, steps, out_dir=spec.out, device=env.device, rank=env.rank,
                      world_size=env.world_size, plan_on_rollout=plan_p, log_every=spec.log_every, log=log,
                      wrapped=wrapped)
    if spec.resume:
        trainer.load_state(spec.out)
    procs = f", {env.world_size} processes ({cfg.train.strategy}, {env.backend})" if env.distributed else ""
    log(f"{stage}: {len(data)} clips, {n_params / 1e6:.2f}M parameters, {steps} steps of "
        f"{cfg.train.batch_size} x {cfg.train.grad_accum} clips{procs}, forecast_frames={model.forecast_frames}, "
        f"focal={cfg.world_model.focal}, plan_on_rollout={plan_p}, device {env.device}"
        + (", bf16 autocast" if trainer.autocast_dtype is not None else ""))
    if env.is_main:
        copy_tokenizer(tok_dir, spec.out)
        if not spec.resume:
            title = f"stage {'2 (pretrain)' if stage == 'pretrain' else '3 (finetune)'}"
            append_command(spec.out, spec.init, title + (f", {env.world_size} processes" if env.distributed else ""),
                           list(spec.command_line))
    dtype = torch.float16 if spec.weights_dtype == "float16" else None

    def on_save(t: Trainer) -> None:  # rank 0; every rank under FSDP (gathering the shards is a collective)
        with t.averaged_weights():  # the EMA weights, where train.ema_decay > 0
            _save(t)
        t.save_state(spec.out)

    def _save(t: Trainer) -> None:
        weights = full_model_state(model) if is_sharded(model) else model
        if env.is_main:
            last = t.history[-1] if t.history else {}
            prior = load_metrics(spec.init) if spec.init and not spec.resume else {}
            metrics = {**{k: v for k, v in prior.items() if k.startswith("train_")},
                       f"train_{stage}": {"steps": t.step, "clips": len(data), "init": spec.init,
                                          "processes": env.world_size, "camera": camera,
                                          **({"ego_branch_fit": {k: round(v, 6) for k, v in fit.items()}}
                                             if fit else {}),
                                          "final": {k: round(float(v), 6) for k, v in last.items()}}}
            save_checkpoint(spec.out, cfg, {"world_model": weights}, metrics, dtype=dtype)

    stop = steps if spec.max_steps is None else min(steps, spec.max_steps)
    tensorboard = spec.tensorboard
    # on resume, drop the events an interrupted run wrote after the step its checkpoint holds
    tb = TBLogger(Path(spec.out) / "tb", enabled=env.is_main and tensorboard,
                  purge_step=trainer.step + 1 if spec.resume else None)
    grid_tok = load_grid_tokenizer(tok_dir, env.device, log) if env.is_main and tensorboard else None
    grids = broadcast_flag(grid_tok is not None, env.device)  # every rank joins the grids' rollouts under FSDP
    monitor = TrainMonitor(env, tb, stop, eval_data=eval_data, grids=grids, tokenizer=grid_tok, log=log)
    try:
        trainer.run(on_save, max_steps=spec.max_steps, on_step=monitor)
    finally:
        tb.close()
    if stop < steps:
        log(f"stopped at step {stop} of {steps} (--max-steps); continue with --resume")
    log(f"wrote {spec.out}")
