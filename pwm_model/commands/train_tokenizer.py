"""``pwm train-tokenizer``: stage 1, the context-guided LFQ tokenizer (ctx branch, then dyn branch)."""

from __future__ import annotations

import argparse

from pwm_model.commands.common import add_config_arguments, config_from_args

STAGES = {"ctx": ("ctx",), "dyn": ("dyn",), "decoders": ("ctx_decoder", "dyn_decoder"),
          "both": ("ctx", "dyn", "ctx_decoder", "dyn_decoder")}  # --branch -> the stages it runs
HELP = "train the context-guided LFQ tokenizer (stage 1: ctx branch, dyn branch, then the decoders)"
DESCRIPTION = """Train the tokenizer on a clip store (`pwm index`).

  pwm train-tokenizer --preset tiny --data out/store_tiny_train --out out/tok_tiny
  pwm train-tokenizer --init out/tok_tiny --branch dyn --set tokenizer.guidance=false \\
      --data out/store_tiny_train --out out/tok_tiny_noguide          # the guidance ablation

--branch both trains the ctx branch, then the dyn branch against the frozen ctx branch, then (when
train.tokenizer_decoder_steps > 0, as in the tiny preset) fine-tunes both decoders with the encoders frozen, which
sharpens every decoded image and leaves every token as it was. --branch dyn loads the ctx branch (and the config,
before --set) from the --init checkpoint; --branch decoders runs only the decoder stage on a whole --init tokenizer.
Steps, batch size and learning rate come from train.tokenizer_ctx_steps, train.tokenizer_dyn_steps,
train.tokenizer_decoder_steps, train.tokenizer_batch_size, train.tokenizer_lr and train.tokenizer_decoder_lr.
The output directory receives config.yaml, tokenizer.safetensors, metrics.json, recon_ctx.png, recon_dyn.png and
train_log.jsonl; with --eval-data, metrics.json also gets the held-out scores of `pwm eval-tokenizer`."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--data", required=True, metavar="STORE", help="training clip store (from `pwm index`)")
    parser.add_argument("--out", required=True, metavar="DIR", help="checkpoint directory to write")
    parser.add_argument("--branch", choices=tuple(STAGES), default="both",
                        help="which stage(s) to run (default: both: ctx, dyn, then the decoder fine-tuning)")
    parser.add_argument("--init", metavar="CHECKPOINT",
                        help="start from this checkpoint's config and ctx branch (--branch dyn) or whole tokenizer "
                             "(--branch decoders)")
    parser.add_argument("--eval-data", metavar="STORE", help="held-out clip store to score the result on")
    parser.add_argument("--max-clips", type=int, metavar="N", help="use only N evenly spread clips of --data")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    parser.add_argument("--weights-dtype", choices=("float32", "float16"), default="float32",
                        help="precision of the saved weights (float16 halves the file; default: float32)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")


def run(args: argparse.Namespace) -> int:
    import logging
    import os

    # idle OpenMP threads sleep instead of spinning (set before torch starts its thread pool): on a shared CPU,
    # spinning threads made each training step several times slower
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from pwm_model.checkpoint import save_checkpoint
    from pwm_model.errors import ConfigError
    from pwm_model.train.tokenizer_loop import train_tokenizer

    if args.threads < 1:
        raise ConfigError("--threads must be at least 1")
    torch.set_num_threads(args.threads)
    cfg = config_from_args(args)
    stats = train_tokenizer(cfg, args.data, args.out, branch=args.branch, init=args.init,
                            progress=not args.no_progress, max_clips=args.max_clips)
    dtype = torch.float16 if args.weights_dtype == "float16" else None
    metrics = None
    tok = None
    if args.eval_data or dtype is not None:
        from pwm_model.tokenizer.model import load_tokenizer

        _, tok = load_tokenizer(args.out)
    if args.eval_data:
        from pwm_model.data.datasets import FrameBank
        from pwm_model.train.tokenizer_eval import evaluate_tokenizer

        bank = FrameBank.from_store(args.eval_data, cfg.tokenizer, cfg.model_dt_s)
        metrics = evaluate_tokenizer(tok, bank)
        print(metrics)
    if tok is not None:
        save_checkpoint(args.out, cfg, {"tokenizer": tok}, {"tokenizer_eval": metrics} if metrics else None,
                        dtype=dtype)
    logging.getLogger(__name__).info("trained %s in %.1f min; checkpoint in %s", args.branch,
                                     sum(stats[b]["seconds"] for b in STAGES[args.branch] if b in stats) / 60, args.out)
    return 0
