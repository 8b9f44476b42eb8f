"""Procedural roads: a centre line of straights, clothoid transitions and arcs, with lanes on both sides.

The reference line is the centre divider. Frenet coordinates ``(s, d)``: ``s`` metres along the reference line,
``d`` metres to its left (REP-103, y left). Traffic keeps right: the ego direction's lanes lie at ``d < 0``
(lane 0 next to the divider, lane ``n_forward - 1`` at the road edge), the oncoming lanes at ``d > 0``.
Lane "left" of lane i is lane i - 1 (towards the divider), the direction of route command 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ROAD_STYLES = ("mixed", "curvy", "gentle")
_DS_M = 0.5  # sampling step of the centre line
_MAX_HEADING_RAD = math.radians(75.0)  # the road keeps heading within +-75 deg of +x, so it never meets itself


@dataclass(frozen=True)
class Road:
    """A sampled centre line with its lane layout (all arrays share the sample index)."""

    s_m: np.ndarray  # (N,) arc length
    xy_m: np.ndarray  # (N, 2) world position of the reference line
    heading_rad: np.ndarray  # (N,) unwrapped heading
    kappa_1pm: np.ndarray  # (N,) signed curvature (positive turns left)
    lane_width_m: float = 3.5
    n_forward: int = 2  # lanes in the ego direction
    n_oncoming: int = 1
    shoulder_m: float = 2.0  # paved shoulder beyond each outer edge line
    divider_double: bool = False  # double solid centre line (else a single solid line)

    @property
    def length_m(self) -> float:
        return float(self.s_m[-1])

    def lane_d_m(self, lane: int) -> float:
        """Lateral offset of the centre of forward lane ``lane`` (0 = next to the divider)."""
        return -(lane + 0.5) * self.lane_width_m

    def oncoming_d_m(self, lane: int) -> float:
        """Lateral offset of the centre of oncoming lane ``lane`` (0 = next to the divider)."""
        return (lane + 0.5) * self.lane_width_m

    def lane_of(self, d_m: float) -> int:
        """The forward lane containing offset ``d_m`` (clamped to the existing lanes)."""
        return int(np.clip(math.floor(-d_m / self.lane_width_m), 0, self.n_forward - 1))

    @property
    def right_edge_d_m(self) -> float:
        return -self.n_forward * self.lane_width_m

    @property
    def left_edge_d_m(self) -> float:
        return self.n_oncoming * self.lane_width_m

    def curvature_at(self, s_m: np.ndarray | float) -> np.ndarray:
        return np.interp(s_m, self.s_m, self.kappa_1pm)

    def heading_at(self, s_m: np.ndarray | float) -> np.ndarray:
        return np.interp(s_m, self.s_m, self.heading_rad)

    def frenet_to_world(self, s_m: np.ndarray | float, d_m: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """World points (..., 2) and the road heading (...) at Frenet coordinates (broadcast)."""
        s, d = np.broadcast_arrays(np.asarray(s_m, float), np.asarray(d_m, float))
        x = np.interp(s, self.s_m, self.xy_m[:, 0])
        y = np.interp(s, self.s_m, self.xy_m[:, 1])
        h = np.interp(s, self.s_m, self.heading_rad)
        # beyond either end the line continues straight
        s0, s1 = self.s_m[0], self.s_m[-1]
        before, after = np.minimum(s - s0, 0.0), np.maximum(s - s1, 0.0)
        ext = before + after
        x = x + ext * np.cos(h)
        y = y + ext * np.sin(h)
        return np.stack([x - d * np.sin(h), y + d * np.cos(h)], axis=-1), h

    def world_to_frenet(self, x_m: float, y_m: float, s_guess_m: float, window_m: float = 30.0) -> tuple[float, float]:
        """(s, d) of a world point, searching the centre line within ``window_m`` of ``s_guess_m``."""
        i0 = max(int((s_guess_m - window_m) / _DS_M), 0)
        i1 = min(int((s_guess_m + window_m) / _DS_M) + 2, len(self.s_m))
        if i1 - i0 < 2:
            i0, i1 = max(len(self.s_m) - 2, 0), len(self.s_m)
        p = np.array([x_m, y_m])
        seg = self.xy_m[i0:i1]
        i = i0 + int(np.argmin(np.sum((seg - p) ** 2, axis=1)))
        i = min(max(i, 0), len(self.s_m) - 2)
        h = self.heading_rad[i]
        t = np.array([math.cos(h), math.sin(h)])
        n = np.array([-t[1], t[0]])
        v = p - self.xy_m[i]
        return float(self.s_m[i] + v @ t), float(v @ n)


def _integrate(kappa: np.ndarray, heading0: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Heading and positions from curvature samples spaced ``_DS_M`` (midpoint rule)."""
    heading = heading0 + np.concatenate([[0.0], np.cumsum(0.5 * (kappa[1:] + kappa[:-1]) * _DS_M)])
    hm = 0.5 * (heading[1:] + heading[:-1])
    x = np.concatenate([[0.0], np.cumsum(np.cos(hm) * _DS_M)])
    y = np.concatenate([[0.0], np.cumsum(np.sin(hm) * _DS_M)])
    return heading, np.stack([x, y], axis=1)


