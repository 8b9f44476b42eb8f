"""Soak of pwm_node: a camera, odometry and a route command for minutes on end; plans, gaps, log lines and memory.

    .venv/bin/python bench/soak.py [--model-dir DIR] [--minutes 10] [--rate-hz 30] [--warmup-s 30]

The node is started as ``bench/node.py`` starts it (its own process, autostart, ONNX Runtime on the CPU, log level
warn), here with odometry (``/odom``, 50 Hz, a speed and yaw rate that vary slowly) and a route command
(``/route/command``, 1 Hz, straight / left / straight / right in turn) besides the camera frames at ``--rate-hz``.
This process receives ``~/trajectory`` and ``/diagnostics``, reads the node's stderr (every line is passed on to
this process's stderr; WARN / ERROR / FATAL log lines, Python warnings, ONNX Runtime warnings and errors and
tracebacks are counted, grouped by kind: the message with its numbers replaced by ``#``), and samples the node's
resident memory every 10 s (psutil when installed, else /proc/PID/status VmRSS).

After ``--warmup-s`` of frames (the model's history fills, allocators settle) the measured window of ``--minutes``
starts: plans are counted in it, the largest gap between consecutive plans includes the window's start and end (a
node that stops planning shows), RSS growth is from its start to its end, diagnostics levels are counted in it. Log
lines are counted from the node's start until it is stopped. A progress line every 30 s, then a table, then, last,
one JSON line: plans, plan_rate_hz, largest_gap_s, rss_start_mb, rss_end_mb, rss_growth_mb, warnings, errors (log
lines; warning_kinds / error_kinds group them), minutes, rate_hz and ``pass``: RSS growth <= 20 MB, no kind of
warning or error logged more than once per minute (1 + the minutes the node ran), and largest gap < 1.0 s.

Without ``--model-dir`` the model is out/models/pwm-tiny-onnx (``export/export_onnx.py --checkpoint
models/pwm-tiny``) when exported, else the cached test model under out/test_cache/ (test/model_utils.py), else a
tiny random model exported first (as bench/node.py, needs torch). Exit status 0 whatever is measured (a benchmark),
2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # the packages of this checkout, as the other benches

from bench.node import make_tiny_model, ros_env, rss_mb, start_node, stop_node, wait_subscribed  # noqa: E402
from pwm_model.io_utils import cpu_name  # noqa: E402

RSS_GROWTH_MAX_MB = 20.0
GAP_MAX_S = 1.0
RSS_EVERY_S, PROGRESS_EVERY_S = 10.0, 30.0
ODOM_HZ, COMMAND_HZ, COMMAND_EVERY_S = 50.0, 1.0, 15.0
COMMANDS = (1, 0, 1, 2)  # straight, left, straight, right: each for COMMAND_EVERY_S
LEVELS = {0: "OK", 1: "WARN", 2: "ERROR", 3: "STALE"}
# The node's console lines in a format set here (RCUTILS_CONSOLE_OUTPUT_FORMAT), so that they parse.
LOG_FORMAT = "[{severity}] [{name}]: {message}"
ROS_LINE = re.compile(r"^\[(WARN|ERROR|FATAL)\] \[([^\]]*)\]: (.*)$")
PY_WARNING = re.compile(r"\b(\w*Warning): (.*)$")
ORT_LINE = re.compile(r"\[([WE]):onnxruntime:[^\]]*\]\s*(.*)$")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one sentence, exit 2 (argparse's own adds the usage)
        print(f"{self.prog}: {message}", file=sys.stderr)
        sys.exit(2)


def node_rss_mb(pid: int) -> float:
    """Resident memory of the node in MiB: psutil when installed, else /proc (bench/node.py's ``rss_mb``)."""
    try:
        import psutil
    except ImportError:
        return rss_mb(pid)
    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.Error:
        return float("nan")


def log_kind(text: str) -> str:
    """A log message's kind: its numbers replaced by ``#`` (as ``pwm_ros.diagnostics.fault_kind``), cut to 100."""
    kind = re.sub(r"[0-9]+(?:[.][0-9]+)?", "#", text.strip())
    return kind if len(kind) <= 100 else kind[:99] + "…"


class LogCounter:
    """Warnings and errors in the node's stderr, by kind (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.warnings: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.counting = True

    def feed(self, line: str) -> None:
        line = line.rstrip("\n")
        severity, kind = None, ""
        if m := ROS_LINE.match(line):
            severity, kind = ("WARN" if m[1] == "WARN" else "ERROR"), f"[{m[2]}] {log_kind(m[3])}"
        elif m := ORT_LINE.search(line):
            severity, kind = ("WARN" if m[1] == "W" else "ERROR"), f"onnxruntime: {log_kind(m[2])}"
        elif line.startswith("Traceback (most recent call last)"):
            severity, kind = "ERROR", "Python traceback"
        elif m := PY_WARNING.search(line):
            severity, kind = "WARN", f"{m[1]}: {log_kind(m[2])}"
        if severity is None:
            return
        with self._lock:
            if self.counting:
                (self.warnings if severity == "WARN" else self.errors)[kind] += 1

    def stop(self) -> None:
        with self._lock:
            self.counting = False

    def snapshot(self) -> tuple[dict[str, int], dict[str, int]]:
        with self._lock:
            return dict(self.warnings), dict(self.errors)


def pump_stderr(proc: subprocess.Popen, logs: LogCounter) -> None:
    """Pass the node's stderr on, line by line, and count its warnings and errors."""
    for line in proc.stderr:
        sys.stderr.write(line)
        sys.stderr.flush()
        logs.feed(line)


def default_model_dir(tmp: Path) -> Path:
    """The exported models/pwm-tiny, else the cached test model (this source version's first), else a fresh one."""
    exported = REPO_ROOT / "out" / "models" / "pwm-tiny-onnx"
    if (exported / "manifest.json").is_file():
        return exported
    cache = REPO_ROOT / "out" / "test_cache"
    try:  # the cache entry of these sources (test/model_utils.py imports pytest)
        from test.model_utils import _sources_key

        current = cache / f"tiny-{_sources_key()}"
        if (current / "manifest.json").is_file():
            return current
    except Exception:  # noqa: BLE001 - no pytest: the newest entry
        pass
    cached = sorted((d for d in cache.glob("tiny-*") if (d / "manifest.json").is_file()),
                    key=lambda d: d.stat().st_mtime)
    if cached:
        return cached[-1]
    return make_tiny_model(tmp / "model")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = _Parser(prog="soak.py", description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, help="model directory (default: see the module docstring)")
    parser.add_argument("--minutes", type=float, default=10.0, help="measured window in minutes (default 10)")
    parser.add_argument("--rate-hz", type=float, default=30.0, help="camera rate (default 30)")
    parser.add_argument("--warmup-s", type=float, default=30.0, help="seconds of frames before the window "
                        "(default 30)")
    parser.add_argument("--threads", type=int, default=0, help="node intra_op_threads (default 0: ORT default)")
    args = parser.parse_args(argv)
    if not (math.isfinite(args.minutes) and args.minutes > 0):
        parser.error(f"--minutes must be a positive number of minutes, not {args.minutes:g}.")
    if not (math.isfinite(args.rate_hz) and 0 < args.rate_hz <= 1000):
        parser.error(f"--rate-hz must be a camera rate above 0 and at most 1000 Hz, not {args.rate_hz:g}.")
    if not (math.isfinite(args.warmup_s) and args.warmup_s >= 0):
        parser.error(f"--warmup-s must be 0 or more seconds, not {args.warmup_s:g}.")
    if args.threads < 0:
        parser.error(f"--threads must be 0 (ONNX Runtime's default) or more, not {args.threads}.")
    if args.model_dir is not None and not (args.model_dir / "manifest.json").is_file():
        parser.error(f"--model-dir {args.model_dir} is not a model directory (it has no manifest.json).")
    return args


def soak(args: argparse.Namespace, model_dir: Path) -> dict:
    """Run the node under load; the raw measurements (``error`` set when it could not be measured)."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from nav_msgs.msg import Odometry
    from nav_msgs.msg import Path as PathMsg
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import UInt8

    from pwm_model.config import TopicsConfig, preset
    from pwm_ros import conversions

    topics = TopicsConfig()
    cam = preset("tiny").camera
    logs = LogCounter()
    env = dict(os.environ, RCUTILS_CONSOLE_OUTPUT_FORMAT=LOG_FORMAT, RCUTILS_COLORIZED_OUTPUT="0",
               PYTHONUNBUFFERED="1")
    t_spawn = time.monotonic()
    proc = start_node(model_dir, args.threads, params=(f"odom_topic:={topics.odometry}",
                                                       f"command_topic:={topics.command}"),
                      env=env, stderr=subprocess.PIPE, text=True, bufsize=1, errors="replace")
    pump = threading.Thread(target=pump_stderr, args=(proc, logs), daemon=True)
    pump.start()
    rclpy.init()
    node = rclpy.create_node("pwm_bench_soak")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
    cam_pub = node.create_publisher(Image, topics.image, qos)
    odom_pub = node.create_publisher(Odometry, topics.odometry, qos)
    cmd_pub = node.create_publisher(UInt8, topics.command, qos)
    lock = threading.Lock()
    window = {"on": False}
    plan_times: list[float] = []
    levels: Counter[str] = Counter()
    diag_messages: Counter[str] = Counter()
    sent = Counter()
    rss_samples: list[tuple[float, float]] = []  # (seconds into the window, MiB)
    out: dict = {"error": None, "node_returncode": None}

    def on_path(msg: PathMsg) -> None:
        with lock:
            if window["on"]:
                plan_times.append(time.monotonic())

    def on_diag(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if not status.name.startswith("pwm_node"):
                continue
            level = status.level[0] if isinstance(status.level, (bytes, bytearray)) else int(status.level)
            with lock:
                if window["on"]:
                    levels[LEVELS.get(level, str(level))] += 1
                    if level:
                        diag_messages[f"{LEVELS.get(level, level)}: {log_kind(status.message)}"] += 1

    node.create_subscription(PathMsg, "/pwm_node/trajectory", on_path, qos)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    base = np.random.default_rng(0).integers(0, 255, (cam.height_px, cam.width_px, 3), dtype=np.uint8)
    t_stream = [0.0]

    def camera_tick() -> None:
        k = sent["camera"]
        cam_pub.publish(conversions.rgb_to_image(np.roll(base, 2 * k, axis=1), node.get_clock().now().nanoseconds,
                                                 "camera_front"))
        sent["camera"] += 1

    def odom_tick() -> None:
        t = time.monotonic() - t_stream[0]
        msg = Odometry()
        msg.header.stamp = conversions.ns_to_stamp(node.get_clock().now().nanoseconds)
        msg.header.frame_id, msg.child_frame_id = "odom", "base_link"
        msg.twist.twist.linear.x = 8.0 + 2.0 * math.sin(t / 10.0)
        msg.twist.twist.angular.z = 0.05 * math.sin(t / 7.0)
        odom_pub.publish(msg)
        sent["odom"] += 1

    def command_tick() -> None:
        t = time.monotonic() - t_stream[0]
        cmd_pub.publish(UInt8(data=COMMANDS[int(t // COMMAND_EVERY_S) % len(COMMANDS)]))
        sent["command"] += 1

    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    t0 = t1 = time.monotonic()
    sent0: Counter = Counter()
    try:
        try:
            wait_subscribed(cam_pub, proc)
        except SystemExit as exc:
            out["error"] = f"{exc} (rc {proc.poll()})"
            return out
        t_stream[0] = time.monotonic()
        node.create_timer(1.0 / args.rate_hz, camera_tick)
        node.create_timer(1.0 / ODOM_HZ, odom_tick)
        node.create_timer(1.0 / COMMAND_HZ, command_tick)
        print(f"pwm_node active after {t_stream[0] - t_spawn:.1f} s; warming up for {args.warmup_s:g} s",
              flush=True)
        warm_end = time.monotonic() + args.warmup_s
        while time.monotonic() < warm_end and proc.poll() is None:
            time.sleep(0.2)
        with lock:
            window["on"] = True
        t0, sent0 = time.monotonic(), Counter(sent)
        rss_samples.append((0.0, node_rss_mb(proc.pid)))
        print(f"[{0:6.0f} s] warm-up done: RSS {rss_samples[0][1]:.1f} MB; measuring for {args.minutes:g} min",
              flush=True)
        end = t0 + 60.0 * args.minutes
        next_rss, next_progress = t0 + RSS_EVERY_S, t0 + PROGRESS_EVERY_S
        try:
            while proc.poll() is None:
                now = time.monotonic()
                if now >= next_rss:
                    rss_samples.append((now - t0, node_rss_mb(proc.pid)))
                    next_rss += RSS_EVERY_S
                if now >= next_progress:
                    with lock:
                        n = len(plan_times)
                    rss = rss_samples[-1][1]
                    print(f"[{now - t0:6.0f} s] plans {n} ({n / (now - t0):.2f} Hz), RSS {rss:.1f} MB "
                          f"({rss - rss_samples[0][1]:+.1f})", flush=True)
                    next_progress += PROGRESS_EVERY_S
                if now >= end:
                    break
                time.sleep(min(0.5, max(0.01, min(end, next_rss, next_progress) - now)))
        except KeyboardInterrupt:
            out["error"] = "interrupted (Ctrl-C): the figures cover the window up to then"
        with lock:
            window["on"] = False
        t1 = time.monotonic()
        if proc.poll() is None:
            rss_samples.append((t1 - t0, node_rss_mb(proc.pid)))
        else:
            out["error"] = f"pwm_node exited with rc {proc.returncode} during the soak"
    finally:
        logs.stop()
        t_stop = time.monotonic()
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown()
        if proc.poll() is None:
            stop_node(proc)
        else:
            out["node_returncode"] = proc.returncode
        pump.join(5.0)
    warnings, errors = logs.snapshot()
    with lock:
        times = [t0, *plan_times, t1]
    out.update(window_s=t1 - t0, log_minutes=(t_stop - t_spawn) / 60.0, plan_times=times[1:-1],
               largest_gap_s=max(b - a for a, b in zip(times, times[1:])) if t1 > t0 else float("nan"),
               rss_samples=rss_samples, warnings=warnings, errors=errors, levels=dict(levels),
               diag_messages=dict(diag_messages),
               camera_hz=(sent["camera"] - sent0["camera"]) / (t1 - t0) if t1 > t0 else float("nan"),
               odom_hz=(sent["odom"] - sent0["odom"]) / (t1 - t0) if t1 > t0 else float("nan"))
    return out


def report(args: argparse.Namespace, model_dir: Path, m: dict) -> dict:
    """Print the table; returns the figures of the JSON line."""
    rss = [mb for _, mb in m.get("rss_samples", [])]
    rss0, rss1 = (rss[0], rss[-1]) if rss else (float("nan"),) * 2
    window_s = m.get("window_s", 0.0)
    plans = len(m.get("plan_times", []))
    warnings, errors = m.get("warnings", {}), m.get("errors", {})
    allowed = 1.0 + m.get("log_minutes", 0.0)  # a kind said once, then at most once a minute
    storm = sorted(k for k, n in {**warnings, **errors}.items() if n > allowed)
    gap = m.get("largest_gap_s", float("nan"))
    growth = rss1 - rss0
    ok = m["error"] is None and growth <= RSS_GROWTH_MAX_MB and not storm and gap < GAP_MAX_S
    figures = {
        "plans": plans,
        "plan_rate_hz": round(plans / window_s, 3) if window_s > 0 else float("nan"),
        "largest_gap_s": round(gap, 3),
        "rss_start_mb": round(rss0, 1),
        "rss_end_mb": round(rss1, 1),
        "rss_growth_mb": round(growth, 2),
        "rss_max_mb": round(max(rss), 1) if rss else float("nan"),
        "warnings": sum(warnings.values()),
        "errors": sum(errors.values()),
        "warning_kinds": warnings,
        "error_kinds": errors,
        "diagnostics": m.get("levels", {}),
        "camera_hz": round(m.get("camera_hz", float("nan")), 2),
        "odom_hz": round(m.get("odom_hz", float("nan")), 2),
        "minutes": round(window_s / 60.0, 3),
        "rate_hz": args.rate_hz,
        "machine": cpu_name(),
        "cpus": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "model_dir": str(model_dir),
        "error": m["error"],
        "pass": bool(ok),
    }
    print(f"pwm_node soak: {figures['camera_hz']} Hz camera, {figures['odom_hz']} Hz odometry, route command, "
          f"for {window_s / 60.0:.2f} min after {args.warmup_s:g} s warm-up on {figures['machine']} "
          f"(load {figures['load_avg_1min']})")
    if m["error"]:
        print(f"note: {m['error']}")
    rows = [("plans", plans, ""), ("plans per second", figures["plan_rate_hz"], ""),
            ("largest gap (s)", figures["largest_gap_s"], f"< {GAP_MAX_S:g}"),
            ("RSS start (MB)", figures["rss_start_mb"], "after warm-up"), ("RSS end (MB)", figures["rss_end_mb"], ""),
            ("RSS growth (MB)", figures["rss_growth_mb"], f"<= {RSS_GROWTH_MAX_MB:g}"),
            ("RSS max (MB)", figures["rss_max_mb"], f"{len(rss)} samples, every {RSS_EVERY_S:g} s"),
            ("warnings logged", figures["warnings"], f"<= {allowed:.1f} per kind"),
            ("errors logged", figures["errors"], f"<= {allowed:.1f} per kind")]
    print(f"{'figure':<24}{'value':>12}  target")
    for name, value, note in rows:
        print(f"{name:<24}{value:>12}  {note}")
    for title, kinds in (("warnings", warnings), ("errors", errors)):
        for kind, n in sorted(kinds.items(), key=lambda kv: -kv[1]):
            print(f"  {title[:-1]} x{n:<5} {kind}{'   <- storm' if kind in storm else ''}")
    print("diagnostics levels (window): " + (", ".join(f"{k} {v}" for k, v in sorted(m.get("levels", {}).items()))
                                             or "none received"))
    for msg, n in sorted(m.get("diag_messages", {}).items(), key=lambda kv: -kv[1])[:8]:
        print(f"  x{n:<5} {msg}")
    print(f"pass: {str(ok).lower()}")
    return figures


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ros_env()
    with tempfile.TemporaryDirectory(prefix="pwm_bench_soak_") as tmp:
        model_dir = args.model_dir or default_model_dir(Path(tmp))
        print(f"model: {model_dir}", flush=True)
        m = soak(args, model_dir)
        figures = report(args, model_dir, m)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
