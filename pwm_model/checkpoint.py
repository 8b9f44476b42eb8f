"""Checkpoint directories: ``config.yaml`` + one ``<module>.safetensors`` per module + ``metrics.json``.

    save_checkpoint("out/tok", cfg, {"tokenizer": tok}, {"tokenizer_train": {...}})
    cfg, states = load_checkpoint("out/tok", ["tokenizer"])
    cfg, mods = load_modules("out/tok", {"tokenizer": lambda c: Tokenizer(c.tokenizer)})

Every file is written atomically (temporary name + rename), so an interrupted save never leaves a half-written
file; other files in the directory (another module's weights, COMMANDS.md) are left alone. Each safetensors file
also carries the config YAML in its metadata. Loading checks that a module's tensor names and shapes match the
module the config builds and raises ``ModelError`` with one sentence for a missing, corrupt or mismatched file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pwm_model.config import PwmConfig, dump_yaml, load_yaml, save_yaml
from pwm_model.errors import ConfigError, ModelError
from pwm_model.io_utils import atomic_path, read_json_document, write_json_atomic

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
FORMAT = "pwm-checkpoint"
FORMAT_VERSION = "1"


def module_file(directory: str | os.PathLike[str], name: str) -> Path:
    return Path(directory) / f"{name}.safetensors"


def save_checkpoint(directory: str | os.PathLike[str], cfg: PwmConfig,
                    modules: Mapping[str, nn.Module | Mapping[str, torch.Tensor]],
                    metrics: Mapping[str, Any] | None = None, *, dtype: torch.dtype | None = None) -> Path:
    """Write ``config.yaml``, ``<name>.safetensors`` for each module and merge ``metrics`` into ``metrics.json``.

    ``dtype`` (e.g. ``torch.float16``) stores floating tensors at that precision (loading casts them back).
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": dump_yaml(cfg)}
    for name, mod in modules.items():
        state = mod.state_dict() if isinstance(mod, nn.Module) else dict(mod)
        tensors = {}
        for k, v in state.items():
            v = v.detach().to("cpu")
            if dtype is not None and v.is_floating_point():
                v = v.to(dtype)
            tensors[k] = v.contiguous()
        with atomic_path(module_file(directory, name)) as tmp:
            save_file(tensors, str(tmp), metadata={**meta, "module": name})
    save_yaml(cfg, directory / CONFIG_FILE)
    if metrics is not None:
        write_json_atomic(directory / METRICS_FILE, {**load_metrics(directory), **dict(metrics)})
    return directory


def load_metrics(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """``metrics.json`` of a checkpoint ({} when absent)."""
    path = Path(directory) / METRICS_FILE
    if not path.is_file():
        return {}
    return read_json_document(path, what="checkpoint metrics file", error=ModelError)


def load_config(directory: str | os.PathLike[str]) -> PwmConfig:
    """The config a checkpoint was trained with."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelError(f"checkpoint directory {directory} does not exist")
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise ModelError(f"{directory} is not a checkpoint: it has no {CONFIG_FILE}")
    try:
        return load_yaml(path)
    except ConfigError as exc:
        raise ModelError(f"checkpoint config {path} is unusable: {exc}") from None


def load_state_dict(directory: str | os.PathLike[str], name: str) -> dict[str, torch.Tensor]:
    """The tensors of ``<name>.safetensors`` (on the CPU)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = module_file(directory, name)
    if not path.is_file():
        raise ModelError(f"checkpoint {Path(directory)} has no {path.name}")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"checkpoint file {path} is corrupt or truncated ({str(exc).splitlines()[0]})") from None


def check_state_dict(state: Mapping[str, torch.Tensor], module: nn.Module, where: str) -> None:
    """Raise ModelError when ``state`` does not hold exactly the tensors (names and shapes) of ``module``."""
    want = module.state_dict()
    missing = [k for k in want if k not in state]
    extra = [k for k in state if k not in want]
    if missing:
        raise ModelError(f"{where} does not match its config: {len(missing)} tensor(s) are missing, "
                         f"e.g. {missing[0]!r}")
    if extra:
        raise ModelError(f"{where} does not match its config: it has {len(extra)} unexpected tensor(s), "
                         f"e.g. {extra[0]!r}")
    for k, v in want.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise ModelError(f"{where} does not match its config: tensor {k!r} has shape {tuple(state[k].shape)}, "
                             f"the config needs {tuple(v.shape)}")
        if state[k].is_floating_point() != v.is_floating_point():
            raise ModelError(f"{where} does not match its config: tensor {k!r} has dtype {state[k].dtype}")
        if state[k].is_floating_point() and not torch.isfinite(state[k]).all():
            raise ModelError(f"{where} is corrupt: tensor {k!r} holds NaN or infinite values")


def load_checkpoint(directory: str | os.PathLike[str], names: Iterable[str] | None = None
                    ) -> tuple[PwmConfig, dict[str, dict[str, torch.Tensor]]]:
    """The config and the raw state dicts of the named modules (default: every ``*.safetensors`` present)."""
    cfg = load_config(directory)
    if names is None:
        names = sorted(p.stem for p in Path(directory).glob("*.safetensors"))
    return cfg, {n: load_state_dict(directory, n) for n in names}


def load_modules(directory: str | os.PathLike[str], builders: Mapping[str, Callable[[PwmConfig], nn.Module]],
                 cfg: PwmConfig | None = None) -> tuple[PwmConfig, dict[str, nn.Module]]:
    """Build each module from the checkpoint's config (or ``cfg``), check its tensors and load them."""
    cfg = cfg if cfg is not None else load_config(directory)
    out = {}
    for name, build in builders.items():
        module = build(cfg)
        state = load_state_dict(directory, name)
        check_state_dict(state, module, f"checkpoint file {module_file(directory, name)}")
        module.load_state_dict({k: v.to(module.state_dict()[k].dtype) for k, v in state.items()})
        out[name] = module
    return cfg, out
