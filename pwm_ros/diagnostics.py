"""Counters, rates and latency percentiles of the planning node, summarised into one diagnostic status.

Plain Python (no rclpy): the node feeds events in from its callbacks and worker thread, and a timer turns
``summary()`` into ``/diagnostics``. Levels are those of ``diagnostic_msgs/DiagnosticStatus``.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

OK, WARN, ERROR, STALE = 0, 1, 2, 3

COUNTERS = ("frames_received", "frames_planned", "dropped_frames", "stale_frames", "future_frames", "duplicate_frames",
            "bad_frames", "engine_errors", "nan_plans", "time_jumps", "bad_commands", "bad_odometry",
            "qos_incompatible", "camera_type_mismatch", "previews_published", "cropped_frames")


def percentile(values: list[float] | deque[float], q: float) -> float:
    """The q-th percentile (0..100, linear interpolation) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


WARN_KINDS_MAX = 64  # distinct fault kinds the node warns about once each; later kinds are only counted
LOG_PERIOD_S = 60.0  # a fault kind that is logged again while it lasts (stale frames, engine errors): once a minute


class LogLimiter:
    """At most one log line per fault kind every ``period_s`` (thread-safe): a throttle keyed by the kind of fault,
    not by the call site, so two kinds logged from one place (engine errors, NaN plans) are each said."""

    def __init__(self, period_s: float = LOG_PERIOD_S) -> None:
        self.period_s = period_s
        self._lock = threading.Lock()
        self._last_s: dict[str, float] = {}

    def due(self, kind: str, now_s: float) -> bool:
        with self._lock:
            if now_s - self._last_s.get(kind, -math.inf) < self.period_s:
                return False
            self._last_s[kind] = now_s
            return True


def fault_kind(exc: BaseException) -> str:
    """What kind of fault an exception reports: its type and its message with every number replaced, so that
    frames differing only in sizes or byte counts are one kind (``_warn_once`` keys on it)."""
    return f"{type(exc).__name__}: {re.sub(r'[0-9]+(?:[.][0-9]+)?', '#', str(exc))}"


class RateMeter:
    """Events per second over the last ``window_s`` seconds of a monotonic clock."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self._t: deque[float] = deque()

    def tick(self, now_s: float) -> None:
        self._t.append(now_s)
        self._trim(now_s)

    def _trim(self, now_s: float) -> None:
        while self._t and self._t[0] < now_s - self.window_s:
            self._t.popleft()

    def rate_hz(self, now_s: float) -> float:
        self._trim(now_s)
        if len(self._t) < 2:
            return 0.0
        n, span = len(self._t) - 1, self._t[-1] - self._t[0]
        if span <= 0:
            return 0.0
        if now_s - self._t[-1] > 2.0 * span / n:  # events stopped: let the rate decay
            span = now_s - self._t[0]
        return n / span


GAP_FACTOR = 1.5  # a stamp difference of more than this many camera periods means frames went missing
MISSING_WARN_FRAC = 0.10  # missing frames above this share of the camera's (last GAP_WINDOW periods): WARN
GAP_WINDOW = 100  # stamp differences the camera period and the missing share are taken over
GAP_MIN = 30  # differences needed before gaps are counted
PAUSE_S, PAUSE_PERIODS = 2.0, 20  # a longer gap (both) is a pause or a restart of the camera: nothing counted
# Regular stamps: 90 % of the differences within 0.2 periods of a whole number of periods. Stamps jittering by up to
# about 7 % of the period (standard deviation) pass; random or bursty intervals (frames sent on demand) do not.
REGULAR_OFF, REGULAR_Q = 0.2, 90


class StampGaps:
    """Camera frames that never reached the node, counted from the gaps between the header stamps of those that did.

    The camera's period is the median of the last ``GAP_WINDOW`` stamp differences, each divided by the number of
    periods it spans (first judged against their 10th percentile, so that losses do not stretch the period). While
    those differences are regular (``REGULAR_Q`` % of them within ``REGULAR_OFF`` of a whole number of periods), a
    difference of more than ``GAP_FACTOR`` periods counts ``round(difference / period) - 1`` missing frames. Stamps
    going back (a restarted driver, a looping bag), repeated stamps, pauses (over ``PAUSE_S`` and ``PAUSE_PERIODS``
    periods) and irregular streams (frames sent on demand) count nothing. Stamps are camera time: a bag replayed
    at another speed gives the same figures.
    """

    def __init__(self) -> None:
        self._diffs: deque[int] = deque(maxlen=GAP_WINDOW)  # ns between consecutive received stamps
        self._spans: deque[int] = deque(maxlen=GAP_WINDOW)  # camera periods each difference spans (1: none lost)
        self._stamps: deque[int] = deque(maxlen=GAP_WINDOW + 1)  # received stamps since the last restart
        self._last_ns: int | None = None
        self.period_ns = float("nan")
        self.regular = False

    def add(self, stamp_ns: int) -> int:
        """Record the stamp of a received frame; returns how many frames went missing just before it."""
        last = self._last_ns
        if last is not None and stamp_ns == last:
            return 0
        self._last_ns = stamp_ns
        d = stamp_ns - last if last is not None else -1
        pause_ns = max(PAUSE_S * 1e9, PAUSE_PERIODS * self.period_ns) if self.period_ns > 0 else PAUSE_S * 1e9
        if d < 0 or d > pause_ns:  # the first frame, time going back, or a pause: a new stream, same camera
            self._stamps.clear()
            self._stamps.append(stamp_ns)
            return 0
        missing = 0
        if self.regular and d > GAP_FACTOR * self.period_ns:
            missing = round(d / self.period_ns) - 1
        self._diffs.append(d)
        self._spans.append(missing + 1)
        self._stamps.append(stamp_ns)
        self._estimate()
        return missing

    def _estimate(self) -> None:
        if len(self._diffs) < GAP_MIN:
            return
        diffs = sorted(self._diffs)
        period = percentile(diffs, 10)
        for _ in range(2):  # from the 10th percentile, then from that median: the median of what each spans
            period = percentile([x / max(1, round(x / period)) for x in diffs], 50)
        off = [abs(x / period - round(x / period)) if x >= 0.5 * period else 0.5 for x in diffs]
        self.period_ns, self.regular = period, percentile(off, REGULAR_Q) < REGULAR_OFF

    def camera_rate_hz(self) -> float:
        """The camera's own rate from its stamps (NaN until ``GAP_MIN`` differences were seen)."""
        return 1e9 / self.period_ns if self.period_ns > 0 else float("nan")

    def received_rate_hz(self) -> float:
        """Frames received per second of camera time over the last ``GAP_WINDOW`` frames."""
        if len(self._stamps) < 2 or self._stamps[-1] <= self._stamps[0]:
            return float("nan")
        return (len(self._stamps) - 1) * 1e9 / (self._stamps[-1] - self._stamps[0])

    def missing_frac(self) -> float:
        """Missing frames as a share of the camera's frames over the last ``GAP_WINDOW`` differences."""
        total = sum(self._spans)
        return (total - len(self._spans)) / total if total else 0.0


