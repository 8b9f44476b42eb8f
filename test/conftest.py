"""Shared test set-up: every test process gets its own ROS 2 domain and stays on localhost."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

# A domain id per test process (0..101 keeps to the safe range) so parallel runs never see each other's nodes.
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")

BIN_DIR = Path(sys.executable).parent