def road_from_curvature(kappa_1pm: np.ndarray, **layout: float | int | bool) -> Road:
    """A road whose centre line starts at the origin heading +x with the given curvature samples."""
    kappa = np.asarray(kappa_1pm, float)
    heading, xy = _integrate(kappa)
    s = np.arange(len(kappa)) * _DS_M
    return Road(s_m=s, xy_m=xy, heading_rad=heading, kappa_1pm=kappa, **layout)


def straight_road(length_m: float = 400.0, **layout: float | int | bool) -> Road:
    """A straight road along +x (tests and examples)."""
    return road_from_curvature(np.zeros(int(length_m / _DS_M) + 1), **layout)


def _ramp(n: int, k0: float, k1: float) -> np.ndarray:
    """Linear curvature change over ``n`` samples (a clothoid)."""
    return np.linspace(k0, k1, max(n, 1), endpoint=False)


def generate_road(rng: np.random.Generator, length_m: float, style: str = "mixed") -> Road:
    """A random road of at least ``length_m``: straights and curves joined by clothoid transitions.

    ``style``: ``curvy`` (tight curves, short straights: the ``curve`` scenario), ``mixed`` or ``gentle``
    (wide curves only: ``cruise``).
    """
    if style not in ROAD_STYLES:
        raise ValueError(f"unknown road style {style!r}")
    radius_m, straight_m, arc_m, first_m = {
        "curvy": ((45.0, 160.0), (25.0, 70.0), (35.0, 110.0), (25.0, 40.0)),
        "mixed": ((90.0, 600.0), (60.0, 260.0), (40.0, 160.0), (90.0, 160.0)),
        "gentle": ((700.0, 1800.0), (150.0, 400.0), (80.0, 200.0), (150.0, 250.0)),
    }[style]
    # the layout first, so that a longer road of the same seed starts with the same road
    layout = {
        "lane_width_m": float(rng.uniform(3.3, 3.8)),
        "n_forward": int(rng.choice([2, 3], p=[0.55, 0.45])),
        "n_oncoming": int(rng.choice([1, 2], p=[0.5, 0.5])),
        "shoulder_m": float(rng.uniform(0.8, 2.6)),
        "divider_double": bool(rng.random() < 0.5),
    }
    parts: list[np.ndarray] = [np.zeros(int(rng.uniform(*first_m) / _DS_M))]
    heading = 0.0
    total = len(parts[0])
    n_needed = int(length_m / _DS_M) + 2
    while total < n_needed:
        radius = float(np.exp(rng.uniform(math.log(radius_m[0]), math.log(radius_m[1]))))
        # turn back towards +x when the road already points away from it
        toward = -np.sign(heading) if heading != 0 else (1.0 if rng.random() < 0.5 else -1.0)
        sign = toward if (abs(heading) > math.radians(25) or rng.random() < 0.6) else -toward
        k = sign / radius
        trans_m = float(np.clip(0.35 * radius, 15.0, 60.0))
        arc = float(rng.uniform(*arc_m))
        # keep the heading bounded: shorten the arc if it would turn too far
        room = _MAX_HEADING_RAD - sign * heading - abs(k) * trans_m  # heading left after both transitions
        arc = float(np.clip(min(arc, room / abs(k)), 0.0, None))
        n_t, n_a = int(trans_m / _DS_M), int(arc / _DS_M)
        curve = np.concatenate([_ramp(n_t, 0.0, k), np.full(n_a, k), _ramp(n_t, k, 0.0)])
        heading += float(np.sum(curve) * _DS_M)
        straight = np.zeros(int(rng.uniform(*straight_m) / _DS_M))
        parts += [curve, straight]
        total += len(curve) + len(straight)
    kappa = np.concatenate(parts)[:n_needed]
    return road_from_curvature(kappa, **layout)
