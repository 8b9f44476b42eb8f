"""``pwm eval-tokenizer``: score a tokenizer checkpoint on a (held-out) clip store."""

from __future__ import annotations

import argparse

HELP = "score a tokenizer checkpoint: PSNR/SSIM of both branches, code usage (table, then one JSON line)"
DESCRIPTION = """Score a tokenizer checkpoint on the consecutive model frames (f-1, f) of a clip store.

  pwm eval-tokenizer --checkpoint models/pwm-tiny --data out/store_tiny_heldout

ctx: frame f through the ctx branch. dyn: frame f at the dyn resolution, encoded and decoded against the ctx maps of
frame f-1 (the guidance rule). Prints a table, then, last, one JSON line with psnr_ctx_db, psnr_dyn_db, ssim_dyn,
code_usage_ctx, code_usage_dyn, tokens_ctx, tokens_dyn (and more)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="DIR", help="tokenizer checkpoint directory")
    parser.add_argument("--data", required=True, metavar="STORE", help="clip store to score on (held-out drives)")
    parser.add_argument("--max-pairs", type=int, default=512,
                        help="score at most this many evenly spread frame pairs; 0 = all (default: 512)")
    parser.add_argument("--batch-size", type=int, default=32, help="frames per forward pass (default: 32)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    parser.add_argument("--grid", metavar="PNG", help="also write originals vs reconstructions as a PNG grid")
    parser.add_argument("--write-metrics", action="store_true",
                        help="merge the scores into the checkpoint's metrics.json (key tokenizer_eval)")


def run(args: argparse.Namespace) -> int:
    import json
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep (see train_tokenizer.py)
    import cv2
    import torch

    from pwm_model.checkpoint import METRICS_FILE, load_metrics
    from pwm_model.data.datasets import FrameBank
    from pwm_model.errors import ConfigError
    from pwm_model.io_utils import write_bytes_atomic, write_json_atomic
    from pwm_model.tokenizer.model import load_tokenizer
    from pwm_model.train.tokenizer_eval import evaluate_tokenizer, format_table, recon_grid

    if args.max_pairs < 0 or args.batch_size < 1 or args.threads < 1:
        raise ConfigError("--max-pairs must be >= 0, --batch-size and --threads >= 1")
    torch.set_num_threads(args.threads)
    cfg, tok = load_tokenizer(args.checkpoint)
    bank = FrameBank.from_store(args.data, cfg.tokenizer, cfg.model_dt_s)
    metrics = evaluate_tokenizer(tok, bank, max_pairs=args.max_pairs or None, batch_size=args.batch_size,
                                 progress=True)
    metrics = {"checkpoint": str(args.checkpoint), "data": str(args.data), **metrics}
    if args.grid:
        ok, png = cv2.imencode(".png", cv2.cvtColor(recon_grid(tok, bank), cv2.COLOR_RGB2BGR))
        write_bytes_atomic(args.grid, png.tobytes())
    if args.write_metrics:
        from pathlib import Path

        write_json_atomic(Path(args.checkpoint) / METRICS_FILE,
                          {**load_metrics(args.checkpoint), "tokenizer_eval": metrics})
    print(format_table(metrics))
    print(json.dumps(metrics))
    return 0
