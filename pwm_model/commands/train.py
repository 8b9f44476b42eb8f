"""``pwm train``: stage 2 (action-free video pretraining) and stage 3 (joint fine-tuning) of the world model."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "train the world model (stage 2 pretrain: video only; stage 3 finetune: video + trajectory)"
DESCRIPTION = """Train the world-model transformer on the tokens of a clip store (tokenized once with the tokenizer
checkpoint and cached beside the store as <store>.tokens/<tokenizer sha>/).

  pwm train --stage pretrain --data out/store_train --tokenizer out/tok_tiny --out out/wm_pre --preset tiny
  pwm train --stage finetune --data out/store_train --init out/wm_pre --out out/wm_tiny
  pwm train --stage finetune --data out/store_train --init out/wm_pre --out out/wm_plan_only \\
      --set world_model.forecast_frames=0                         # ablation: plan without forecasting
  pwm train --stage finetune --data out/store_train --tokenizer out/tok_tiny --out out/wm_no_pretrain
  torchrun --nproc-per-node 8 -m pwm_model.cli train --stage pretrain --device cuda --preset small \\
      --data out/store_train --tokenizer out/tok_small --out out/wm_small_pre     # 8 GPUs (docs/TRAINING.md)

pretrain ignores every label (clips without ego labels are fine); finetune optimises
world_model.video_weight * L_video + world_model.traj_weight * L_traj. With --init the config (and the tokenizer)
come from that checkpoint, then --set applies; otherwise --preset/--config, and the tokenizer section always comes
from the tokenizer checkpoint. Steps default to train.pretrain_steps / train.finetune_steps. The output directory
receives config.yaml, world_model.safetensors, tokenizer.safetensors, metrics.json, COMMANDS.md, train_log.jsonl,
train_state.pt (for --resume) and tb/ (TensorBoard: scalars, held-out losses, forecast grids).

Under torchrun every process trains on its share of each step's batch (train.batch_size clips per process;
NCCL with --device cuda, gloo on the CPU); train.strategy picks ddp (replicas) or fsdp (sharded, the paper
preset). Rank 0 alone prints and writes."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pwm_model.commands.common import add_config_arguments

    parser.add_argument("--stage", required=True, choices=("pretrain", "finetune"))
    parser.add_argument("--data", required=True, action="append", metavar="STORE",
                        help="training clip store (repeatable)")
    parser.add_argument("--out", required=True, metavar="DIR", help="checkpoint directory to write")
    parser.add_argument("--tokenizer", metavar="CHECKPOINT", help="tokenizer checkpoint (default: the --init one)")
    parser.add_argument("--init", metavar="CHECKPOINT", help="start from this world-model checkpoint")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its train_state.pt")
    parser.add_argument("--steps", type=int, metavar="N", help="optimiser steps (default: from the config)")
    parser.add_argument("--max-steps", type=int, metavar="N",
                        help="stop (with a checkpoint) at step N of the --steps schedule; continue with --resume")
    parser.add_argument("--save-every", type=int, metavar="N", help="checkpoint every N steps "
                        "(default: train.save_every)")
    parser.add_argument("--eval-every", type=int, metavar="N", help="held-out losses and a forecast grid every N "
                        "steps (default: train.eval_every)")
    parser.add_argument("--eval-data", metavar="STORE", help="held-out clip store scored every --eval-every steps")
    parser.add_argument("--no-tensorboard", action="store_true", help="write no TensorBoard events (tb/)")
    parser.add_argument("--plan-on-rollout", type=float, default=None, metavar="P",
                        help="share of fine-tuning steps that plan from the model's own forecast "
                             "(default: world_model.plan_on_rollout)")
    parser.add_argument("--device", default="cpu",
                        help="torch device (default: cpu); under torchrun cuda means cuda:LOCAL_RANK")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--log-every", type=int, default=25, metavar="N", help="progress line every N steps")
    parser.add_argument("--weights-dtype", choices=("float32", "float16"), default="float32",
                        help="precision of the saved weights (default: float32)")
    add_config_arguments(parser)


