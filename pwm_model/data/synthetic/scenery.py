"""Static roadside objects that give motion cues: poles, delineator posts, trees, bushes, buildings, guard rails.

Every object is one or more boxes (a tree is a trunk and a canopy). Objects are generated once per drive along
the whole road and kept sorted by ``s`` so the renderer can pick those in range with a binary search.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pwm_model.data.synthetic.road import Road

# sub-box draw order inside one object follows the row order (e.g. a tree: canopy, then trunk)
KIND_POLE, KIND_POST, KIND_TREE, KIND_BUSH, KIND_BUILDING, KIND_RAIL, KIND_PATCH = range(7)
KIND_NAMES = ("pole", "post", "tree", "bush", "building", "guard_rail", "patch")

_BUILDING_COLORS = np.array([(190, 175, 150), (160, 150, 140), (150, 85, 65), (200, 195, 185), (120, 125, 135),
                             (175, 160, 120), (100, 90, 85)], float)


@dataclass(frozen=True)
class Scenery:
    """Boxes of all static objects, sorted by ``s_m``. Ground patches are flat quads (height 0)."""

    boxes: np.ndarray  # (M, 7) world boxes (x, y, z_centre, l, w, h, yaw)
    colors: np.ndarray  # (M, 3) float RGB
    group: np.ndarray  # (M,) object index: sub-boxes of one object share it
    kind: np.ndarray  # (M,) int KIND_*
    s_m: np.ndarray  # (M,) position along the road (sorted)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def in_range(self, s0_m: float, s1_m: float) -> slice:
        return slice(int(np.searchsorted(self.s_m, s0_m)), int(np.searchsorted(self.s_m, s1_m)))


def empty_scenery() -> Scenery:
    return Scenery(np.zeros((0, 7)), np.zeros((0, 3)), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))


class _Builder:
    def __init__(self) -> None:
        self.rows: list[tuple[float, float, float, float, float, float, float, float, int, int]] = []
        self.colors: list[tuple[float, float, float]] = []
        self.n_groups = 0

    def add(self, s: float, d: float, z0: float, length: float, width: float, height: float, color, kind: int,
            new_group: bool = True, yaw_offset: float = 0.0) -> None:
        if new_group:
            self.n_groups += 1
        # (s, d, z_centre, l, w, h, yaw offset, unused, group, kind)
        self.rows.append((s, d, z0 + height / 2, length, width, height, yaw_offset, 0.0, self.n_groups - 1, kind))
        self.colors.append(tuple(float(c) for c in color))


def _jit(rng: np.random.Generator, rgb: tuple[float, float, float] | np.ndarray, amount: float) -> np.ndarray:
    return np.clip(np.asarray(rgb, float) + rng.normal(0, amount, 3), 0, 255)


def generate_scenery(rng: np.random.Generator, road: Road, grass_patch_rgb: tuple[float, float, float]) -> Scenery:
    """Roadside objects along the whole road, on both sides, in zones (open, forest, town)."""
    b = _Builder()
    length = road.length_m
    edge = {+1: road.left_edge_d_m + road.shoulder_m, -1: road.right_edge_d_m - road.shoulder_m}
    pole_spacing = float(rng.uniform(28.0, 50.0))
    pole_side = int(rng.choice([-1, 1]))
    trunk_rgb = np.array([95.0, 70.0, 50.0])
    leaf_rgb = _jit(rng, (50.0, 85.0, 40.0), 10.0)
    # one stream per walk along the road: a longer road of the same seed starts with the same objects
    walks = {name: np.random.default_rng(int(seed)) for name, seed in zip(
        ("zones-1", "zones1", "poles", "posts", "rails-1", "rails1", "patches"), rng.integers(0, 2**62, 7))}
    for side in (-1, 1):
        rng = walks[f"zones{side}"]
        out = edge[side]
        s = float(rng.uniform(0, 20))
        zone_end, zone = 0.0, "open"
        while s < length:
            if s >= zone_end:
                zone = str(rng.choice(["open", "forest", "town"], p=[0.45, 0.35, 0.2]))
                zone_end = s + float(rng.uniform(150.0, 450.0))
            if zone == "town":
                lng = float(rng.uniform(8.0, 20.0))
                off = float(rng.uniform(8.0, 22.0))
                depth = float(rng.uniform(8.0, 16.0))
                color = _jit(rng, _BUILDING_COLORS[rng.integers(len(_BUILDING_COLORS))], 8.0)
                b.add(s + lng / 2, side * (abs(out) + off + depth / 2), 0.0, lng, depth, float(rng.uniform(5, 16)),
                      color, KIND_BUILDING)
                s += lng + float(rng.uniform(3.0, 15.0))
                continue
            dense = zone == "forest"
            n = int(rng.integers(1, 4 if dense else 2))
            for _ in range(n):
                off = float(rng.uniform(2.5, 9.0) if dense else rng.uniform(3.0, 18.0))
                if rng.random() < (0.75 if dense else 0.55):
                    trunk_h = float(rng.uniform(1.4, 2.6))
                    crown_w = float(rng.uniform(2.2, 4.5))
                    crown_h = float(rng.uniform(2.5, 5.5))
                    ds = float(rng.uniform(-3, 3))
                    d = side * (abs(out) + off + crown_w / 2)
                    leaf = _jit(rng, leaf_rgb, 12.0)
                    yaw = float(rng.uniform(0, 1.5))
                    # crown: a narrower top turned 45 degrees over a wider base (an octagon-like silhouette);
                    # drawn top first, then base, then trunk (the camera is usually below the crown)
                    b.add(s + ds, d, trunk_h + 0.55 * crown_h, 0.7 * crown_w, 0.7 * crown_w, 0.45 * crown_h,
                          leaf * 1.08, KIND_TREE, yaw_offset=yaw + 0.785)
                    b.add(s + ds, d, trunk_h, crown_w, crown_w, 0.6 * crown_h, leaf, KIND_TREE, new_group=False,
                          yaw_offset=yaw)
                    b.add(s + ds, d, 0.0, 0.35, 0.35, trunk_h + 0.3, _jit(rng, trunk_rgb, 8.0), KIND_TREE,
                          new_group=False)
                else:
                    w = float(rng.uniform(0.8, 2.0))
                    b.add(s + float(rng.uniform(-3, 3)), side * (abs(out) + off + w / 2), 0.0, w * 1.3, w,
                          float(rng.uniform(0.6, 1.4)), _jit(rng, leaf_rgb * 1.1, 12.0), KIND_BUSH)
            s += float(rng.uniform(6.0, 14.0) if dense else rng.uniform(12.0, 40.0))
    # regular poles on one side and delineator posts on both: strong, evenly spaced motion cues
    rng = walks["poles"]
    for s in np.arange(rng.uniform(0, pole_spacing), length, pole_spacing):
        b.add(float(s), pole_side * (abs(edge[pole_side]) + 0.8), 0.0, 0.25, 0.25, float(rng.uniform(6.5, 8.0)),
              (150, 150, 150), KIND_POLE)
    rng = walks["posts"]
    for side in (-1, 1):
        for s in np.arange(rng.uniform(0, 25.0), length, 25.0):
            b.add(float(s), side * (abs(edge[side]) + 0.35), 0.0, 0.12, 0.12, 1.0, (235, 235, 230), KIND_POST)
    # guard rails on some stretches (more on curves)
    for side in (-1, 1):
        rng = walks[f"rails{side}"]
        s = 0.0
        while s < length:
            span = float(rng.uniform(60.0, 250.0))
            curvy = float(np.max(np.abs(road.curvature_at(np.linspace(s, s + span, 20))))) > 1 / 250.0
            if rng.random() < (0.75 if curvy else 0.25):
                for s_seg in np.arange(s, min(s + span, length), 4.0):
                    b.add(float(s_seg + 2.0), side * (abs(edge[side]) + 0.15), 0.3, 4.0, 0.12, 0.5,
                          (185, 185, 180), KIND_RAIL)
            s += span + float(rng.uniform(40.0, 200.0))
    # flat grass patches (ground texture that moves with the world)
    patch = np.asarray(grass_patch_rgb, float)
    rng = walks["patches"]
    for s in np.arange(0, length, 9.0):
        for side in (-1, 1):
            if rng.random() < 0.6:
                w = float(rng.uniform(2.0, 6.0))
                b.add(float(s + rng.uniform(0, 9)), side * (abs(edge[side]) + float(rng.uniform(1.0, 25.0))), 0.0,
                      float(rng.uniform(3.0, 10.0)), w, 0.0, _jit(rng, patch, 6.0), KIND_PATCH,
                      yaw_offset=float(rng.uniform(-0.5, 0.5)))
    return _finish(b, road)


def _finish(b: _Builder, road: Road) -> Scenery:
    if not b.rows:
        return empty_scenery()
    rows = np.array(b.rows, float)
    colors = np.array(b.colors, float)
    order = np.argsort(rows[:, 0], kind="stable")
    rows, colors = rows[order], colors[order]
    s, d = rows[:, 0], rows[:, 1]
    xy, h = road.frenet_to_world(s, d)
    boxes = np.stack([xy[:, 0], xy[:, 1], rows[:, 2], rows[:, 3], rows[:, 4], rows[:, 5], h + rows[:, 6]], axis=1)
    group, kind = rows[:, 8].astype(np.int64), rows[:, 9].astype(np.int64)
    keep = _clear_of_road(road, boxes, s) & (s >= 0) & (s <= road.length_m)
    # drop whole objects if any of their boxes intrudes on the road (e.g. on the inside of a tight curve)
    keep &= ~np.isin(group, np.unique(group[~keep]))
    return Scenery(boxes[keep], colors[keep], group[keep], kind[keep], s[keep])


def _clear_of_road(road: Road, boxes: np.ndarray, s_m: np.ndarray) -> np.ndarray:
    """True for boxes whose footprint stays off the road and its shoulders, wherever the road comes near.

    Each box is checked against its nearest centre-line point (searched within 150 m along the road): on a tight
    curve a box placed far out on the inside is nearest to another part of the road and lands on it.
    """
    d_lo = road.right_edge_d_m - road.shoulder_m
    d_hi = road.left_edge_d_m + road.shoulder_m
    ok = np.ones(len(boxes), bool)
    step, window_m, chunk = 2, 150.0, 256
    ds = float(road.s_m[1] - road.s_m[0])
    for i in range(0, len(boxes), chunk):
        p = boxes[i:i + chunk, :2]
        j0 = max(int((s_m[i] - window_m) / ds), 0)
        j1 = min(int((s_m[min(i + chunk, len(boxes)) - 1] + window_m) / ds) + 1, len(road.s_m))
        idx = np.arange(j0, j1, step)
        c = road.xy_m[idx]
        near = idx[np.argmin(np.sum((p[:, None, :] - c[None, :, :]) ** 2, axis=2), axis=1)]
        hd = road.heading_rad[near]
        v = p - road.xy_m[near]
        d_n = -np.sin(hd) * v[:, 0] + np.cos(hd) * v[:, 1]
        b = boxes[i:i + chunk]
        rel = b[:, 6] - hd
        half = np.abs(b[:, 3] / 2 * np.sin(rel)) + np.abs(b[:, 4] / 2 * np.cos(rel))
        ok[i:i + chunk] = (d_n - half > d_hi) | (d_n + half < d_lo)
    return ok
