"""Training throughput on the CPU: world-model samples per second with 1 and 2 gloo DDP processes.

Each run starts its processes with torch.multiprocessing (a torchrun world: RANK, WORLD_SIZE, MASTER_ADDR/PORT),
builds the preset's world model and the real ``Trainer`` behind ``wrap_model`` (DDP for 2 processes, nothing to
wrap for 1), trains ``--warmup`` steps untimed, then times ``--steps`` fine-tuning steps on rank 0 between two
barriers. Every process keeps ``--batch`` clips per step (weak scaling: 2 processes train twice the global batch)
and ``--threads`` torch threads (default: the machine's cores / 2, so that both processes of the 2-process run get
cores of their own: 1 thread each on 2 cores). Token data are random codes of the preset's shapes: the speed of a
step does not depend on their values. The wall clock suffers from the machine's other load, shown in the table.

    samples_per_s_N     = N * batch * grad_accum / seconds per step
    scaling_efficiency  = samples_per_s_2 / (2 * samples_per_s_1)

Prints a table, then one JSON line with ``samples_per_s_1``, ``samples_per_s_2`` and ``scaling_efficiency``.

    .venv/bin/python bench/train_throughput.py                       # tiny preset
    .venv/bin/python bench/train_throughput.py --steps 20 --batch 16 --set world_model.layers=6
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, args: argparse.Namespace, result_file: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    import torch

    from pwm_model.config import apply_overrides, preset
    from pwm_model.train.distributed import barrier, init_from_env, teardown, wrap_model
    from pwm_model.train.wm_trainer import Trainer
    from pwm_model.world_model.model import PolicyWorldModel

    torch.set_num_threads(args.threads)
    cfg = apply_overrides(preset(args.preset), [f"train.batch_size={args.batch}", *args.overrides])
    env = init_from_env("cpu")
    torch.manual_seed(cfg.train.seed)
    model = PolicyWorldModel(cfg)
    wrapped = wrap_model(model, env, "ddp", find_unused=False)  # fine-tuning uses every parameter
    steps = args.warmup + args.steps
    trainer = Trainer(cfg, model, _random_data(cfg, args.clips), "finetune", steps, rank=env.rank,
                      world_size=env.world_size, log=lambda s: None, wrapped=wrapped)
    for _ in range(args.warmup):
        trainer.train_step()
    barrier()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        trainer.train_step()
    barrier()
    seconds = time.perf_counter() - t0
    if env.is_main:
        per_step = seconds / args.steps
        samples = world * cfg.train.batch_size * cfg.train.grad_accum
        Path(result_file).write_text(json.dumps({"s_per_step": per_step, "samples_per_s": samples / per_step,
                                                 "global_batch": samples}))
    teardown()


def _random_data(cfg, n: int):
    import torch

    from pwm_model.train.wm_data import WorldModelData

    g = torch.Generator().manual_seed(0)
    c, tk, d = cfg.tokenizer.codebook_size, cfg.tokenizer, cfg.data
    ego = torch.cat([torch.rand(n, 2, generator=g) * 10, torch.nn.functional.one_hot(torch.arange(n) % 3, 3)], 1)
    return WorldModelData(torch.randint(0, c, (n, tk.ctx_tokens), generator=g),
                          torch.randint(0, c, (n, d.history_frames + d.future_frames, tk.dyn_tokens), generator=g),
                          ego.float(), torch.ones(n, dtype=torch.bool),
                          torch.cumsum(torch.rand(n, d.num_waypoints, 3, generator=g), 1),
                          torch.ones(n, d.num_waypoints, dtype=torch.bool))


def measure(world: int, args: argparse.Namespace) -> dict[str, float]:
    """Run ``world`` processes; return rank 0's timing."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        result = os.path.join(tmp, "result.json")
        mp.start_processes(_worker, args=(world, _free_port(), args, result), nprocs=world, join=True,
                           start_method="spawn")
        return json.loads(Path(result).read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--batch", type=int, default=8, help="clips per process and step (default: 8)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (default: 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default: 2)")
    parser.add_argument("--clips", type=int, default=64, help="random clips in the data set (default: 64)")
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                        help="torch threads per process (default: cores / 2)")
    args = parser.parse_args(argv)
    if min(args.batch, args.steps, args.clips, args.threads) < 1 or args.warmup < 0:
        print("error: --batch, --steps, --clips and --threads must be at least 1", file=sys.stderr)
        return 2
    # idle OpenMP threads sleep instead of spinning (inherited by the spawned processes)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    runs = {world: measure(world, args) for world in (1, 2)}
    s1, s2 = runs[1]["samples_per_s"], runs[2]["samples_per_s"]
    eff = s2 / (2 * s1)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"world-model training throughput, preset {args.preset}, fine-tuning steps, gloo DDP on the CPU")
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}, "
          f"load(1 min) {load:.1f}; {args.threads} torch thread(s) per process, {args.batch} clips per process "
          f"and step, {args.steps} timed steps after {args.warmup}")
    print(f"{'processes':>9} | {'global batch':>12} | {'s/step':>8} | {'samples/s':>9}")
    for world, r in runs.items():
        print(f"{world:>9} | {r['global_batch']:>12} | {r['s_per_step']:>8.3f} | {r['samples_per_s']:>9.2f}")
    print(f"scaling efficiency (samples/s of 2 / (2 x samples/s of 1)): {eff:.2f}")
    print(json.dumps({"preset": args.preset, "samples_per_s_1": round(s1, 3), "samples_per_s_2": round(s2, 3),
                      "scaling_efficiency": round(eff, 3), "threads_per_process": args.threads,
                      "batch_per_process": args.batch, "steps": args.steps, "cpus": os.cpu_count(),
                      "load_1min": round(load, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
