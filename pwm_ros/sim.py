"""``pwm_sim``: the closed loop of ``pwm sim`` through ROS 2: the synthetic world drives a planner node.

    pwm_sim --model out/models/pwm-tiny-onnx --start-node --scenarios 10 --out out/sim_ros
    pwm_node --ros-args -p model_dir:=MODEL -p use_sim_time:=true -p autostart:=true -p planning_rate_hz:=100.0 &
    pwm_sim --model MODEL --scenarios 10                   # drives the node started in the other shell

The world publishes the rendered camera (raw, or JPEG with --compressed), /odom, the route command and /clock
(the node runs with use_sim_time) and drives the nav_msgs/Path in base_link the node answers with: in lock-step
simulated time by default (each tick waits for its plan, so the score does not depend on CPU speed), or --realtime
(the world runs on while the node thinks; late plans are counted). Any ROS 2 planner that publishes a Path in
base_link can be driven and scored so (--node names it). The table, metrics.json and the last JSON line are those
of ``pwm sim``; the line adds the transport's figures (mode, plans, latency, late plans).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pwm_model.commands.sim import add_drive_arguments, check_drive_args, parse_idm
from pwm_model.errors import ConfigError, ModelError, PwmError

NODE_WAIT_S = 120.0  # --start-node: loading and warming up the model may take this long on a small machine
BASELINES = ("expert", "cv", "ctra")


def build_parser() -> argparse.ArgumentParser:
    from pwm_model.commands.common import add_config_arguments
    from pwm_ros.sim_bridge import BridgeTopics

    p = argparse.ArgumentParser(prog="pwm_sim", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--model", metavar="MODEL_DIR",
                   help="exported model directory: the world, camera and waypoints it was trained for "
                        "(and the model --start-node runs); without it, --preset gives them")
    p.add_argument("--start-node", action="store_true",
                   help="start pwm_node with --model (use_sim_time, autostart) for the run, and stop it after")
    p.add_argument("--name", help="the planner's name in the table (default: the model's, or 'ROS 2 planner')")
    p.add_argument("--planner", action="append", default=[], choices=BASELINES,
                   help="a baseline to drive in-process beside it (repeatable): expert, cv, ctra")
    add_drive_arguments(p)
    p.add_argument("--realtime", action="store_true",
                   help="let the world run on at --rate times real time while the node thinks (late plans are "
                        "counted); default: lock-step simulated time")
    p.add_argument("--rate", type=float, default=1.0, help="--realtime speed factor (default 1.0)")
    p.add_argument("--compressed", action="store_true",
                   help="publish sensor_msgs/CompressedImage (JPEG) on <camera-topic>/compressed")
    p.add_argument("--timeout-s", type=float, default=10.0,
                   help="lock-step: how long a tick waits for its plan before the run fails (default 10)")
    p.add_argument("--wait-s", type=float, default=None,
                   help="how long to wait for the planner to appear (default 30; with --start-node "
                        f"{NODE_WAIT_S:g})")
    defaults = BridgeTopics()
    p.add_argument("--node", default=defaults.node, help=f"the planner node (default {defaults.node})")
    p.add_argument("--trajectory-topic", default="", help="its nav_msgs/Path (default <node>/trajectory)")
    p.add_argument("--camera-topic", default=defaults.camera, help=f"camera topic (default {defaults.camera})")
    p.add_argument("--odom-topic", default=defaults.odom, help=f"odometry topic (default {defaults.odom})")
    p.add_argument("--command-topic", default=defaults.command,
                   help=f"route command topic, std_msgs/UInt8 (default {defaults.command})")
    p.add_argument("--base-frame", default="base_link", help="frame_id the plans must have (default base_link)")
    p.add_argument("--out", metavar="DIR", help="write metrics.json, drives.csv, report.html and frames/ here")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    add_config_arguments(p)
    return p


def check_args(args: argparse.Namespace) -> None:
    import math

    check_drive_args(args)
    for name in ("timeout_s", "rate") + (("wait_s",) if args.wait_s is not None else ()):
        value = getattr(args, name)
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive number, got {value!r}")
    if args.model and not (Path(args.model) / "manifest.json").is_file():
        raise ConfigError(f"--model {args.model} is not an exported model directory (no manifest.json): export a "
                          "checkpoint with `python export/build_engine.py` first")
    if args.start_node and not args.model:
        raise ConfigError("--start-node needs --model MODEL_DIR (the model the node runs)")


def _node_params(path: Path, args: argparse.Namespace) -> Path:
    """The started node's --params-file: the model, simulated time, configure + activate, the bridge's topics."""
    from pwm_model.io_utils import write_text_atomic

    values: dict[str, Any] = {
        "model_dir": str(Path(args.model).resolve()), "use_sim_time": True, "autostart": True,
        "camera_topic": args.camera_topic, "use_compressed": bool(args.compressed), "odom_topic": args.odom_topic,
        "command_topic": args.command_topic, "base_frame": args.base_frame,
        "planning_rate_hz": 100.0,  # the world paces the frames: the node plans each as it comes
    }
    body = "".join(f"    {k}: {json.dumps(v)}\n" for k, v in values.items())
    write_text_atomic(path, f"/**:\n  ros__parameters:\n{body}")
    return path


def _start_node(args: argparse.Namespace, tmp: Path) -> Any:
    """``pwm_node`` as a subprocess in this process's ROS environment (a domain of its own if none is set)."""
    from pwm_model.commands.demo import Process, ros_env

    env = ros_env()
    for key in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "RMW_IMPLEMENTATION"):
        os.environ[key] = env[key]  # the bridge below joins the node's domain
    cmd = [sys.executable, "-m", "pwm_ros.node", "--ros-args", "--params-file", str(_node_params(tmp / "node.yaml",
                                                                                                  args))]
    name = args.node.strip("/")
    if "/" in name:
        raise ConfigError(f"--node {args.node} with --start-node must be a plain node name (no namespace)")
    if name != "pwm_node":
        cmd += ["-r", f"__node:={name}"]
    return Process(cmd, tmp / "pwm_node.log", env)