def missing_frames_advice(frac: float, camera_hz: float, received_hz: float, topic: str, reliability: str,
                          compressed: bool) -> str:
    """The warning for camera frames missing by their stamps, with what to do about it."""
    what = f"{frac:.0%} of the camera frames on {topic} never arrived (header stamps: {received_hz:.1f} Hz " \
           f"received of the camera's {camera_hz:.1f} Hz; frames_missing in /diagnostics)"
    if reliability == "best_effort" and not compressed:
        return what + ": a best-effort subscription loses a whole raw frame with any one of its fragments (a 1080p " \
                      "rgb8 frame is 6 MB); set camera_reliability:=reliable (the driver publishes reliable, as " \
                      "REP-2003 asks), or use the compressed input (use_compressed:=true)"
    return what + ": lost before the node (the driver, the network, or a camera_depth the executor outran); for " \
                  "large raw frames use the compressed input (use_compressed:=true) or run on the camera's host"


@dataclass
class Thresholds:
    """What turns a number into a WARN (from the node parameters)."""

    planning_rate_hz: float = 10.0
    camera_timeout_s: float = 1.0
    surprise_warn: float | None = None  # None: no surprise warning (a model without a calibration)
    novelty_warn: float | None = None  # the model's calibrated scene-novelty threshold; None: no novelty warning
    odom_expected: bool = False  # an odometry topic is configured
    odom_timeout_s: float = 0.5


