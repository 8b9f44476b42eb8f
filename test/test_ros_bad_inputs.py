"""The bad-input matrix: one pwm_node lifetime over real DDS fed every kind of bad input docs/ROBOT.md names.

The node is started once (tiny model, ONNX Runtime on the CPU) and the cases follow one another, each sent
``repeat`` times and each time followed by one good frame (with good odometry). For every case the test checks
(1) the documented outcome: the frame dropped (no Path with its stamp), planned (a Path with its stamp), the
odometry / command ignored (the node's state unchanged) or nothing delivered (a publisher DDS does not match),
with the /diagnostics level of the period that counted it;
(2) that the matching counter moved by exactly the expected amount and no other fault counter moved (the node's
counters, and the same values in /diagnostics); (3) that its kind of fault was logged exactly once over the whole
run (faults that are logged again while they last, stale frames or engine errors, at most once a minute: they come
back in a second round more than 5 s later, so a 5 s throttle fails), and that every warning or error line the
node wrote belongs to one of the cases; (4) that the next good frame is planned and /diagnostics leaves ERROR.
"""

from __future__ import annotations

import dataclasses
import os
import re
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed (pip install -e .[ros])")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from nav_msgs.msg import Path as PathMsg  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import UInt8  # noqa: E402

from pwm_model.data import images  # noqa: E402
from pwm_ros import conversions  # noqa: E402
from pwm_ros.diagnostics import COUNTERS, ERROR, WARN  # noqa: E402

from .drive_helpers import huge_png_header  # noqa: E402
from .model_utils import tiny_model_dir  # noqa: E402
from .ros_utils import DRIVER_QOS, Probe, spinning, wait_for  # noqa: E402
from .test_ros_node import CAMERA, NODE, Camera, LogWatch, _frames, _image, _node, _stamp, _wait_active  # noqa: E402

DAY_NS = 86_400_000_000_000
MAX_FRAME_AGE_MS = 10_000.0  # generous: on a loaded machine a good frame may wait a second for its cycle
FAULT_COUNTERS = tuple(c for c in COUNTERS if c not in ("frames_received", "frames_planned", "previews_published"))
LOG_LINE = re.compile(r"^\[(WARN|ERROR)\] \[[0-9.]+\] \[pwm_node\]: (.*)$", re.MULTILINE)
MINUTE_S = 60.0  # the acceptance rule: at most one log line per fault kind per minute
THROTTLE_PROOF_S = 6.0  # the second round comes this long after the first: more than the old 5 s throttle


@dataclasses.dataclass
class Case:
    name: str
    send: Callable[[], int | None]  # sends the bad input; the stamp of the frame it sent (None: not a frame)
    counter: str | None  # the counter it moves, None: none
    outcome: str  # "dropped" | "planned" | "ignored" (odometry, command) | "undelivered" (by DDS)
    warning: str | None = None  # regex of its one log line; None: it logs nothing
    level: int | None = None  # /diagnostics level of the period that counted it (None: not documented)
    diag_text: str = ""  # in that period's message
    per_send: int | None = 1  # counter increase per send; None: once per diagnostics period while it lasts
    repeat: int = 2
    cleanup: Callable[[], None] | None = None