def _node_watch(proc: Any, model: str) -> Callable[[], None]:
    def watch() -> None:
        failed = next((ln for ln in proc.lines if "configure failed" in ln), None)
        if failed:
            raise ModelError(f"pwm_node could not load {model}: {failed.split('configure failed: ')[-1]}")
        if not proc.alive():
            raise PwmError(f"pwm_node exited with status {proc.proc.returncode}: {proc.tail(3) or 'no output'}")
    return watch


def run(args: argparse.Namespace, ros_args: list[str]) -> int:
    import rclpy

    from pwm_model.commands.common import config_from_args
    from pwm_model.sim.planners import KinematicPlanner
    from pwm_model.sim.suite import format_suite, run_suite, save_suite, summary_line
    from pwm_ros.sim_bridge import BridgeTopics, RosPlanner

    check_args(args)
    idm = parse_idm(args.idm)
    if args.model:
        from pwm_model.runtime.manifest import load_manifest

        cfg = load_manifest(args.model).config
    else:
        cfg = config_from_args(args)
    name = args.name or (f"{Path(args.model).name} (ROS 2)" if args.model else "ROS 2 planner")
    topics = BridgeTopics(camera=args.camera_topic, odom=args.odom_topic, command=args.command_topic,
                          node=args.node, trajectory=args.trajectory_topic)
    wait_s = args.wait_s if args.wait_s is not None else (NODE_WAIT_S if args.start_node else 30.0)
    with tempfile.TemporaryDirectory(prefix="pwm_sim_") as tmp:
        node = _start_node(args, Path(tmp)) if args.start_node else None
        rclpy.init(args=["pwm_sim", *ros_args])
        bridge: RosPlanner | None = None
        try:
            bridge = RosPlanner(cfg, name=name, topics=topics, compressed=args.compressed, realtime=args.realtime,
                                rate=args.rate, timeout_s=args.timeout_s, wait_s=wait_s, base_frame=args.base_frame,
                                watch=_node_watch(node, args.model) if node is not None else None)
            planners: dict[str, Any] = {name: (lambda: bridge)}
            for baseline in args.planner:
                label = "expert" if baseline == "expert" else ("constant velocity" if baseline == "cv" else "CTRA")
                planners[label] = None if baseline == "expert" else (lambda k=baseline: KinematicPlanner(k, cfg))
            res = run_suite(planners, list(range(args.seed, args.seed + args.scenarios)), cfg, seconds=args.seconds,
                            reactive=args.reactive, progress=not args.quiet, agent_idm=idm)
        finally:
            if bridge is not None:
                bridge.close()
            if rclpy.ok():
                rclpy.shutdown()
            if node is not None:
                node.stop()
    ros = bridge.report()
    print(format_suite(res))
    print(f"ROS 2 ({ros['mode']}): {ros['plans']} plans for {ros['ticks']} ticks, latency p50 "
          f"{ros['latency_p50_ms']} ms, max {ros['latency_max_ms']} ms, {ros['resent_frames']} frames sent again"
          + (f", {ros['late_plans']} late plans, {ros['ticks_without_plan']} ticks without their plan"
             if args.realtime else ""), flush=True)
    if args.out:
        from pwm_model.geometry import PinholeCamera

        save_suite(res, args.out, extra={"ros": ros}, camera=PinholeCamera.from_config(cfg.camera))
        print(f"wrote {args.out}/metrics.json", flush=True)
    print(json.dumps({**summary_line(res, name), "transport": "ros2", **ros}))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``pwm_sim``: the console script; errors are one sentence on stderr and exit status 2."""
    argv = sys.argv[1:] if argv is None else argv
    ros_args = argv[argv.index("--ros-args"):] if "--ros-args" in argv else []
    args = build_parser().parse_args(argv[: len(argv) - len(ros_args)])
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        return run(args, ros_args)
    except PwmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
