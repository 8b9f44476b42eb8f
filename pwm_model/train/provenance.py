"""What a world-model checkpoint directory carries besides its weights: the tokenizer copy and its provenance.

A world-model checkpoint directory holds ``config.yaml``, ``world_model.safetensors``, a copy of the
``tokenizer.safetensors`` its tokens came from (so evaluation can decode forecasts), ``metrics.json``,
``COMMANDS.md`` (every command that led to it, earlier stages first) and, while training, ``train_state.pt``.
"""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

from pwm_model.checkpoint import module_file
from pwm_model.errors import ModelError
from pwm_model.io_utils import atomic_path, write_text_atomic

COMMANDS_FILE = "COMMANDS.md"


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
