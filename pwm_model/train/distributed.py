"""Multi-process training under ``torchrun``: process group, device, DDP / FSDP wrapping and collective helpers.

``torchrun`` starts one process per device and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; ``init_from_env`` reads them. A plain ``pwm train`` is one process (a world of one): it creates no
process group and every helper here is then a no-op, so one code path serves one and many processes.

- Backend: NCCL when the device is CUDA (each process takes ``cuda:LOCAL_RANK``), gloo on the CPU.
- ``train.strategy`` picks how the processes share the model:
  ``ddp`` replicates it and averages the gradients during backward (skipped on the gradient-accumulation
  micro-steps before the last, ``no_sync``); ``fsdp`` (FSDP2 ``fully_shard`` on every transformer block, then the
  root) shards parameters, gradients and AdamW state across the processes, as the ``paper`` preset needs
  (1.26B parameters: about 20 GB of fp32 weights, gradients and AdamW moments per replica otherwise).
- Every rank's loss is the mean over its share of the global batch and the gradient is averaged over the ranks, so
  a run of N processes with ``train.batch_size`` B follows the run of one process with batch N * B (up to float
  rounding) whenever every sample has the same number of supervised positions (always for the video loss; for the
  waypoint loss when all waypoints are labelled).
- Checkpoints hold full (unsharded) tensors whatever the strategy: ``full_model_state`` and
  ``full_optimizer_state`` gather them on rank 0. Under FSDP they are collectives: every rank must call them.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from pwm_model.errors import ConfigError, ModelError

STRATEGIES = ("ddp", "fsdp")
# collectives wait this long before failing: rank 0 may spend a while building the token cache alone first
TIMEOUT_MIN = 120


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands: its rank among ``world_size`` processes and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None  # None: one process, no process group

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that prints, logs and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend is not None


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer") from None


def env_ranks() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) without it."""
    rank, world, local = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ConfigError(f"RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local} do not describe a valid process "
                          "(start multi-process runs with torchrun)")
    return rank, world, local


def select_device(device: str, local_rank: int = 0, world_size: int = 1) -> torch.device:
    """The torch device of this process: ``cuda`` becomes ``cuda:LOCAL_RANK``; anything else is taken as given."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"--device {device!r} is not a torch device (cpu, cuda, cuda:1, ...)") from None
    if dev.type != "cuda":
        return dev
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {device} needs CUDA, but no CUDA device is visible")
    if dev.index is not None and world_size > 1:
        raise ConfigError(f"--device {device} would put every process on one GPU: under torchrun name --device cuda "
                          "(each process takes cuda:LOCAL_RANK; choose GPUs with CUDA_VISIBLE_DEVICES)")
    count = torch.cuda.device_count()
    index = local_rank if dev.index is None else dev.index
    if index >= count:
        raise ConfigError(f"this process needs cuda:{index} but {count} CUDA device(s) are visible: start at most "
                          f"{count} processes per node (torchrun --nproc-per-node)")
    return torch.device("cuda", index)


def init_from_env(device: str = "cpu") -> DistEnv:
    """Join the process group torchrun describes (nothing to join for one process) and pick this rank's device."""
    rank, world, local = env_ranks()
    dev = select_device(device, local, world)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        # TF32 matmuls for the fp32 parts, as the paper's training (bf16 autocast + TF32)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if world == 1:
        return DistEnv(device=dev)
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise ConfigError(f"WORLD_SIZE is {world} but {name} is not set: start multi-process runs with torchrun")
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=TIMEOUT_MIN),
                                device_id=dev if dev.type == "cuda" else None)
    return DistEnv(rank, world, local, dev, backend)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def teardown(wait: bool = True) -> None:
    """Leave the process group (a no-op for one process): after every rank got here when ``wait``; at once
    otherwise (after an error, when the other ranks may never arrive: torchrun stops them)."""
    if dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


@contextlib.contextmanager
def rank0_first(env: DistEnv) -> Iterator[None]:
    """Rank 0 runs the block first (e.g. builds a cache); the others run it after, when it can be read."""
    if not env.is_main:
        barrier()
    yield
    if env.is_main:
        barrier()


# ---------------------------------------------------------------------------------------------------------------
# wrapping

def _shard_units(model: nn.Module) -> list[nn.Module]:
    """The submodules FSDP shards one by one (each gathered just before use): the transformer blocks."""
    blocks = getattr(getattr(model, "transformer", None), "blocks", None)
    return list(blocks) if blocks is not None else []


