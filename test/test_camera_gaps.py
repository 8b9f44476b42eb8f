"""Camera frames that never arrived, counted from the camera's header stamps (``StampGaps``), and the same over DDS.

A best-effort subscription loses whole raw frames without a trace in the node; the gaps between the stamps of the
frames that did arrive show them. The unit tests feed stamp sequences (losses, jitter, pauses, time going back,
irregular streams) to ``StampGaps``; the DDS test publishes frames with stamps left out to a running pwm_node and
reads ``frames_missing``, ``camera_rate_hz``, ``received_rate_hz``, the WARN and the one log line back.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from pwm_ros.diagnostics import GAP_MIN, NodeStats, StampGaps, Thresholds, missing_frames_advice

T0_NS = 1_700_000_000_000_000_000
PERIOD_NS = 100_000_000  # a 10 Hz camera


def _feed(stamps) -> tuple[StampGaps, int]:  # noqa: ANN001 - an iterable of ints
    gaps = StampGaps()
    return gaps, sum(gaps.add(int(t)) for t in stamps)


def test_a_steady_camera_has_nothing_missing() -> None:
    gaps, missing = _feed(T0_NS + k * PERIOD_NS for k in range(200))
    assert missing == 0 and gaps.missing_frac() == 0.0
    assert gaps.camera_rate_hz() == pytest.approx(10.0) and gaps.received_rate_hz() == pytest.approx(10.0)


def test_gaps_count_round_gap_over_period_minus_one() -> None:
    skipped = {40, 41, 42, 50, 60, 61, 62, 63, 64}  # after GAP_MIN regular differences: 3 + 1 + 5 lost
    assert min(skipped) > GAP_MIN
    gaps, missing = _feed(T0_NS + k * PERIOD_NS for k in range(100) if k not in skipped)
    assert missing == len(skipped)
    assert gaps.camera_rate_hz() == pytest.approx(10.0)  # the camera's rate, not the received one
    assert gaps.received_rate_hz() == pytest.approx((100 - len(skipped) - 1) / 9.9)
    assert gaps.missing_frac() == pytest.approx(len(skipped) / 99)


@pytest.mark.parametrize(("keep", "jitter"), [(0.66, 0.0), (0.5, 0.03), (0.34, 0.05), (0.9, 0.07)])
def test_random_losses_with_jittering_stamps_are_counted(keep: float, jitter: float) -> None:
    """The 34-50 % of 720p / 1080p frames a best-effort subscription received on one host, and milder cases."""
    rng = np.random.default_rng(1)
    n = 1000
    stamps = T0_NS + (np.arange(n) * PERIOD_NS + rng.normal(0.0, jitter * PERIOD_NS, n)).astype(np.int64)
    received = [int(t) for t in stamps if rng.random() < keep]
    gaps, missing = _feed(received)
    lost = n - len(received)
    assert 0.8 * lost <= missing <= lost  # the first GAP_MIN differences and rare pauses are not counted
    assert gaps.camera_rate_hz() == pytest.approx(10.0, rel=0.02)
    assert gaps.received_rate_hz() == pytest.approx(10.0 * keep, rel=0.15)
    assert gaps.missing_frac() == pytest.approx(1.0 - keep, abs=0.12)


def test_pauses_time_going_back_and_repeats_count_nothing() -> None:
    steady = [T0_NS + k * PERIOD_NS for k in range(50)]
    after_pause = [steady[-1] + 5_000_000_000 + k * PERIOD_NS for k in range(20)]  # the driver stopped for 5 s
    rewound = [T0_NS + k * PERIOD_NS for k in range(20)]  # a looping bag
    repeated = [rewound[-1]] * 3  # a driver republishing
    gaps, missing = _feed(steady + after_pause + rewound + repeated)
    assert missing == 0 and gaps.camera_rate_hz() == pytest.approx(10.0)


@pytest.mark.parametrize("kind", ["uniform", "exponential", "bursts"])
def test_irregular_streams_count_nothing(kind: str) -> None:
    """Frames sent on demand (a test, a tool) are no camera: no period, no gaps, no warning."""
    for seed in range(20):
        rng = np.random.default_rng(seed)
        if kind == "uniform":
            steps = rng.uniform(0.02, 1.5, 300)
        elif kind == "exponential":
            steps = rng.exponential(0.2, 300) + 1e-6
        else:  # a bad frame and a good one close together, then a wait
            steps = np.where(rng.random(300) < 0.5, 0.03, 0.25 + rng.uniform(0.0, 0.2, 300))
        _, missing = _feed(np.cumsum((steps * 1e9).astype(np.int64)) + T0_NS)
        assert missing == 0, (kind, seed)


def test_node_stats_report_the_rates_and_warn_above_ten_percent() -> None:
    stats = NodeStats()
    stats.engine_state = "active"
    th = Thresholds(planning_rate_hz=10.0, camera_timeout_s=1e9)
    warned, reports = [], []
    for k in range(80):
        if k in (40, 41, 42, 50, 51, 52):
            continue
        lost = stats.frame_received(1.0 + k * 0.1, False, T0_NS + k * PERIOD_NS)
        if lost is not None:
            warned.append((k, lost))
        if k in (45, 53, 79):
            reports.append(stats.summary(1.0 + k * 0.1, True, th, "/cam"))
    assert [k for k, _ in warned] == [53]  # 3 missing of 43 periods (7 %): not yet; then 6 of 53 (11 %)
    frac, camera_hz, received_hz = warned[0][1]
    assert frac == pytest.approx(6 / 53) and camera_hz == pytest.approx(10.0) and received_hz < camera_hz
    (level_45, msg_45, _), (level_53, msg_53, at_53), (level_79, msg_79, at_79) = reports
    assert level_45 == 0 and "missing" not in msg_45  # 3 missing, 7 %: counted, no WARN
    assert level_53 == 1 and "11% of the camera frames missing by their stamps (3 in this period)" in msg_53
    assert at_53["frames_missing"] == 6 and at_53["missing_frac"] == pytest.approx(6 / 53)
    assert level_79 == 0 and "missing" not in msg_79  # nothing new since, and 6 of 79 periods (7.6 %)
    assert at_79["frames_missing"] == 6 and at_79["camera_rate_hz"] == pytest.approx(10.0)
    assert at_79["received_rate_hz"] == pytest.approx(73 / 7.9) and at_79["missing_frac"] == pytest.approx(6 / 79)


def test_the_advice_names_the_remedy_for_the_subscription() -> None:
    best_effort = missing_frames_advice(0.5, 30.0, 15.0, "/cam/image_raw", "best_effort", False)
    assert "50% of the camera frames on /cam/image_raw" in best_effort and "15.0 Hz received of the camera's 30.0 Hz"\
        in best_effort
    assert "camera_reliability:=reliable" in best_effort and "use_compressed:=true" in best_effort
    reliable = missing_frames_advice(0.2, 30.0, 24.0, "/cam/image_raw", "reliable", False)
    assert "lost before the node" in reliable and "camera_reliability:=reliable" not in reliable


# --- over DDS ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_dir() -> Path:
    from .model_utils import tiny_model_dir
    return tiny_model_dir()


@pytest.mark.timeout(120)
def test_frames_left_out_of_the_camera_stream_are_counted_by_the_node(model_dir: Path,
                                                                       capfd: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("rclpy", reason="rclpy is not installed (pip install -e .[ros])")
    from diagnostic_msgs.msg import DiagnosticArray

    from .ros_utils import Probe, spinning, wait_for
    from .test_ros_node import Camera, LogWatch, _diag, _diag_after, _frames, _image, _node, _wait_active

    skipped = {35, 36, 37, 45, 50, 51, 55, 56}  # 8 of 60 camera frames never sent, after GAP_MIN regular ones
    logs = LogWatch(capfd)
    with spinning(_node(model_dir), Probe) as (_, (node, probe)):
        diags = probe.listen(DiagnosticArray, "/diagnostics")
        camera = Camera(probe)  # reliable, like the node's subscription here: DDS itself loses nothing
        _wait_active(probe, node, camera)
        h, w = node._runner.config.camera.height_px, node._runner.config.camera.width_px  # noqa: SLF001
        rgb = _frames(1, h, w)[0]
        t0 = node.get_clock().now().nanoseconds - 6_000_000_000  # all in the past, none too old
        sent = [k for k in range(60) if k not in skipped]
        for k in sent:
            camera.send(_image(rgb, t0 + k * PERIOD_NS))
            time.sleep(0.03)  # 33 Hz: faster than the camera's own 10 Hz (only its stamps say that), and slow enough
            # that the node's short camera queue (KEEP_LAST) keeps every frame on a loaded machine
        assert wait_for(lambda: node._stats.counts["frames_received"] == len(sent), 15.0), \
            node._stats.counts  # noqa: SLF001
        values = _diag_after(diags, lambda lvl, msg, v: int(v["frames_received"]) == len(sent))
        assert logs.has("camera frames on /camera/front/image_raw never arrived", 5.0), logs.text[-2000:]
        warned = [m for m in diags if "camera frames missing" in m.status[0].message]
    assert int(values["frames_missing"]) == len(skipped)
    assert float(values["camera_rate_hz"]) == pytest.approx(10.0)  # /diagnostics values: 4 significant figures
    assert float(values["received_rate_hz"]) == pytest.approx((len(sent) - 1) / 5.9, rel=1e-3)
    assert float(values["missing_frac"]) == pytest.approx(len(skipped) / 59, rel=1e-3)
    assert warned and warned[0].status[0].level[0] == 1  # WARN in the period that counted them
    assert logs.text.count("never arrived") == 1  # said once
    assert "lost before the node" in logs.text  # the node's subscription is reliable here
    assert _diag(diags)[2]["frames_missing"] == str(len(skipped))