class NodeStats:
    """Thread-safe statistics of one node: the callbacks and the worker record, the diagnostics timer reads."""

    def __init__(self, window: int = 300, rate_window_s: float = 5.0) -> None:
        self._lock = threading.Lock()
        self._window = window
        self._rate_window_s = rate_window_s
        self.engine_state = "unconfigured"
        self.counts = dict.fromkeys(COUNTERS, 0)  # since the node started
        self.frames_missing = 0  # since the node started, by camera stamp gaps (not a fault counter: no frame came)
        self._reported = dict(self.counts)
        self._reported_missing = 0  # frames_missing at the last summary
        self.reset()

    def reset(self) -> None:
        """Clear rates, windows and the fault state, keeping the counters and the engine state (on activate)."""
        with self._lock:
            self.input_rate = RateMeter(self._rate_window_s)
            self.gaps = StampGaps()
            self.plan_rate = RateMeter(self._rate_window_s)
            self.latency_ms: deque[float] = deque(maxlen=self._window)  # camera stamp -> publish (node clock)
            self.cycle_ms: deque[float] = deque(maxlen=self._window)  # whole worker cycle (steady clock)
            self.runner_ms: deque[float] = deque(maxlen=self._window)  # PolicyRunner.step only
            self.frame_age_ms = float("nan")  # age of the last frame when its cycle started
            self.surprise = float("nan")
            self.novelty = float("nan")
            self.warming_up = False
            self.last_frame_s = float("nan")  # steady time of the last camera message
            self.last_plan_s = float("nan")
            self.last_fault_s = float("nan")
            self.last_fault = ""
            self.odom_age_ms = float("nan")
            self.active_since_s = time.monotonic()

    # --- events ---------------------------------------------------------------------------------
    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] += n

    def frame_received(self, now_s: float, replaced: bool,
                       stamp_ns: int | None = None) -> tuple[float, float, float] | None:
        """Count a camera message; with its stamp, also the frames missing before it. Returns ``(missing share,
        camera Hz, received Hz)`` when the share is above ``MISSING_WARN_FRAC`` (else None)."""
        with self._lock:
            self.counts["frames_received"] += 1
            self.counts["dropped_frames"] += int(replaced)
            self.input_rate.tick(now_s)
            self.last_frame_s = now_s
            if stamp_ns is None:
                return None
            missing = self.gaps.add(stamp_ns)
            self.frames_missing += missing
            frac = self.gaps.missing_frac()
            if missing and frac > MISSING_WARN_FRAC:
                return frac, self.gaps.camera_rate_hz(), self.gaps.received_rate_hz()
            return None

    def fault(self, counter: str, message: str, now_s: float) -> None:
        """A bad frame, an engine exception or a NaN plan: counted, and ERROR until the next good plan."""
        with self._lock:
            self.counts[counter] += 1
            self.last_fault, self.last_fault_s = message, now_s

    def planned(self, now_s: float, latency_ms: float, cycle_ms: float, runner_ms: float, frame_age_ms: float,
                surprise: float, warming_up: bool, odom_age_ms: float, novelty: float = float("nan")) -> None:
        with self._lock:
            self.counts["frames_planned"] += 1
            self.plan_rate.tick(now_s)
            self.latency_ms.append(latency_ms)
            self.cycle_ms.append(cycle_ms)
            self.runner_ms.append(runner_ms)
            self.frame_age_ms, self.surprise, self.warming_up = frame_age_ms, surprise, warming_up
            self.odom_age_ms, self.novelty = odom_age_ms, novelty
            self.last_plan_s = now_s

    # --- reading --------------------------------------------------------------------------------
    def overhead_frac(self) -> float:
        """Share of the worker cycle spent outside ``PolicyRunner.step`` (decode, messages, publish)."""
        total = sum(self.cycle_ms)
        return (total - sum(self.runner_ms)) / total if total > 0 else float("nan")

    def values(self, now_s: float) -> dict[str, object]:
        with self._lock:
            return self._values(now_s)

    def _values(self, now_s: float) -> dict[str, object]:
        return {
            "engine_state": self.engine_state,
            "input_rate_hz": self.input_rate.rate_hz(now_s),
            "camera_rate_hz": self.gaps.camera_rate_hz(),  # from the camera's stamps
            "received_rate_hz": self.gaps.received_rate_hz(),  # frames received per second of camera time
            "frames_missing": self.frames_missing,
            "missing_frac": self.gaps.missing_frac(),
            "plan_rate_hz": self.plan_rate.rate_hz(now_s),
            "latency_p50_ms": percentile(self.latency_ms, 50),
            "latency_p99_ms": percentile(self.latency_ms, 99),
            "runner_p50_ms": percentile(self.runner_ms, 50),
            "runner_p99_ms": percentile(self.runner_ms, 99),
            "cycle_p50_ms": percentile(self.cycle_ms, 50),
            "overhead_frac": self.overhead_frac(),
            "frame_age_ms": self.frame_age_ms,
            "odom_age_ms": self.odom_age_ms,
            "surprise": self.surprise,
            "novelty": self.novelty,
            "warming_up": self.warming_up,
            **self.counts,
            "last_fault": self.last_fault,
        }

    def summary(self, now_s: float, active: bool, th: Thresholds, camera_topic: str = "") -> tuple[int, str, dict]:
        """``(level, message, values)``; the message names the worst problems and what to do about them."""
        with self._lock:
            values = self._values(now_s)
            new = {k: self.counts[k] - self._reported[k] for k in COUNTERS}
            self._reported = dict(self.counts)
            new_missing, self._reported_missing = self.frames_missing - self._reported_missing, self.frames_missing
            problems: list[tuple[int, str]] = []
            state = self.engine_state
            if state.startswith("error"):
                problems.append((ERROR, state))
            elif not active:
                problems.append((WARN, f"not active (engine {state}): the planner publishes nothing"))
            else:
                if not math.isnan(self.last_fault_s) and not (self.last_plan_s >= self.last_fault_s):
                    problems.append((ERROR, f"no good plan since: {self.last_fault}"))
                since_frame = now_s - (self.last_frame_s if not math.isnan(self.last_frame_s) else self.active_since_s)
                if since_frame > th.camera_timeout_s:
                    why = (" (its publisher has an incompatible QoS: see the log for the remedy)"
                           if self.counts["qos_incompatible"] else ": check the topic name and camera_reliability")
                    problems.append((WARN, f"no camera frame on {camera_topic or 'the camera topic'} for "
                                           f"{since_frame:.1f} s{why}"))
                if new_missing and values["missing_frac"] > MISSING_WARN_FRAC:
                    problems.append((WARN, f"{values['missing_frac']:.0%} of the camera frames missing by their "
                                           f"stamps ({new_missing} in this period): see the log for the remedy"))
                if new["stale_frames"]:
                    problems.append((WARN, f"{new['stale_frames']} frames older than max_frame_age_ms skipped "
                                           "(slow inference, clock offset, or use_sim_time mismatch)"))
                if new["bad_odometry"]:
                    problems.append((ERROR, f"{new['bad_odometry']} odometry messages with an impossible speed or "
                                            "yaw rate (not finite, or beyond a car's) or stamped ahead of this "
                                            "node's clock ignored: check the odometry source"))
                if new["camera_type_mismatch"]:
                    problems.append((WARN, f"another message type is published on {camera_topic or 'the camera topic'}"
                                           " (see the log for the remedy)"))
                if new["future_frames"]:
                    problems.append((WARN, f"{new['future_frames']} frames stamped in the future skipped (the camera "
                                           "clock is ahead of this node's: check time sync and use_sim_time)"))
                if new["time_jumps"]:
                    problems.append((WARN, "camera time jumped backwards: history reset"))
                if self.warming_up:
                    problems.append((WARN, "warming up: history not yet full"))
                odom_ok = self.odom_age_ms <= 1000.0 * th.odom_timeout_s  # False for NaN (none received)
                if th.odom_expected and self.counts["frames_planned"] and not odom_ok:
                    problems.append((WARN, "no recent odometry: ego speed taken as 0 (check odom_topic)"))
                if th.surprise_warn is not None and self.surprise > th.surprise_warn:
                    problems.append((WARN, f"forecast surprise {self.surprise:.3g} above {th.surprise_warn:g}"))
                if th.novelty_warn is not None and self.novelty > th.novelty_warn:
                    problems.append((WARN, f"scene novelty {self.novelty:.3g} above {th.novelty_warn:g}: the camera "
                                           "sees a scene unlike the training drives"))
                in_hz, plan_hz = values["input_rate_hz"], values["plan_rate_hz"]
                if in_hz >= th.planning_rate_hz and plan_hz < 0.5 * th.planning_rate_hz and self.counts[
                        "frames_planned"] > 0:
                    problems.append((WARN, f"planning at {plan_hz:.1f} Hz, below half of planning_rate_hz"))
            if not problems:
                return OK, f"planning at {values['plan_rate_hz']:.1f} Hz", values
            level = max(p[0] for p in problems)
            return level, "; ".join(p[1] for p in sorted(problems, key=lambda p: -p[0])), values


def surprise_threshold_note(manifest: Any, configured: float) -> str:
    """Where the node's surprise warning threshold comes from (``Manifest.surprise_warn``), one sentence for the log."""
    warn, cal = manifest.surprise_warn(configured), manifest.surprise_calibration
    if configured >= 0:
        return f"surprise warning above {warn:g} (parameter surprise_warn)"
    if warn is not None:
        return (f"surprise warning above {warn:g} {cal.get('unit', '')}: the model's calibration "
                f"(p{cal.get('warn_percentile', 99):g} of {cal.get('values', '?')} held-out plans)")
    return ("the model carries no surprise calibration: no surprise warnings (export it with --surprise-calib DRIVES, "
            "or set surprise_warn)")
