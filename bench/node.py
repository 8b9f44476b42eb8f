"""Benchmark of pwm_node as a camera sees it: a 30 Hz camera into the node for 20 s (see pwm_ros/bench_node.py).

    .venv/bin/python bench/node.py [--model-dir DIR] [--seconds 20] [--camera-hz 30]

Prints a table, then one JSON line with plan_rate_hz, latency_p50_ms, latency_p99_ms, dropped_frames,
rss_growth_mb and overhead_frac.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # export/ (the random model's export) and the packages

from pwm_ros.bench_node import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
