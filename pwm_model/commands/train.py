"""``pwm train``: stage 2 (action-free video pretraining) and stage 3 (joint fine-tuning) of the world model."""

from __future__ import annotations

import argparse

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
come from that checkpoint, then --set applies (--config is refused with --init and --resume: a config file is
merged over its own preset, not over the checkpoint; use --set); otherwise --preset/--config, and the tokenizer
section always comes from the tokenizer checkpoint. Steps default to train.pretrain_steps / train.finetune_steps.
The output directory receives config.yaml, world_model.safetensors, tokenizer.safetensors, metrics.json,
COMMANDS.md, train_log.jsonl, train_state.pt (for --resume) and tb/ (TensorBoard: scalars, held-out losses,
forecast grids).

Under torchrun every process trains on its share of each step's batch (train.batch_size clips per process;
NCCL with --device cuda, gloo on the CPU); train.strategy picks ddp (replicas) or fsdp (sharded, the paper
preset). Rank 0 alone prints and writes."""


RESUME_WITH_CONFIG = ("--resume continues with the config saved in --out, and a --config file would reset every value "
                      "it does not name to its preset's: change single values with --set KEY=VALUE instead")


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
    from pwm_model.checkpoint import load_config
    from pwm_model.commands.common import config_from_args
    from pwm_model.config import apply_overrides, from_dict
    from pwm_model.errors import ConfigError

    if args.resume:
        if args.config:
            raise ConfigError(RESUME_WITH_CONFIG)
        cfg = load_config(args.out)
        return apply_overrides(cfg, args.overrides or []) if args.overrides else cfg
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
    from pwm_model.errors import ConfigError
    from pwm_model.train.wm_loop import WorldModelRun, train_world_model

    if args.threads < 0:
        raise ConfigError("--threads must not be negative")
    for flag in ("max_steps", "save_every", "eval_every"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be at least 1")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    cfg = _config(args)
    spec = WorldModelRun(
        stage=args.stage, data=list(args.data), out=args.out, tokenizer=args.tokenizer, init=args.init,
        resume=args.resume, steps=args.steps, max_steps=args.max_steps, save_every=args.save_every,
        eval_every=args.eval_every, eval_data=args.eval_data, tensorboard=not args.no_tensorboard,
        plan_on_rollout=args.plan_on_rollout, device=args.device, log_every=args.log_every,
        weights_dtype=args.weights_dtype, command_line=command_line(args))
    train_world_model(cfg, spec)
    return 0
