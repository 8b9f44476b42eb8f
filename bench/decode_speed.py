"""Decode speed: parallel next-frame generation vs token-by-token decoding of the same F future frames.

Both modes run the same model in the same process. After one shared prefill over [EGO][ctx t][dyn t-H+1 .. t]
(which already yields frame t+1 in the parallel mode and the first token in the token mode), the F x Ld forecast
tokens are decoded: parallel, one pass per further frame with all Ld slots at once (F-1 passes); token-by-token,
one pass per further token (F*Ld-1 passes). ``parallel_ms`` / ``ar_ms`` / ``speedup`` time this decode phase
from the same prefilled KV cache; ``*_total_ms`` / ``speedup_total`` time the whole rollout (prefill + decode +
planning pass), where the shared prefill bounds the ratio. Prints a table and, last, one JSON line.

    .venv/bin/python bench/decode_speed.py                          # tiny preset, random weights
    .venv/bin/python bench/decode_speed.py --checkpoint models/pwm-tiny --repeats 20
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", help="config preset when no checkpoint is given")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--checkpoint", help="checkpoint directory with world_model.safetensors (else random)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    import torch

    from pwm_model.config import apply_overrides, preset
    from pwm_model.world_model.model import PolicyWorldModel

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.checkpoint:
        from pwm_model.world_model.checkpoint import load_world_model

        model, cfg = load_world_model(args.checkpoint)
    else:
        cfg = apply_overrides(preset(args.preset), args.overrides)
        model = PolicyWorldModel(cfg)
    model = model.to(args.device).eval()
    c, b = model.codebook_size, args.batch
    f = model.forecast_frames
    if f < 1:
        print("error: the model forecasts no frames (world_model.forecast_frames=0)", file=sys.stderr)
        return 2
    g = torch.Generator().manual_seed(0)
    ctx = torch.randint(0, c, (b, model.ctx_tokens), generator=g).to(args.device)
    hist = torch.randint(0, c, (b, model.history_frames, model.dyn_tokens), generator=g).to(args.device)
    ego = torch.tensor([[8.0, 0.0, 0.0, 1.0, 0.0, 0.0]] * b, device=args.device)  # 8 m/s, straight, no yaw rate

    def timed(fn) -> list[float]:
        fn()  # warm-up
        out = []
        for _ in range(args.repeats):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            out.append((time.perf_counter() - t0) * 1e3)
        return out

    with torch.no_grad():
        logits, kv = model.prefill(ctx, hist, ego)
        prefill_ms = timed(lambda: model.prefill(ctx, hist, ego))
        # decode phase: the F future frames from the same prefilled cache
        par = timed(lambda: model.decode_frames(logits, kv, f))
        ar = timed(lambda: model.decode_tokens(logits[:, -1], kv, f))
        _, kv_f, _ = model.decode_frames(logits, kv, f)
        plan_ms = timed(lambda: model.plan_step(kv_f))
        # end to end: prefill + forecast + plan
        par_total = timed(lambda: model.rollout(ctx, hist, ego))
        ar_total = timed(lambda: model.rollout_token_by_token(ctx, hist, ego))
    med = statistics.median
    par_ms, ar_ms = med(par), med(ar)
    rows = [("prefill (shared)", 1, med(prefill_ms), min(prefill_ms)),
            ("decode: parallel frames", f - 1, par_ms, min(par)),
            ("decode: token-by-token", f * model.dyn_tokens - 1, ar_ms, min(ar)),
            ("plan (shared)", 1, med(plan_ms), min(plan_ms)),
            ("total: parallel", f + 1, med(par_total), min(par_total)),
            ("total: token-by-token", f * model.dyn_tokens + 1, med(ar_total), min(ar_total))]
    print(f"decode speed: preset {cfg.preset}, F={f} frames x Ld={model.dyn_tokens} tokens, batch {b}, "
          f"{args.device} ({platform.processor() or platform.machine()}), {args.threads} thread(s), "
          f"median of {args.repeats}")
    print(f"{'phase':<26}{'forward passes':>15}{'median ms':>11}{'min ms':>9}")
    for name, passes, m_ms, min_ms in rows:
        print(f"{name:<26}{passes:>15}{m_ms:>11.2f}{min_ms:>9.2f}")
    speedup_total = med(ar_total) / med(par_total)
    print(f"decode speed-up {ar_ms / par_ms:.1f}x (the F frames after the shared prefill); "
          f"end to end {speedup_total:.1f}x (prefill and plan included)")
    print(json.dumps({"parallel_ms": round(par_ms, 3), "ar_ms": round(ar_ms, 3), "speedup": round(ar_ms / par_ms, 2),
                      "parallel_total_ms": round(med(par_total), 3), "ar_total_ms": round(med(ar_total), 3),
                      "speedup_total": round(speedup_total, 2), "prefill_ms": round(med(prefill_ms), 3),
                      "forecast_frames": f, "dyn_tokens": model.dyn_tokens, "batch": b, "device": args.device,
                      "threads": args.threads, "preset": cfg.preset}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
