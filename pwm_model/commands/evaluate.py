"""``pwm eval``: planning and forecast metrics of a world-model checkpoint, with baselines side by side."""

from __future__ import annotations

import argparse

HELP = "evaluate a world-model checkpoint on a clip store (L2, collision, forecast PSNR/SSIM, baselines)"
DESCRIPTION = """Roll the world model out greedily on every clip of a store and score it.

  pwm eval --checkpoint models/pwm-tiny --data out/store_eval
  pwm eval --checkpoint out/wm_tiny --data out/store_eval --train-data out/store_train \\
      --compare out/wm_plan_only --save

Planning: L2 at 1/2/3 s (mean up to T as in VAD/PWM, and at T as in UniAD) and collision of the swept ego box
(4.084 x 1.85 m) with the ground-truth boxes, for the model, every --compare checkpoint, constant velocity and
(with --train-data) an ego-status MLP trained on those clips. Forecast: token accuracy per horizon, PSNR/SSIM per
horizon of the decoded forecast vs the true future frames, copy-last-frame and the tokenizer ceiling.
Prints the tables and, last, one JSON line (l2_1s, l2_2s, l2_3s, l2_avg, collision_rate, psnr_forecast_1s_db,
cv_l2_3s, plan_only_l2_3s with a forecast_frames=0 --compare checkpoint, copy_last_psnr_1s_db, ...)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="DIR", help="world-model checkpoint directory")
    parser.add_argument("--data", required=True, metavar="STORE", help="held-out clip store")
    parser.add_argument("--train-data", metavar="STORE", help="training clip store for the ego-status MLP baseline")
    parser.add_argument("--compare", action="append", default=[], metavar="DIR",
                        help="another world-model checkpoint to plan with on the same clips (repeatable)")
    parser.add_argument("--image-clips", type=int, default=256, metavar="N",
                        help="clips whose forecasts are decoded for PSNR/SSIM (default: 256, evenly spread)")
    parser.add_argument("--max-clips", type=int, metavar="N", help="score only N evenly spread clips (default: all)")
    parser.add_argument("--no-anticipation", action="store_true",
                        help="skip the anticipation table (it plans every clip around each logged event)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--save", action="store_true",
                        help="merge the summary into the checkpoint's metrics.json under eval_<store name>")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import torch

    from pwm_model.errors import ConfigError
    from pwm_model.eval.world_model_eval import evaluate, format_report

    if args.threads < 0 or args.batch_size < 1 or args.image_clips < 0 or (args.max_clips or 1) < 1:
        raise ConfigError("--threads and --image-clips must not be negative, --batch-size and --max-clips must be "
                          "at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    report = evaluate(args.checkpoint, args.data, train_store=args.train_data, compare=args.compare,
                      image_clips=args.image_clips, max_clips=args.max_clips, batch_size=args.batch_size,
                      device=args.device, anticipation=not args.no_anticipation, progress=not args.quiet)
    print(format_report(report))
    if args.save:
        from pwm_model.checkpoint import METRICS_FILE, load_metrics
        from pwm_model.io_utils import write_json_atomic

        metrics = load_metrics(args.checkpoint)
        metrics[f"eval_{Path(args.data).name}"] = {
            **report.summary, "planning": report.planning,
            "forecast": {"horizons_s": report.horizons_s, **report.forecast}}
        write_json_atomic(Path(args.checkpoint) / METRICS_FILE, json.loads(json.dumps(metrics, default=float)))
    print(json.dumps(report.summary))
    return 0
