"""Benchmark of pwm_node as a camera sees it: a 30 Hz Image stream for 20 s into the node, plans measured back.

    .venv/bin/python bench/node.py [--model-dir DIR] [--seconds 20] [--camera-hz 30]

The node runs in its own process (``pwm_node``, autostart, ONNX Runtime on the CPU). This process publishes
camera frames stamped with the current time (reliable, as a driver does), receives ``~/trajectory`` and
``/diagnostics``, and samples the node's resident memory. Without ``--model-dir`` a tiny randomly initialised
model is exported first (needs torch). Prints a table, then one JSON line:
plan_rate_hz, latency_p50_ms / latency_p99_ms (camera stamp -> Path received here), dropped_frames (by the node
in the window), rss_growth_mb (node, from the start of the window, after warm-up, to its end) and overhead_frac
(the node's share of each cycle spent outside PolicyRunner.step). Targets: plan rate >= 8 Hz, p99 <= 2 x p50,
RSS growth <= 20 MB, overhead <= 0.10.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the packages of this checkout, as the other benches

from pwm_model.io_utils import cpu_name  # noqa: E402

TARGETS = {"plan_rate_hz": (">=", 8.0), "latency_p99_over_p50": ("<=", 2.0), "rss_growth_mb": ("<=", 20.0),
           "overhead_frac": ("<=", 0.10)}


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def make_tiny_model(out: Path) -> Path:
    """Export a tiny, randomly initialised model directory (the node's speed does not depend on training)."""
    import torch

    from pwm_model.checkpoint import save_checkpoint
    from pwm_model.config import preset
    from pwm_model.export.onnx import export_model
    from pwm_model.tokenizer.model import Tokenizer
    from pwm_model.world_model.model import PolicyWorldModel

    torch.manual_seed(0)
    torch.set_num_threads(2)
    cfg = preset("tiny")
    ckpt = out.parent / "checkpoint"
    save_checkpoint(ckpt, cfg, {"tokenizer": Tokenizer(cfg.tokenizer), "world_model": PolicyWorldModel(cfg)})
    print(f"exporting a tiny random model to {out} ...", flush=True)
    export_model(ckpt, out, verify_frames=1, echo=lambda *a: None)
    return out


def ros_env() -> None:
    """This benchmark's own DDS domain, discovery on this host only, Fast DDS (unless already set)."""
    os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")


def start_node(model_dir: Path, threads: int = 0, params: tuple[str, ...] = ("odom_topic:=''",),
               **popen: object) -> subprocess.Popen:
    """``pwm_node`` in its own process: autostart, ``model_dir``, ``intra_op_threads``, log level warn, and
    ``params`` (``name:=value``); ``popen`` goes to ``subprocess.Popen`` (default env: this process's)."""
    node_exe = Path(sys.executable).parent / "pwm_node"
    cmd = [str(node_exe)] if node_exe.exists() else [sys.executable, "-m", "pwm_ros.node"]
    extra = [arg for p in params for arg in ("-p", p)]
    popen.setdefault("env", dict(os.environ))
    return subprocess.Popen([*cmd, "--ros-args", "-p", f"model_dir:={model_dir}", "-p", "autostart:=true",
                             "-p", f"intra_op_threads:={threads}", *extra, "--log-level", "warn"], **popen)


def wait_subscribed(pub: object, proc: subprocess.Popen, timeout_s: float = 120.0) -> None:
    """Until the node subscribes to ``pub``'s topic (configured and active); SystemExit if it exits or times out."""
    deadline = time.monotonic() + timeout_s
    while pub.get_subscription_count() == 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("pwm_node did not become active")
        time.sleep(0.1)


def stop_node(proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
    """SIGINT (as Ctrl-C), then SIGKILL after ``timeout_s``."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, help="model directory (default: export a tiny random one)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measurement window (default 20)")
    parser.add_argument("--camera-hz", type=float, default=30.0, help="camera rate (default 30)")
    parser.add_argument("--warmup-s", type=float, default=3.0, help="frames before the window starts (default 3)")
    parser.add_argument("--threads", type=int, default=0, help="node intra_op_threads (default 0: ORT default)")
    args = parser.parse_args(argv)

    ros_env()

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from nav_msgs.msg import Path as PathMsg
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from pwm_model.config import preset
    from pwm_ros import conversions

    with tempfile.TemporaryDirectory(prefix="pwm_bench_node_") as tmp:
        model_dir = args.model_dir or make_tiny_model(Path(tmp) / "model")
        cam = preset("tiny").camera
        proc = start_node(model_dir, args.threads)
        rclpy.init()
        node = rclpy.create_node("pwm_bench_camera")
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
        pub = node.create_publisher(Image, "/camera/front/image_raw", qos)
        lock = threading.Lock()
        window = {"on": False}
        latencies_ms: list[float] = []
        path_times: list[float] = []
        diags: list[dict[str, str]] = []
        frames_sent = [0]

        def on_path(msg: PathMsg) -> None:
            now_ns = node.get_clock().now().nanoseconds
            with lock:
                if window["on"]:
                    latencies_ms.append((now_ns - conversions.stamp_to_ns(msg.header.stamp)) / 1e6)
                    path_times.append(time.monotonic())

        def on_diag(msg: DiagnosticArray) -> None:
            for status in msg.status:
                if status.name.startswith("pwm_node"):
                    with lock:
                        diags.append({kv.key: kv.value for kv in status.values})

        node.create_subscription(PathMsg, "/pwm_node/trajectory", on_path, qos)
        node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
        rng = np.random.default_rng(0)
        base = rng.integers(0, 255, (cam.height_px, cam.width_px, 3), dtype=np.uint8)

        def tick() -> None:
            k = frames_sent[0]
            msg = conversions.rgb_to_image(np.roll(base, 2 * k, axis=1), node.get_clock().now().nanoseconds,
                                           "camera_front")
            pub.publish(msg)
            frames_sent[0] += 1

        executor = SingleThreadedExecutor()
        executor.add_node(node)
        spin = threading.Thread(target=executor.spin, daemon=True)
        spin.start()
        try:
            wait_subscribed(pub, proc)
            node.create_timer(1.0 / args.camera_hz, tick)
            time.sleep(args.warmup_s)
            with lock:
                d0 = dict(diags[-1]) if diags else {}
                window["on"] = True
            rss0, sent0, t0 = rss_mb(proc.pid), frames_sent[0], time.monotonic()
            time.sleep(args.seconds)
            with lock:
                window["on"] = False
            t1, sent1, rss1 = time.monotonic(), frames_sent[0], rss_mb(proc.pid)
            time.sleep(1.5)  # one more diagnostics message covering the window
            with lock:
                d1 = dict(diags[-1]) if diags else {}
        finally:
            executor.shutdown()
            node.destroy_node()
            rclpy.shutdown()
            stop_node(proc)

    lat = np.array(latencies_ms)
    duration_s = t1 - t0
    p50, p99 = (float(np.percentile(lat, 50)), float(np.percentile(lat, 99))) if len(lat) else (float("nan"),) * 2
    figures = {
        "machine": cpu_name(),
        "cpus": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2),  # other processes competing for the CPU during the run
        "backend": "onnxruntime-cpu",
        "camera_hz": round((sent1 - sent0) / duration_s, 2),
        "plan_rate_hz": round(len(path_times) / duration_s, 2),
        "latency_p50_ms": round(p50, 2),
        "latency_p99_ms": round(p99, 2),
        "latency_p99_over_p50": round(p99 / p50, 3) if p50 > 0 else float("nan"),
        "dropped_frames": int(d1.get("dropped_frames", 0)) - int(d0.get("dropped_frames", 0)),
        "frames_sent": sent1 - sent0,
        "node_latency_p50_ms": float(d1.get("latency_p50_ms", "nan")),
        "runner_p50_ms": float(d1.get("runner_p50_ms", "nan")),
        "runner_p99_ms": float(d1.get("runner_p99_ms", "nan")),
        "cycle_p50_ms": float(d1.get("cycle_p50_ms", "nan")),
        "rss_growth_mb": round(rss1 - rss0, 2),
        "rss_mb": round(rss1, 1),
        "overhead_frac": round(float(d1.get("overhead_frac", "nan")), 4),
    }
    print(f"pwm_node benchmark: {figures['camera_hz']} Hz camera for {duration_s:.1f} s on {figures['machine']}")
    print(f"{'figure':<24}{'value':>12}  target")
    for key, value in figures.items():
        if key in ("machine", "backend", "cpus"):
            continue
        op, goal = TARGETS.get(key, ("", None))
        ok = "" if goal is None else (("ok" if (value >= goal if op == ">=" else value <= goal) else "MISSED")
                                      + f" ({op} {goal:g})")
        print(f"{key:<24}{value:>12}  {ok}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