def _config(args: argparse.Namespace):
    from pwm_model.commands.common import config_from_args
    from pwm_model.config import apply_overrides, from_dict
    from pwm_model.errors import ConfigError
    from pwm_model.train.checkpoint import load_config

    if args.resume:
        cfg = load_config(args.out)
        return apply_overrides(cfg, args.overrides or []) if args.overrides else cfg
    if args.init:
        if args.config:
            raise ConfigError("--init takes its config from the checkpoint: use --set instead of --config")
        cfg = apply_overrides(load_config(args.init), args.overrides or [])
    else:
        cfg = config_from_args(args)
    tok_dir = args.tokenizer or args.init
    if tok_dir is None:
        raise ConfigError("name the tokenizer checkpoint with --tokenizer (or a world-model checkpoint with --init)")
    tok_cfg = load_config(tok_dir)
    data = cfg.to_dict()
    data["tokenizer"] = tok_cfg.to_dict()["tokenizer"]
    return from_dict(data)


def command_line(args: argparse.Namespace) -> list[str]:
    """The ``pwm train`` command line these arguments stand for (for COMMANDS.md)."""
    argv = ["pwm", "train", "--stage", args.stage]
    for store in args.data:
        argv += ["--data", store]
    for flag, value in (("--tokenizer", args.tokenizer), ("--init", args.init), ("--config", args.config),
                        ("--steps", args.steps), ("--plan-on-rollout", args.plan_on_rollout),
                        ("--device", None if args.device == "cpu" else args.device)):
        if value is not None:
            argv += [flag, str(value)]
    if not args.init and not args.config:
        argv += ["--preset", args.preset]
    for item in args.overrides or []:
        argv += ["--set", item]
    return argv + ["--out", args.out]


