"""A world of gloo processes on this machine that run ``pwm`` command lines in turn, as torchrun would start them.

Each process gets torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and runs
``pwm_model.cli.main`` for each command line, which joins the process group and leaves it at its end. Every command
line gets a port of its own: rank 0 serves a fresh rendezvous store there (one process start for several runs).
"""

from __future__ import annotations

import os
import socket
import time


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def run_rank(rank: int, world: int, ports: list[int], argvs: list[list[str]]) -> None:
    """The body of process ``rank`` (torch.multiprocessing passes ``rank`` first). Exits non-zero on failure."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      OMP_NUM_THREADS="1")
    from pwm_model.cli import main

    for argv, port in zip(argvs, ports):
        os.environ["MASTER_PORT"] = str(port)
        status = main(argv)
        if status != 0:
            raise SystemExit(status)


def run_world(argvs: list[list[str]], world: int = 2, timeout_s: float = 600.0) -> None:
    """Run the command lines in ``world`` spawned processes; raise when one fails or the world outlives
    ``timeout_s`` (its processes are then killed)."""
    import torch.multiprocessing as mp

    ctx = mp.start_processes(run_rank, args=(world, free_ports(len(argvs)), argvs), nprocs=world, join=False,
                             start_method="spawn")
    deadline = time.monotonic() + timeout_s
    while not ctx.join(timeout=2.0):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            raise TimeoutError(f"{world} training processes did not finish in {timeout_s:.0f} s")
