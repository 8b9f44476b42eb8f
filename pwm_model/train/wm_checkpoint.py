"""World-model checkpoint directories (through ``checkpoint.py``): weights, config, tokenizer copy, provenance.

A world-model checkpoint directory holds ``config.yaml``, ``world_model.safetensors``, a copy of the
``tokenizer.safetensors`` its tokens came from (so evaluation can decode forecasts), ``metrics.json``,
``COMMANDS.md`` (every command that led to it, earlier stages first) and, while training, ``train_state.pt``.
"""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

import torch

from pwm_model.config import PwmConfig
from pwm_model.errors import ModelError
from pwm_model.io_utils import atomic_path, write_text_atomic
from pwm_model.train.checkpoint import check_state_dict, load_config, load_state_dict, module_file, save_checkpoint
from pwm_model.world_model.model import PolicyWorldModel

COMMANDS_FILE = "COMMANDS.md"


def load_world_model(directory: str | os.PathLike[str], cfg: PwmConfig | None = None, *,
                     device: str | torch.device = "cpu") -> tuple[PolicyWorldModel, PwmConfig]:
    """The world model of a checkpoint (its config, or ``cfg`` with the same tensor shapes), in eval mode."""
    cfg = cfg if cfg is not None else load_config(directory)
    model = PolicyWorldModel(cfg)
    init_from(model, directory)
    return model.to(device).eval(), cfg


def init_from(model: PolicyWorldModel, directory: str | os.PathLike[str]) -> None:
    """Load ``world_model.safetensors`` of ``directory`` into ``model`` (names and shapes must match)."""
    state = load_state_dict(directory, "world_model")
    check_state_dict(state, model, f"checkpoint file {module_file(directory, 'world_model')}")
    own = model.state_dict()
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def copy_tokenizer(tokenizer_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> None:
    """Copy ``tokenizer.safetensors`` into the world-model checkpoint (atomically; skipped when identical)."""
    src, dst = module_file(tokenizer_dir, "tokenizer"), module_file(out_dir, "tokenizer")
    if not src.is_file():
        raise ModelError(f"{tokenizer_dir} has no tokenizer.safetensors (train one with `pwm train-tokenizer`)")
    if dst.exists() and dst.resolve() == src.resolve():
        return
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def save_world_model(directory: str | os.PathLike[str], cfg: PwmConfig, model: PolicyWorldModel,
                     metrics: dict | None = None, dtype: torch.dtype | None = None) -> None:
    save_checkpoint(directory, cfg, {"world_model": model}, metrics, dtype=dtype)


def append_command(out_dir: str | os.PathLike[str], init_dir: str | os.PathLike[str] | None, title: str,
                   argv: list[str]) -> None:
    """Record the command line ``argv`` in ``COMMANDS.md`` (carrying over the --init checkpoint's history)."""
    out = Path(out_dir) / COMMANDS_FILE
    previous = ""
    if out.is_file():
        previous = out.read_text()
    elif init_dir is not None and (Path(init_dir) / COMMANDS_FILE).is_file():
        previous = (Path(init_dir) / COMMANDS_FILE).read_text()
    if not previous:
        previous = "# How this checkpoint was made\n"
    write_text_atomic(out, previous.rstrip("\n") + f"\n\n{title}:\n\n    {shlex.join(argv)}\n")