def wrap_model(model: nn.Module, env: DistEnv, strategy: str = "ddp", *, find_unused: bool = True) -> nn.Module:
    """The module the training forward goes through.

    One process: ``model`` itself. ``ddp``: a ``DistributedDataParallel`` around ``model`` (parameters shared
    with it, so an optimizer over ``model.parameters()`` serves both). ``fsdp``: ``model`` itself, sharded in place
    (its parameters become DTensor shards: build the optimizer after this call). Load weights before wrapping.
    ``find_unused``: some parameters may stay out of a step's graph (DDP then looks for them after every forward).
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown training strategy {strategy!r}: choose {' or '.join(STRATEGIES)}")
    if not env.distributed:
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        # parameters unused on every rank (the waypoint head in pretraining) keep no gradient, so AdamW skips them
        # exactly as in a one-process run. The buffers are constants: no broadcast before every forward.
        return DistributedDataParallel(model, device_ids=[env.device.index] if env.device.type == "cuda" else None,
                                       find_unused_parameters=find_unused, forward_sync_buffers=False)
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    # the model returns views (e.g. logits.view(...)) that are only read, never changed in place
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
    for unit in _shard_units(model):
        fully_shard(unit)
    fully_shard(model)
    if hasattr(model, "rollout"):
        register_fsdp_forward_method(model, "rollout")  # the rollout gathers the parameters as forward does
    return model


def is_sharded(module: nn.Module) -> bool:
    """True for a module FSDP shards (its state dicts need every rank: collectives)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def grad_sync(wrapped: nn.Module, sync: bool) -> contextlib.AbstractContextManager[Any]:
    """Context for one gradient-accumulation micro-step: gradients are averaged over the ranks only when ``sync``
    (the last micro-step); the earlier ones accumulate locally."""
    if sync:
        return contextlib.nullcontext()
    no_sync = getattr(wrapped, "no_sync", None)  # DDP
    if no_sync is not None:
        return no_sync()
    if is_sharded(wrapped):
        return _fsdp_no_sync(wrapped)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _fsdp_no_sync(module: Any) -> Iterator[None]:
    module.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        module.set_requires_gradient_sync(True)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bfloat16 for ``precision`` bf16 on a CUDA device or a CPU with bf16 instructions, None (fp32) otherwise."""
    if precision != "bf16":
        return None
    if device.type == "cuda":
        return torch.bfloat16
    return torch.bfloat16 if device.type == "cpu" and cpu_has_bf16() else None


def cpu_has_bf16() -> bool:
    """Whether this CPU reports native bf16 matrix instructions (AMX or AVX-512 BF16 in /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"amx_bf16", "avx512_bf16"})
    except OSError:
        pass
    return False


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` to ``dtype`` on ``device``'s type (nothing when ``dtype`` is None)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# ---------------------------------------------------------------------------------------------------------------
# collectives

def all_reduce_mean(values: Mapping[str, float], device: torch.device | str = "cpu") -> dict[str, float]:
    """The mean of each value over the ranks (every rank passes the same keys); the values as-is for one process."""
    if not dist.is_initialized() or dist.get_world_size() == 1 or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))


def broadcast_flag(value: bool, device: torch.device | str = "cpu") -> bool:
    """Rank 0's ``value`` on every rank (``value`` itself for one process)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return value
    t = torch.tensor([1 if value else 0], dtype=torch.int32, device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over the ranks (in place; returned for chaining)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t


def clip_grad_norm(model: nn.Module, max_norm: float) -> float:
    """Clip the global gradient norm (over every rank's shard under FSDP) to ``max_norm``; return it before clipping."""
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    full = getattr(norm, "full_tensor", None)  # a DTensor under FSDP
    return float(full() if full is not None else norm)


# ---------------------------------------------------------------------------------------------------------------
# checkpoints: full tensors whatever the strategy

def _full_options() -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's full state dict (on rank 0; other ranks get {} under FSDP). Every rank calls it under FSDP."""
    if not is_sharded(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_full_options())


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's state dict: ``optimizer.state_dict()``, or under FSDP the full one keyed by parameter name
    (on rank 0; a collective)."""
    if not is_sharded(model):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return {"fsdp_full": get_optimizer_state_dict(model, optimizer, options=_full_options())}


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: Mapping[str, Any]) -> None:
    """Load what ``full_optimizer_state`` returned (every rank passes the whole state under FSDP)."""
    sharded, saved_sharded = is_sharded(model), "fsdp_full" in state
    if saved_sharded and not sharded:
        raise ModelError("the saved optimizer state is FSDP's: resume under torchrun with train.strategy=fsdp")
    if sharded and not saved_sharded:
        raise ModelError("the saved optimizer state is not FSDP's: resume with train.strategy=ddp (or one process)")
    if not sharded:
        optimizer.load_state_dict(dict(state))
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    # strict=False: parameters that never had a gradient (the waypoint head in pretraining) have no state yet
    set_optimizer_state_dict(model, optimizer, state["fsdp_full"],
                             options=StateDictOptions(full_state_dict=True, strict=False))
