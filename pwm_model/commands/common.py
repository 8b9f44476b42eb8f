"""Argument helpers shared by the sub-commands."""

from __future__ import annotations

import argparse

from pwm_model.config import PRESET_NAMES, PwmConfig, apply_overrides, load_yaml, preset
from pwm_model.errors import ConfigError

# --config files are merged over their preset, not over a checkpoint: with --init (or --resume) every value the file
# does not set would fall back to the preset's, architecture included, and the checkpoint's weights would not fit
INIT_WITH_CONFIG = ("--init takes its config from the checkpoint, and a --config file would reset every value it does "
                    "not name to its preset's: change single values with --set KEY=VALUE instead (repeatable)")


def add_config_arguments(parser: argparse.ArgumentParser, *, default_preset: str = "tiny") -> None:
    """``--preset``, ``--config`` and repeatable ``--set a.b=value``."""
    parser.add_argument("--preset", choices=sorted(PRESET_NAMES), default=default_preset,
                        help=f"model size preset (default: {default_preset})")
    parser.add_argument("--config", metavar="YAML", help="config file (overrides the preset)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config value, e.g. --set world_model.forecast_frames=0 (repeatable)")


def config_from_args(args: argparse.Namespace) -> PwmConfig:
    """The config the arguments describe, validated: ``--init``'s checkpoint config (where the command has one),
    else ``--config`` or ``--preset``; then every ``--set``."""
    init = getattr(args, "init", None)
    if init:
        from pwm_model.checkpoint import load_config

        if getattr(args, "config", None):
            raise ConfigError(INIT_WITH_CONFIG)
        return apply_overrides(load_config(init), args.overrides or [])
    cfg = load_yaml(args.config) if getattr(args, "config", None) else preset(args.preset)
    return apply_overrides(cfg, args.overrides or [])