def run(args: argparse.Namespace) -> int:
    import torch

    from pwm_model.config import apply_overrides
    from pwm_model.errors import ConfigError
    from pwm_model.train.distributed import init_from_env, teardown

    if args.threads < 0:
        raise ConfigError("--threads must not be negative")
    for flag in ("max_steps", "save_every", "eval_every"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = _config(args)
    cfg = apply_overrides(cfg, [f"train.{k}={getattr(args, k)}" for k in ("save_every", "eval_every")
                                if getattr(args, k) is not None])
    env = init_from_env(args.device)  # one process, or this rank of a torchrun world
    try:
        _train(args, cfg, env)
    except BaseException:
        teardown(wait=False)  # torchrun stops the other ranks
        raise
    teardown()
    return 0


def _train(args: argparse.Namespace, cfg, env) -> None:
    import functools

    import torch

    from pwm_model.train.checkpoint import load_metrics, save_checkpoint
    from pwm_model.train.distributed import broadcast_flag, full_model_state, is_sharded, rank0_first, wrap_model
    from pwm_model.train.tb_logging import TBLogger
    from pwm_model.train.wm_checkpoint import append_command, copy_tokenizer, init_from
    from pwm_model.train.wm_data import WorldModelData, load_labels, token_cache
    from pwm_model.train.wm_monitor import TrainMonitor, load_grid_tokenizer
    from pwm_model.train.wm_trainer import Trainer
    from pwm_model.world_model.model import PolicyWorldModel, count_parameters

    tok_dir = args.out if args.resume else (args.tokenizer or args.init)
    stage = args.stage
    steps = args.steps if args.steps is not None else (
        cfg.train.pretrain_steps if stage == "pretrain" else cfg.train.finetune_steps)
    plan_p = args.plan_on_rollout if args.plan_on_rollout is not None else cfg.world_model.plan_on_rollout

    parts = []
    with rank0_first(env):  # rank 0 builds a missing token cache; the others then read it
        for store in args.data:
            cache = token_cache(store, tok_dir, cfg, progress=env.is_main)
            labels = None if stage == "pretrain" else load_labels(store)
            parts.append(WorldModelData.from_arrays(cache, labels))
        eval_data = None
        if args.eval_data:
            eval_data = WorldModelData.from_arrays(token_cache(args.eval_data, tok_dir, cfg, progress=env.is_main),
                                                   None if stage == "pretrain" else load_labels(args.eval_data))
    data = WorldModelData(*(torch.cat([getattr(p, f) for p in parts]) for f in (
        "ctx_tokens", "dyn_tokens", "ego", "ego_valid", "waypoints", "waypoints_valid")))

    torch.manual_seed(cfg.train.seed)
    model = PolicyWorldModel(cfg)
    if args.resume:
        init_from(model, args.out)
    elif args.init:
        init_from(model, args.init)
    model.to(env.device)
    n_params = count_parameters(model)
    # after loading the weights, before the optimizer; pretraining (or planning without forecasting) leaves a head
    # out of the graph
    wrapped = wrap_model(model, env, cfg.train.strategy,
                         find_unused=stage == "pretrain" or cfg.world_model.forecast_frames == 0)
    log = functools.partial(print, flush=True) if env.is_main else (lambda text: None)
    trainer = Trainer(cfg, model, data, stage, steps, out_dir=args.out, device=env.device, rank=env.rank,
                      world_size=env.world_size, plan_on_rollout=plan_p, log_every=args.log_every, log=log,
                      wrapped=wrapped)
    if args.resume:
        trainer.load_state(args.out)
    procs = f", {env.world_size} processes ({cfg.train.strategy}, {env.backend})" if env.distributed else ""
    log(f"{stage}: {len(data)} clips, {n_params / 1e6:.2f}M parameters, {steps} steps of "
        f"{cfg.train.batch_size} x {cfg.train.grad_accum} clips{procs}, forecast_frames={model.forecast_frames}, "
        f"focal={cfg.world_model.focal}, plan_on_rollout={plan_p}, device {env.device}"
        + (", bf16 autocast" if trainer.autocast_dtype is not None else ""))
    if env.is_main:
        copy_tokenizer(tok_dir, args.out)
        if not args.resume:
            title = f"stage {'2 (pretrain)' if stage == 'pretrain' else '3 (finetune)'}"
            append_command(args.out, args.init, title + (f", {env.world_size} processes" if env.distributed else ""),
                           command_line(args))
    dtype = torch.float16 if args.weights_dtype == "float16" else None

    def on_save(t: Trainer) -> None:  # rank 0; every rank under FSDP (gathering the shards is a collective)
        weights = full_model_state(model) if is_sharded(model) else model
        if env.is_main:
            last = t.history[-1] if t.history else {}
            prior = load_metrics(args.init) if args.init and not args.resume else {}
            metrics = {**{k: v for k, v in prior.items() if k.startswith("train_")},
                       f"train_{stage}": {"steps": t.step, "clips": len(data), "init": args.init,
                                          "processes": env.world_size,
                                          "final": {k: round(float(v), 6) for k, v in last.items()}}}
            save_checkpoint(args.out, cfg, {"world_model": weights}, metrics, dtype=dtype)
        t.save_state(args.out)

    stop = steps if args.max_steps is None else min(steps, args.max_steps)
    tensorboard = not args.no_tensorboard
    # on resume, drop the events an interrupted run wrote after the step its checkpoint holds
    tb = TBLogger(Path(args.out) / "tb", enabled=env.is_main and tensorboard,
                  purge_step=trainer.step + 1 if args.resume else None)
    grid_tok = load_grid_tokenizer(tok_dir, env.device, log) if env.is_main and tensorboard else None
    grids = broadcast_flag(grid_tok is not None, env.device)  # every rank joins the grids' rollouts under FSDP
    monitor = TrainMonitor(env, tb, stop, eval_data=eval_data, grids=grids, tokenizer=grid_tok, log=log)
    try:
        trainer.run(on_save, max_steps=args.max_steps, on_step=monitor)
    finally:
        tb.close()
    if stop < steps:
        log(f"stopped at step {stop} of {steps} (--max-steps); continue with --resume")
    log(f"wrote {args.out}")
