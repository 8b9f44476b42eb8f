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

pretrain ignores every label (clips without ego labels are fine); finetune optimises
world_model.video_weight * L_video + world_model.traj_weight * L_traj. With --init the config (and the tokenizer)
come from that checkpoint, then --set applies; otherwise --preset/--config, and the tokenizer section always comes
from the tokenizer checkpoint. Steps default to train.pretrain_steps / train.finetune_steps. The output directory
receives config.yaml, world_model.safetensors, tokenizer.safetensors, metrics.json, COMMANDS.md, train_log.jsonl
and train_state.pt (for --resume)."""


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
    parser.add_argument("--plan-on-rollout", type=float, default=None, metavar="P",
                        help="share of fine-tuning steps that plan from the model's own forecast "
                             "(default: world_model.plan_on_rollout)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
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

    from pwm_model.errors import ConfigError
    from pwm_model.train.checkpoint import load_metrics
    from pwm_model.train.wm_checkpoint import append_command, copy_tokenizer, init_from, save_world_model
    from pwm_model.train.wm_data import WorldModelData, load_labels, token_cache
    from pwm_model.train.wm_trainer import Trainer
    from pwm_model.world_model.model import PolicyWorldModel, count_parameters

    if args.threads < 0:
        raise ConfigError("--threads must not be negative")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = _config(args)
    tok_dir = args.out if args.resume else (args.tokenizer or args.init)
    stage = args.stage
    steps = args.steps if args.steps is not None else (
        cfg.train.pretrain_steps if stage == "pretrain" else cfg.train.finetune_steps)
    plan_p = args.plan_on_rollout if args.plan_on_rollout is not None else cfg.world_model.plan_on_rollout

    parts = []
    for store in args.data:
        cache = token_cache(store, tok_dir, cfg)
        labels = None if stage == "pretrain" else load_labels(store)
        parts.append(WorldModelData.from_arrays(cache, labels))
    data = WorldModelData(*(torch.cat([getattr(p, f) for p in parts]) for f in (
        "ctx_tokens", "dyn_tokens", "ego", "ego_valid", "waypoints", "waypoints_valid")))

    torch.manual_seed(cfg.train.seed)
    model = PolicyWorldModel(cfg)
    if args.resume:
        init_from(model, args.out)
    elif args.init:
        init_from(model, args.init)
    model.to(args.device)
    trainer = Trainer(cfg, model, data, stage, steps, out_dir=args.out, device=args.device,
                      plan_on_rollout=plan_p, log_every=args.log_every)
    if args.resume:
        trainer.load_state(args.out)
    print(f"{stage}: {len(data)} clips, {count_parameters(model) / 1e6:.2f}M parameters, {steps} steps of "
          f"{cfg.train.batch_size} x {cfg.train.grad_accum} clips, forecast_frames={model.forecast_frames}, "
          f"focal={cfg.world_model.focal}, plan_on_rollout={plan_p}", flush=True)
    copy_tokenizer(tok_dir, args.out)
    if not args.resume:
        append_command(args.out, args.init, f"stage {'2 (pretrain)' if stage == 'pretrain' else '3 (finetune)'}",
                       command_line(args))
    dtype = torch.float16 if args.weights_dtype == "float16" else None

    def on_save(t: Trainer) -> None:
        last = t.history[-1] if t.history else {}
        prior = load_metrics(args.init) if args.init and not args.resume else {}
        metrics = {**{k: v for k, v in prior.items() if k.startswith("train_")},
                   f"train_{stage}": {"steps": t.step, "clips": len(data), "init": args.init,
                                      "final": {k: round(float(v), 6) for k, v in last.items()}}}
        save_world_model(args.out, cfg, model, metrics, dtype=dtype)
        t.save_state(args.out)

    trainer.run(on_save)
    print(f"wrote {args.out}", flush=True)
    return 0
