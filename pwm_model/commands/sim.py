"""``pwm sim``: closed-loop driving in the embedded world, scored as NAVSIM (EPDMS) and Bench2Drive score."""

from __future__ import annotations

import argparse

HELP = "drive planners closed-loop in the synthetic world and score them (EPDMS, driving score)"
DESCRIPTION = """Every planner drives the same held-out scenarios (seeds SEED .. SEED+N-1) in the embedded world:
the camera is rendered from the ego's simulated pose, the planner's plan is tracked (pure pursuit and a speed
controller on a kinematic bicycle) and replanned at the model's rate, the other vehicles react with IDM
(--non-reactive: they drive as if the ego were not there). Each drive is scored in 4 s windows with NAVSIM v2's
sub-scores against the world's own driver (the expert) on the same seed: EPDMS, and Bench2Drive's route completion
and driving score. Prints a table, then one JSON line for the first planner named (--model first, then --planner);
--out writes metrics.json, drives.csv, report.html (suite table, EPDMS per scenario, the worst infractions with
their frames, bird's-eye views), drive.mp4 (the first planner's first drive with its plan drawn in) and frames/.

  pwm sim --planner expert --planner ctra --scenarios 10
  pwm sim --model models/pwm-tiny-export --planner ctra --scenarios 50 --seconds 20 --out out/sim
  pwm sim --planner ego-mlp --train-data out/wm/store_train --scenarios 20
"""

DEFAULT_SEED = 200  # held-out seeds: below 1000, apart from the open-loop eval drives (1-16, 100-147)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pwm_model.commands.common import add_config_arguments
    from pwm_model.sim.planners import PLANNER_NAMES

    parser.add_argument("--model", action="append", default=[], metavar="MODEL_DIR",
                        help="an exported model directory to drive (repeatable)")
    parser.add_argument("--planner", action="append", default=[], choices=PLANNER_NAMES,
                        help="a baseline to drive (repeatable): expert (the world's own driver), cv, ctra, ego-mlp")
    parser.add_argument("--train-data", metavar="STORE", help="clip store the ego-mlp planner is fitted to")
    add_drive_arguments(parser)
    parser.add_argument("--out", metavar="DIR", help="write metrics.json, drives.csv and frames/ here")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    add_config_arguments(parser)


def add_drive_arguments(parser: argparse.ArgumentParser) -> None:
    """The suite's options, shared with ``pwm_sim``: --scenarios, --seconds, --seed, --(non-)reactive, --idm."""
    parser.add_argument("--scenarios", type=int, default=10, metavar="N", help="number of drives (default: 10)")
    parser.add_argument("--seconds", type=float, default=20.0, metavar="S", help="length of each drive (default: 20)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, metavar="X",
                        help=f"seed of the first drive (default: {DEFAULT_SEED}; held-out seeds are below 1000)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--reactive", dest="reactive", action="store_true", default=True,
                      help="other vehicles react to the ego with IDM (default)")
    mode.add_argument("--non-reactive", dest="reactive", action="store_false",
                      help="other vehicles drive as if the ego were not there")
    parser.add_argument("--idm", action="append", default=[], metavar="KEY=VALUE",
                        help="the other vehicles' IDM (repeatable): a_max_mps2, decel_mps2, headway_s, min_gap_m "
                             "(default 1.5, 2.5, 1.4, 3.0; target speeds are the scenario's)")


def check_drive_args(args: argparse.Namespace) -> None:
    """``ConfigError`` (one sentence) for bad suite options (``add_drive_arguments``); --idm is ``parse_idm``'s."""
    import math

    from pwm_model.data.synthetic.names import TRAIN_SEED_MIN
    from pwm_model.errors import ConfigError

    if args.scenarios < 1:
        raise ConfigError(f"--scenarios must be at least 1, got {args.scenarios}")
    if not math.isfinite(args.seconds) or not 6.0 <= args.seconds <= 600.0:
        raise ConfigError(f"--seconds must be in [6, 600] (a 1 s warm-up, then 4 s windows), got {args.seconds}")
    if args.seed < 0 or args.seed + args.scenarios > TRAIN_SEED_MIN:
        raise ConfigError(f"--seed {args.seed} with --scenarios {args.scenarios} reaches seeds the training drives use"
                          f" ({TRAIN_SEED_MIN} and up): closed-loop scenarios must be held out")


def _check_args(args: argparse.Namespace) -> None:
    from pathlib import Path

    from pwm_model.errors import ConfigError

    if not args.model and not args.planner:
        raise ConfigError("name what drives: --model MODEL_DIR and/or --planner expert|cv|ctra|ego-mlp")
    check_drive_args(args)
    if "ego-mlp" in args.planner and not args.train_data:
        raise ConfigError("--planner ego-mlp needs --train-data STORE (the clips it is fitted to)")
    for model in args.model:
        if not (Path(model) / "manifest.json").is_file():
            raise ConfigError(f"--model {model} is not an exported model directory (no manifest.json): export a "
                              "checkpoint with `python export/build_engine.py` first")


IDM_KEYS = {"a_max_mps2": "a_max", "decel_mps2": "b_comf", "headway_s": "headway_s", "min_gap_m": "s0_m"}


def parse_idm(items: list[str]) -> dict[str, float]:
    """``--idm KEY=VALUE`` items -> ``idm_accel`` keyword arguments (positive, finite)."""
    import math

    from pwm_model.errors import ConfigError

    out = {}
    for item in items:
        key, _, value = item.partition("=")
        if key not in IDM_KEYS:
            raise ConfigError(f"--idm {item!r}: the key must be one of {', '.join(IDM_KEYS)}")
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not math.isfinite(number) or number <= 0:
            raise ConfigError(f"--idm {item!r}: the value must be a positive number")
        out[IDM_KEYS[key]] = number
    return out


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from pwm_model.commands.common import config_from_args
    from pwm_model.sim.planners import EgoMLPPlanner, KinematicPlanner, RunnerPlanner
    from pwm_model.sim.suite import format_suite, run_suite, save_suite, summary_line

    _check_args(args)
    idm = parse_idm(args.idm)
    cfg = config_from_args(args)
    if args.model:  # the world, camera and waypoints as the (first) model was trained for
        from pwm_model.runtime.manifest import load_manifest

        cfg = load_manifest(args.model[0]).config
    planners: dict = {}
    for model in args.model:
        planners[Path(model).name] = (lambda m=model: RunnerPlanner(m))
    for name in args.planner:
        if name == "expert":
            planners["expert"] = None
        elif name == "ego-mlp":
            planners["ego-status MLP"] = (lambda: EgoMLPPlanner(args.train_data, cfg))
        else:
            planners["constant velocity" if name == "cv" else name.upper()] = (
                lambda k=name: KinematicPlanner(k, cfg))
    seeds = list(range(args.seed, args.seed + args.scenarios))
    res = run_suite(planners, seeds, cfg, seconds=args.seconds, reactive=args.reactive, progress=not args.quiet,
                    agent_idm=idm)
    print(format_suite(res))
    line = summary_line(res, next(iter(planners)))
    if args.out:
        from pwm_model.geometry import PinholeCamera

        save_suite(res, args.out, extra={"agent_idm": {k: idm[v] for k, v in IDM_KEYS.items() if v in idm}},
                   camera=PinholeCamera.from_config(cfg.camera))
        print(f"wrote {args.out}/metrics.json", flush=True)
    print(json.dumps(line))
    return 0