class Matrix:
    """The probe's side: camera (raw or compressed), odometry, command; runs a case and checks it."""

    def __init__(self, node: Any, probe: Probe, logs: LogWatch) -> None:
        self.node, self.probe, self.logs = node, probe, logs
        self.paths = probe.listen(PathMsg, f"{NODE}/trajectory")
        self.diags = probe.listen(DiagnosticArray, "/diagnostics")
        self.odom_pub = probe.create_publisher(Odometry, "/odom", DRIVER_QOS)
        self.command_pub = probe.create_publisher(UInt8, "/route/command", DRIVER_QOS)
        self.camera = Camera(probe)
        self.clock = node.get_clock()
        self.rgb: np.ndarray | None = None
        self.first_seen_s: dict[str, float] = {}
        self.warnings: set[str] = set()
        self.ran: list[str] = []
        self.planned_extra: list[int] = []  # good frames a case's send() planned on the way (before a backwards one)

    # --- inputs ---------------------------------------------------------------------------------------
    def now(self) -> int:
        return self.clock.now().nanoseconds

    def frame(self, t_ns: int | None = None) -> Image | CompressedImage:
        t_ns = self.now() if t_ns is None else t_ns
        if self.camera.compressed:
            return conversions.rgb_to_compressed(self.rgb, t_ns, "camera_front", "jpeg")
        return _image(self.rgb, t_ns)

    def send_frame(self, msg: Any) -> int:
        self.camera.send(msg)
        return _stamp(msg)

    def odom(self, t_ns: int, speed: float = 6.0, yaw_rate: float = 0.25) -> None:
        msg = Odometry()
        msg.header.stamp = conversions.ns_to_stamp(t_ns)
        msg.twist.twist.linear.x, msg.twist.twist.angular.z = speed, yaw_rate
        self.odom_pub.publish(msg)

    def path_for(self, t_ns: int, timeout_s: float = 15.0) -> PathMsg | None:
        return wait_for(lambda: next((p for p in self.paths if _stamp(p) == t_ns), None), timeout_s)

    def good(self) -> int:
        """Good odometry, then a good frame at the same stamp: it must be planned, with that odometry."""
        t_ns = self.now()
        self.odom(t_ns)
        assert wait_for(lambda: self.node._odom and self.node._odom[-1][0] == t_ns, 5.0), "good odometry lost"  # noqa: SLF001
        before = dict(self.node._stats.counts)  # noqa: SLF001
        assert self.path_for(self.send_frame(self.frame(t_ns))) is not None, \
            f"no plan for the good frame after the bad input; moved: {self.moved(before)}, stamp {t_ns}, last " \
            f"planned {self.node._last_stamp_ns}, last fault {self.node._stats.last_fault!r}"  # noqa: SLF001
        return t_ns

    # --- reading --------------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        assert wait_for(self.node._worker.idle, 10.0)  # noqa: SLF001 - the last cycle has finished
        return dict(self.node._stats.counts)  # noqa: SLF001

    def diag_where(self, start: int, cond: Callable[[int, str, dict[str, str]], bool],
                   timeout_s: float = 10.0) -> tuple[int, str, dict[str, str]] | None:
        """The first /diagnostics status at index >= ``start`` that satisfies ``cond``."""
        def find() -> tuple[int, str, dict[str, str]] | None:
            for arr in list(self.diags)[start:]:
                s = arr.status[0]
                got = (s.level[0], s.message, {kv.key: kv.value for kv in s.values})
                if cond(*got):
                    return got
            return None
        return wait_for(find, timeout_s)

    def log_lines(self) -> list[tuple[str, str]]:
        self.logs.has("", 0.0)  # gathers what the node wrote so far
        return LOG_LINE.findall(self.logs.text)

    def count_logged(self, pattern: str) -> int:
        return sum(1 for _, text in self.log_lines() if re.search(pattern, text))

    def allowed(self, pattern: str) -> int:
        """Log lines a fault kind may have had by now: one, and one more per minute since it was first said."""
        return 1 + int((time.monotonic() - self.first_seen_s[pattern]) // MINUTE_S)

    # --- one case -------------------------------------------------------------------------------------
    def run(self, case: Case) -> None:
        before = self.counts()
        planned_before, start = len(self.paths), len(self.diags)
        expected_stamps: list[int] = []
        for k in range(case.repeat):
            odom, command = list(self.node._odom), vars(self.node._command).copy()  # noqa: SLF001
            received = self.node._stats.counts["frames_received"]  # noqa: SLF001
            sent = len(self.diags)
            self.planned_extra = []
            stamp = case.send()
            expected_stamps += self.planned_extra
            if case.counter is not None and case.per_send is not None:
                target = before[case.counter] + (k + 1) * case.per_send
                assert wait_for(lambda t=target: self.node._stats.counts[case.counter] >= t, 10.0), \
                    f"{case.name}: {case.counter} not counted; moved: {self.moved(before)}"
                status = self.diag_where(sent, lambda lvl, m, v, t=target: int(v[case.counter]) >= t)
                assert status is not None, f"{case.name}: /diagnostics never showed {case.counter} = {target}"
                assert int(status[2][case.counter]) == target, f"{case.name}: {status[2][case.counter]} != {target}"
                self.check_level(case, status)
            elif case.counter is not None:  # counted each diagnostics period while it lasts
                status = self.diag_where(sent, lambda lvl, m, v: int(v[case.counter]) >= before[case.counter] + 2)
                assert status is not None, f"{case.name}: {case.counter} not counted"
                self.check_level(case, status)
            if case.outcome == "planned":
                path = self.path_for(stamp)
                assert path is not None, f"{case.name}: documented as planned, but no Path for it"
                expected_stamps.append(stamp)
            elif case.outcome == "dropped":  # no Path for it: checked below, once the good frame's Path is in
                assert wait_for(self.node._worker.idle, 10.0)  # noqa: SLF001
            elif case.outcome == "undelivered":  # DDS hands the node nothing
                assert self.node._stats.counts["frames_received"] == received, f"{case.name}: a frame arrived"  # noqa: SLF001
            else:  # ignored
                assert list(self.node._odom) == odom, f"{case.name}: the odometry was used"  # noqa: SLF001
                assert vars(self.node._command) == command, f"{case.name}: the command was taken"  # noqa: SLF001
            if case.warning is not None:
                assert wait_for(lambda: self.count_logged(case.warning) >= 1, 5.0), \
                    f"{case.name}: nothing logged matching {case.warning!r}"
                self.first_seen_s.setdefault(case.warning, time.monotonic())
                self.warnings.add(case.warning)
            if k == case.repeat - 1 and case.cleanup is not None:
                case.cleanup()
            expected_stamps.append(self.good())
            planned = self.node._stats.counts["frames_planned"]  # noqa: SLF001
            assert self.diag_where(sent, lambda lvl, m, v, n=planned: lvl < ERROR and int(v["frames_planned"]) >= n), \
                f"{case.name}: /diagnostics did not leave ERROR after the good plan"
        if case.counter is not None and case.per_send is None:
            self.settle(case.counter)
        after = self.counts()
        delta = {c: after[c] - before[c] for c in FAULT_COUNTERS if after[c] != before[c]}
        if case.counter is None:
            expected: dict[str, int] = {}
        elif case.per_send is None:  # exactly one count per /diagnostics period that reported it
            reported = [a.status[0] for a in list(self.diags)[start:]]
            expected = {case.counter: sum(case.diag_text in s.message for s in reported)}
            assert expected[case.counter] >= 2, f"{case.name}: {expected}"
        else:
            expected = {case.counter: case.repeat * case.per_send}
        assert delta == expected, f"{case.name}: counters moved by {delta}, expected {expected}"
        got_stamps = [_stamp(p) for p in list(self.paths)[planned_before:]]  # in publishing order (reliable)
        assert got_stamps == expected_stamps, f"{case.name}: Paths for {got_stamps}, expected {expected_stamps} " \
                                              "(a frame documented as dropped was planned, or a good one was not)"
        assert after["frames_planned"] - before["frames_planned"] == len(expected_stamps), \
            f"{case.name}: frames_planned does not match the Paths received"
        if case.counter is not None:  # /diagnostics reports the same count
            assert self.diag_where(start, lambda lvl, m, v: int(v[case.counter]) == after[case.counter]), case.name
        if case.warning is not None:
            n = self.count_logged(case.warning)
            assert 1 <= n <= self.allowed(case.warning), \
                f"{case.name}: {n} log lines matching {case.warning!r}, at most {self.allowed(case.warning)} allowed"
        self.ran.append(case.name)

    def moved(self, before: dict[str, int]) -> dict[str, int]:
        now = dict(self.node._stats.counts)  # noqa: SLF001
        return {c: now[c] - before[c] for c in COUNTERS if now[c] != before[c]}

    def check_level(self, case: Case, status: tuple[int, str, dict[str, str]]) -> None:
        if case.level is not None:
            assert status[0] == case.level, f"{case.name}: level {status[0]} ({status[1]}), expected {case.level}"
        assert case.diag_text in status[1], f"{case.name}: {case.diag_text!r} not in {status[1]!r}"

    def settle(self, counter: str) -> None:
        """Wait until ``counter`` stops moving in /diagnostics (a graph change takes a moment to be seen)."""
        def still() -> bool:
            vals = [int({kv.key: kv.value for kv in a.status[0].values}[counter]) for a in list(self.diags)[-4:]]
            return len(vals) == 4 and len(set(vals)) == 1 and int(vals[-1]) == self.node._stats.counts[counter]  # noqa: SLF001
        assert wait_for(still, 15.0), f"{counter} kept growing after the cause was gone"


# --- bad inputs ---------------------------------------------------------------------------------------------

def _raw(m: Matrix, edit: Callable[[Image], None], t_ns: int | None = None) -> int:
    msg = m.frame(t_ns)
    edit(msg)
    return m.send_frame(msg)


def _set(**fields: Any) -> Callable[[Image], None]:
    def edit(msg: Any) -> None:
        for k, v in fields.items():
            setattr(msg, k, v)
    return edit


def _raw_image(m: Matrix, rgb: np.ndarray, as_encoding: str, **fields: Any) -> int:
    msg = conversions.rgb_to_image(rgb, m.now(), "camera_front", as_encoding)
    _set(**fields)(msg)
    return m.send_frame(msg)


def _compressed(m: Matrix, data: bytes, fmt: str = "jpeg") -> int:
    msg = m.frame()
    msg.format = images.compressed_format_string(fmt) if fmt in ("jpeg", "png") else fmt
    msg.data = data
    return m.send_frame(msg)


def _huge_jpeg_header(width: int, height: int) -> bytes:
    """SOI, a baseline SOF0 declaring ``width`` x ``height`` px with three components, EOI."""
    sof = struct.pack(">BHHB", 8, height, width, 3) + bytes([1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1])
    return b"\xff\xd8" + b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof + b"\xff\xd9"


def _backwards(m: Matrix) -> int:
    now = m.now()
    ahead = m.send_frame(m.frame(now + 50_000_000))
    assert m.path_for(ahead) is not None  # planned 50 ms ahead
    m.planned_extra.append(ahead)
    return m.send_frame(m.frame(now))  # then one earlier


def _injected(m: Matrix, fault: str) -> int:
    """The engine fails (raises, or returns NaN waypoints) on the next frame only."""
    runner = m.node._runner  # noqa: SLF001
    real = runner.step

    def once(*args: Any, **kwargs: Any) -> Any:
        del runner.step  # the real method again from the next frame
        if fault == "raise":
            raise RuntimeError("injected engine fault")
        plan = real(*args, **kwargs)
        return dataclasses.replace(plan, waypoints_xyyaw=np.full_like(plan.waypoints_xyyaw, np.nan))

    runner.step = once
    return m.send_frame(m.frame())


def _bad_odom(m: Matrix, speed: float, yaw_rate: float, ahead_ns: int = 0) -> None:
    m.odom(m.now() + ahead_ns, speed, yaw_rate)


def _qos_incompatible(m: Matrix) -> int:
    """A best-effort camera publisher while the node subscribes reliable: incompatible, it delivers nothing."""
    pub = m.probe.create_publisher(Image, CAMERA, qos_profile_sensor_data)
    m.qos_pubs = [*getattr(m, "qos_pubs", []), pub]
    msg = m.frame()
    pub.publish(msg)
    return _stamp(msg)


def _drop_qos_publishers(m: Matrix) -> None:
    for pub in m.qos_pubs:
        m.probe.destroy_publisher(pub)
    m.qos_pubs = []


def _wrong_type(m: Matrix) -> None:
    """A std_msgs/String publisher on the camera topic, in a participant of its own (one cannot hold both)."""
    import rclpy
    from std_msgs.msg import String

    m.other = rclpy.Context()
    rclpy.init(context=m.other, domain_id=int(os.environ["ROS_DOMAIN_ID"]))
    m.other_node = rclpy.create_node("wrong_camera", context=m.other)
    m.other_node.create_publisher(String, CAMERA, 10).publish(String(data="not an image"))


def _drop_wrong_type(m: Matrix) -> None:
    import rclpy

    m.other_node.destroy_node()
    rclpy.shutdown(context=m.other)
    full = m.node.resolve_topic_name(CAMERA)
    assert wait_for(lambda: all(i.topic_type != "std_msgs/msg/String"
                                for i in m.node.get_publishers_info_by_topic(full)), 10.0)


BAD_FRAME = dict(counter="bad_frames", outcome="dropped", level=ERROR, diag_text="no good plan since: bad frame")
BAD_ODOM = dict(counter="bad_odometry", outcome="ignored", level=ERROR, diag_text="impossible speed", repeat=1)
ODOM_SPEED = r"odometry speed .* is not a finite speed within 70 m/s: ignored"
ODOM_YAW = r"odometry yaw rate .* is not a finite yaw rate within 3 rad/s: ignored"
CORRUPT_JPEG = r"bad camera frame skipped: compressed jpeg image of \d+ bytes is corrupt"


def raw_cases(m: Matrix, h: int, w: int) -> list[Case]:
    rgb = m.rgb
    return [
        Case("unknown encoding", lambda: _raw(m, _set(encoding="weird_encoding_16")), **BAD_FRAME,
             warning=r"bad camera frame skipped: .*'weird_encoding_16'"),
        Case("16UC1 (cv_bridge's mono16) is decoded", lambda: _raw_image(m, rgb, "mono16", encoding="16UC1"),
             None, "planned"),
        Case("width 0", lambda: _raw(m, _set(width=0)), **BAD_FRAME, warning=r"image has zero size"),
        Case("height 0", lambda: _raw(m, _set(height=0)), **BAD_FRAME, warning=r"image has zero size"),
        Case("data shorter than height x step", lambda: _raw(m, lambda msg: setattr(msg, "data", msg.data[:-1])),
             **BAD_FRAME, warning=r"rgb8 image data is truncated"),
        Case("data longer than height x step: the rest ignored",
             lambda: _raw(m, lambda msg: setattr(msg, "data", msg.data + msg.data[:4096])), None, "planned"),
        Case("step smaller than width x 3", lambda: _raw(m, _set(step=3 * w - 3)), **BAD_FRAME,
             warning=r"image step \d+ is smaller than its width"),
        Case("yuv422 of odd width", lambda: _raw(m, _set(encoding="yuv422", width=255, step=510,
                                                          data=bytes(510 * h))),
             **BAD_FRAME, warning=r"4:2:2 YUV packs pixels in pairs"),
        Case("1x1 Bayer", lambda: _raw(m, _set(encoding="bayer_rggb8", width=1, height=1, step=1, data=b"\x80")),
             **BAD_FRAME, warning=r"too small to demosaic"),
        Case("mono8 frame", lambda: _raw_image(m, rgb, "mono8"), None, "planned"),
        Case("tiny 2x2 frame is centre-cropped to the model's 2:1, then resized",
             lambda: _raw_image(m, rgb[:2, :2].copy(), "rgb8"), "cropped_frames", "planned",
             warning=r"camera images are 2x2 px .* centre-cropped to 2x1 px \(rows 0-0\), then resized"),
        Case("stale frame", lambda: m.send_frame(m.frame(m.now() - 120_000_000_000)), "stale_frames", "dropped",
             warning=r"ms old skipped \(max_frame_age_ms", level=WARN, diag_text="older than max_frame_age_ms"),
        Case("frame a day in the future", lambda: m.send_frame(m.frame(m.now() + DAY_NS)), "future_frames",
             "dropped", warning=r"ms in the future skipped", level=WARN, diag_text="stamped in the future"),
        Case("stamp going backwards", lambda: _backwards(m), "time_jumps", "planned",
             warning=r"camera stamp went back by", level=WARN, diag_text="time jumped backwards"),
        Case("duplicated stamp", lambda: m.send_frame(m.frame(m.node._last_stamp_ns)),  # noqa: SLF001
             "duplicate_frames", "dropped"),
        Case("engine exception (injected)", lambda: _injected(m, "raise"), "engine_errors", "dropped",
             warning=r"engine failed: RuntimeError: injected engine fault", level=ERROR,
             diag_text="no good plan since: engine failed"),
        Case("NaN waypoints (injected)", lambda: _injected(m, "nan"), "nan_plans", "dropped",
             warning=r"non-finite waypoints", level=ERROR, diag_text="no good plan since: the engine returned"),
        Case("best-effort camera publisher, reliable subscription", lambda: _qos_incompatible(m),
             "qos_incompatible", "undelivered", warning=r"camera publisher on .* incompatible RELIABILITY QoS",
             cleanup=lambda: _drop_qos_publishers(m)),
        Case("std_msgs/String publisher on the camera topic", lambda: _wrong_type(m), "camera_type_mismatch",
             "undelivered", warning=r"carries std_msgs/msg/String", level=WARN, diag_text="another message type",
             per_send=None, repeat=1, cleanup=lambda: _drop_wrong_type(m)),
        Case("odometry speed NaN", lambda: _bad_odom(m, float("nan"), 0.0), **BAD_ODOM, warning=ODOM_SPEED),
        Case("odometry speed +inf", lambda: _bad_odom(m, float("inf"), 0.0), **BAD_ODOM, warning=ODOM_SPEED),
        Case("odometry speed 10000 m/s", lambda: _bad_odom(m, 10_000.0, 0.0), **BAD_ODOM, warning=ODOM_SPEED),
        Case("odometry speed 1e30", lambda: _bad_odom(m, 1e30, 0.0), **BAD_ODOM, warning=ODOM_SPEED),
        Case("odometry speed -71 m/s", lambda: _bad_odom(m, -71.0, 0.0), **BAD_ODOM, warning=ODOM_SPEED),
        Case("odometry yaw rate NaN", lambda: _bad_odom(m, 6.0, float("nan")), **BAD_ODOM, warning=ODOM_YAW),
        Case("odometry yaw rate 4 rad/s", lambda: _bad_odom(m, 6.0, 4.0), **BAD_ODOM, warning=ODOM_YAW),
        Case("odometry stamped a day ahead", lambda: _bad_odom(m, 6.0, 0.25, DAY_NS), **BAD_ODOM,
             warning=r"odometry on /odom stamped .* s ahead of this node's clock"),
        Case("route command 3", lambda: m.command_pub.publish(UInt8(data=3)), "bad_commands", "ignored",
             warning=r"route command \d+ on /route/command is not 0"),
        Case("route command 255", lambda: m.command_pub.publish(UInt8(data=255)), "bad_commands", "ignored",
             warning=r"route command \d+ on /route/command is not 0"),
    ]


def compressed_cases(m: Matrix) -> list[Case]:
    jpeg = images.encode_compressed(m.rgb, "jpeg")
    png = images.encode_compressed(m.rgb, "png")
    noise = np.random.default_rng(7).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    return [
        Case("zero-byte JPEG", lambda: _compressed(m, b""), **BAD_FRAME, warning=r"compressed jpeg image is empty"),
        Case("truncated JPEG", lambda: _compressed(m, jpeg[: len(jpeg) // 2]), **BAD_FRAME, warning=CORRUPT_JPEG),
        Case("random bytes as JPEG", lambda: _compressed(m, noise), **BAD_FRAME, warning=CORRUPT_JPEG),
        Case("corrupt JPEG", lambda: _compressed(m, jpeg[:40] + jpeg[40:200][::-1]), **BAD_FRAME,
             warning=CORRUPT_JPEG),
        Case("truncated PNG", lambda: _compressed(m, png[: len(png) // 2], "png"), **BAD_FRAME,
             warning=r"compressed png image of \d+ bytes is corrupt"),
        Case("PNG header declaring 30000x30000", lambda: _compressed(m, huge_png_header(30000, 30000), "png"),
             **BAD_FRAME, warning=r"compressed png image .* 30000x30000 px, .*refused before decoding"),
        Case("JPEG header declaring 30000x30000", lambda: _compressed(m, _huge_jpeg_header(30000, 30000)),
             **BAD_FRAME, warning=r"compressed jpeg image .* 30000x30000 px, .*refused before decoding"),
        Case("unsupported compressed format", lambda: _compressed(m, jpeg, "bmp"), **BAD_FRAME,
             warning=r"compressed image format 'bmp' is not supported"),
    ]


def again(cases: list[Case]) -> list[Case]:
    """Faults a second time, more than THROTTLE_PROOF_S after the first, on the compressed input: those logged
    again while they last (stale, future, backwards, engine) and some said once ever (odometry, command, frame)."""
    names = {"stale frame", "frame a day in the future", "stamp going backwards", "engine exception (injected)",
             "NaN waypoints (injected)", "odometry speed NaN", "route command 3", "zero-byte JPEG"}
    return [dataclasses.replace(c, name=c.name + " (again)", repeat=1) for c in cases if c.name in names]


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return tiny_model_dir()


def test_every_bad_input_is_counted_said_once_and_the_node_plans_on(model_dir: Path,
                                                                    capfd: pytest.CaptureFixture[str]) -> None:
    t_start = time.monotonic()
    with spinning(_node(model_dir, odom_topic="/odom", diagnostics_period_s=0.1,
                        max_frame_age_ms=MAX_FRAME_AGE_MS), Probe) as (_, (node, probe)):
        m = Matrix(node, probe, LogWatch(capfd))
        _wait_active(probe, node, m.camera)
        assert wait_for(lambda: m.odom_pub.get_subscription_count() and m.command_pub.get_subscription_count(), 5.0)
        h, w = node._runner.config.camera.height_px, node._runner.config.camera.width_px  # noqa: SLF001
        m.rgb = _frames(1, h, w)[0]
        m.command_pub.publish(UInt8(data=0))
        assert wait_for(lambda: node._command.value == 0, 5.0)  # noqa: SLF001 - a good command, kept through the bad ones
        m.good()
        first = raw_cases(m, h, w)
        for case in first:
            m.run(case)
        # the compressed input (use_compressed takes effect on the next activate: same node, same counters)
        assert probe.set_parameter(NODE, "use_compressed", True).successful
        assert probe.transition(NODE, "deactivate") and probe.transition(NODE, "activate")
        m.camera = Camera(probe, topic=CAMERA + "/compressed", compressed=True)
        assert wait_for(lambda: m.camera.pub.get_subscription_count() > 0, 5.0)
        m.good()
        second = compressed_cases(m)
        for case in second:
            m.run(case)
        repeats = again(first + second)
        assert len(repeats) == 8
        newest_first = max(m.first_seen_s[c.warning] for c in repeats)
        time.sleep(max(0.0, newest_first + THROTTLE_PROOF_S - time.monotonic()))
        for case in repeats:
            m.run(case)
        assert probe.state(NODE) == "active"
        lines = m.log_lines()
    # every warning or error the node logged belongs to a case, and each kind was said once over the whole run
    unexplained = [text for _, text in lines if not any(re.search(p, text) for p in m.warnings)]
    assert not unexplained, f"log lines no case explains: {unexplained}"
    per_kind = {p: sum(1 for _, text in lines if re.search(p, text)) for p in m.warnings}
    assert all(1 <= n <= m.allowed(p) for p, n in per_kind.items()), per_kind
    assert len({c.name for c in first + second}) == len(first + second) >= 24
    assert len(m.ran) == len(first) + len(second) + len(repeats)
    print(f"\n{len(m.ran)} cases ({len(first) + len(second)} distinct) in {time.monotonic() - t_start:.1f} s; "
          f"log lines per kind: {dict(sorted(per_kind.items()))}")
