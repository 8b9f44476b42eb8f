"""The ``pwm`` command: one entry point, one module per sub-command under ``pwm_model/commands``.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int`` and imports
nothing heavy (torch, onnxruntime) at module level, so ``pwm --help`` stays fast. Problems a user can fix raise
``PwmError``: the command prints ``error: <sentence>`` and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading

from pwm_model import __version__
from pwm_model.errors import PwmError

# sub-command name -> module under pwm_model.commands (in the order `pwm --help` lists them)
COMMANDS: dict[str, str] = {
    "gen-data": "gen_data",
    "index": "index",
    "train-tokenizer": "train_tokenizer",
    "eval-tokenizer": "eval_tokenizer",
    "train": "train",
    "eval": "evaluate",
    "eval-bag": "eval_bag",
    "check-onnx": "check_onnx",
    "check-parity": "check_parity",
    "convert": "convert",
    "sim": "sim",
    "demo": "demo",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pwm",
        description="Policy World Model: forecast the front camera as tokens, then plan the ego trajectory.",
        epilog="Run `pwm <command> --help` for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"pwm {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(f"pwm_model.commands.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"pwm_model.commands.{module_name}":
                raise
            continue  # command not part of this installation
        p = sub.add_parser(name, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is: every cleanup that Ctrl-C runs (partial files removed) runs for it."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        return int(args._run(args) or 0)
    except PwmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Terminated:
        print("terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
