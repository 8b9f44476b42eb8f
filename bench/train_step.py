"""Seconds per world-model fine-tuning step on the CPU: fp32 against bf16 autocast, 1 and 2 threads, side by side.

Each configuration builds the preset's world model and the real ``Trainer`` (the fine-tuning stage, planning from
the model's own rollout as the shipped recipe does), trains ``--warmup`` steps untimed, then times ``--steps``
steps. Token data are random codes of the preset's shapes (a step's cost does not depend on their values). bf16
runs the training forward under ``torch.autocast("cpu", torch.bfloat16)``; the loss-parity column is the relative
difference of one batch's loss from fp32's, same weights, same batch, printed under the table. The configurations
run one after another in one process; the table shows the machine's load beside each.

    .venv/bin/python bench/train_step.py                 # tiny preset, batch 16
    .venv/bin/python bench/train_step.py --steps 10 --batch 32

Prints a table, then one JSON line: ``fp32_1t_s``, ``fp32_2t_s``, ``bf16_1t_s``, ``bf16_2t_s`` (seconds per step),
``bf16_speedup_2t`` (fp32 / bf16 at 2 threads), ``bf16_loss_rel_diff``, ``cpu``, ``bf16_cpu_flags``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def bf16_flags() -> list[str]:
    """The CPU's bf16 instruction-set flags (amx_bf16, avx512_bf16) from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return sorted(f for f in line.split(":", 1)[1].split() if "bf16" in f)
    except OSError:
        pass
    return []


SHIPPED = Path(__file__).resolve().parents[1] / "models" / "pwm-tiny"


def make_trainer(preset_name: str, batch: int, overrides: list[str]):  # noqa: ANN201 - Trainer
    import torch

    from pwm_model.config import apply_overrides, preset
    from pwm_model.train.wm_data import WorldModelData
    from pwm_model.train.wm_trainer import Trainer
    from pwm_model.world_model.model import PolicyWorldModel

    cfg = apply_overrides(preset(preset_name), [f"train.batch_size={batch}", "train.grad_accum=1", *overrides])
    torch.manual_seed(0)
    model = PolicyWorldModel(cfg)
    if preset_name == "tiny" and not overrides and (SHIPPED / "world_model.safetensors").is_file():
        from pwm_model.world_model.checkpoint import init_from

        init_from(model, SHIPPED)  # trained weights: the loss parity is then that of a real model
    n, tk, h, f, k = 4 * batch, cfg.tokenizer, cfg.data.history_frames, cfg.data.future_frames, cfg.data.num_waypoints
    g = torch.Generator().manual_seed(0)
    data = WorldModelData(
        ctx_tokens=torch.randint(0, tk.codebook_size, (n, tk.ctx_tokens), generator=g),
        dyn_tokens=torch.randint(0, tk.codebook_size, (n, h + f, tk.dyn_tokens), generator=g),
        ego=torch.tensor([[8.0, 0.3, 0.0, 1.0, 0.0, 0.05]]).repeat(n, 1), ego_valid=torch.ones(n, dtype=torch.bool),
        waypoints=torch.randn(n, k, 3, generator=g), waypoints_valid=torch.ones(n, k, dtype=torch.bool))
    return Trainer(cfg, model, data, "finetune", steps=1000, plan_on_rollout=cfg.world_model.plan_on_rollout,
                   log=lambda text: None)


def time_steps(trainer, dtype, threads: int, warmup: int, steps: int) -> float:  # noqa: ANN001
    import torch

    torch.set_num_threads(threads)
    trainer.autocast_dtype = dtype
    for _ in range(warmup):
        trainer.train_step()
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    return (time.perf_counter() - t0) / steps


def loss_parity(preset_name: str, batch: int, overrides: list[str]) -> float:
    """|loss_bf16 - loss_fp32| / loss_fp32 on one batch, same weights (the shipped ones for the tiny preset), on
    real token clips of the shipped model's held-out store when ``out/wm/store_eval`` exists."""
    import torch

    trainer = make_trainer(preset_name, batch, overrides)
    b = trainer.data.batch(trainer.batch_indices(0, 0))
    store = Path(__file__).resolve().parents[1] / "out" / "wm" / "store_eval"
    if trainer.model.cfg.preset == "tiny" and (store / "index.json").is_file():
        from pwm_model.data.tokens import load_labels, token_cache
        from pwm_model.train.wm_data import WorldModelData

        data = WorldModelData.from_arrays(token_cache(store, SHIPPED, trainer.model.cfg, progress=False),
                                          load_labels(store))
        b = data.batch(torch.arange(0, len(data), max(1, len(data) // batch))[:batch])
    trainer.model.train()
    torch.manual_seed(1)
    with torch.no_grad():
        fp32 = float(trainer.losses(b, use_rollout=True)["loss"])
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = float(trainer.losses(b, use_rollout=True)["loss"])
    return abs(bf16 - fp32) / abs(fp32)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=5, help="timed steps per configuration (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from pwm_model.io_utils import cpu_name

    rows = {}
    for precision, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        for threads in (1, 2):
            trainer = make_trainer(args.preset, args.batch, args.overrides)
            load = os.getloadavg()[0]
            rows[f"{precision}_{threads}t_s"] = (time_steps(trainer, dtype, threads, args.warmup, args.steps), load)
    rel = loss_parity(args.preset, args.batch, args.overrides)
    print(f"{'configuration':<16}{'s / step':>10}{'load (1 min)':>14}")
    for name, (sec, load) in rows.items():
        print(f"{name[:-2]:<16}{sec:>10.3f}{load:>14.2f}")
    print(f"preset {args.preset}, batch {args.batch}, fine-tuning with the rollout; bf16 loss vs fp32: "
          f"{100 * rel:.2f} % relative; CPU {cpu_name()} ({', '.join(bf16_flags()) or 'no bf16 flags'})")
    out = {k: round(v[0], 4) for k, v in rows.items()}
    out.update(bf16_speedup_2t=round(rows["fp32_2t_s"][0] / rows["bf16_2t_s"][0], 3),
               bf16_loss_rel_diff=round(rel, 5), cpu=cpu_name(), bf16_cpu_flags=bf16_flags())
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
