"""The front camera: a pinhole rendering of road, markings, roadside objects and vehicles.

Flat ground (z = 0). Drawing order (painter's algorithm): sky and far hills; ground polygons (grass patches,
shoulders, asphalt, markings, vehicle shadows); a per-row distance haze over the ground (on flat ground the depth of
a ground pixel depends on its row only); then boxes sorted by the distance of their object from the camera, far to
near, each box's camera-facing faces filled with OpenCV, lamps last. Polygons are clipped against the camera's near
plane before projection. Small outputs are rendered at 2x and area-downsampled (smooth edges).

The renderer is stateless: ``render(ego pose, vehicles)`` depends only on its arguments (and the drive's road,
scenery and appearance given at construction).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from pwm_model.config import CameraConfig
from pwm_model.data.synthetic.agents import VehicleView
from pwm_model.data.synthetic.appearance import Appearance
from pwm_model.data.synthetic.road import Road
from pwm_model.data.synthetic.scenery import KIND_PATCH, Scenery, empty_scenery
from pwm_model.geometry import PinholeCamera, box_corners, clip_polygon_near, clip_polygon_near_fast

NEAR_M = 0.3  # near clipping plane (optical z)
_SHIFT = 4  # sub-pixel bits for OpenCV polygon fills
_SCALE = float(1 << _SHIFT)
_LIM = float(2**31 // (1 << _SHIFT) - 1) / 4  # keep fixed-point coordinates well inside int32

# Box faces as corner indices (see geometry.box_corners: bottom c0 +x+y, c1 +x-y, c2 -x-y, c3 -x+y; top = +4)
_FACES = np.array([[0, 1, 5, 4], [2, 3, 7, 6], [3, 0, 4, 7], [1, 2, 6, 5], [4, 5, 6, 7], [3, 2, 1, 0]])
FACE_FRONT, FACE_BACK, FACE_LEFT, FACE_RIGHT, FACE_TOP, FACE_BOTTOM = range(6)
# outward normals in the box frame
_FACE_NORMALS = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], float)

_TIRE = (28.0, 28.0, 30.0)
_GLASS = (45.0, 55.0, 68.0)
_TAIL_OFF = (105.0, 18.0, 20.0)
_TAIL_ON = (215.0, 35.0, 30.0)
_BRAKE = (255.0, 45.0, 40.0)
_AMBER = (255.0, 165.0, 20.0)
_HEAD = (255.0, 250.0, 225.0)
_DRL = (225.0, 228.0, 235.0)
_PLATE = (225.0, 225.0, 215.0)
# A lit lamp (brake, indicator, lamps at night) blooms to at least this fraction of the image width in radius (a bright
# source smears over a real sensor's pixels): a lamp 40 m ahead covers about a pixel of the tiny preset's 32 x 64 view.
LAMP_BLOOM_WIDTH_FRAC = 1.0 / 128.0


def _mix(c: Sequence[float], fog: Sequence[float], f: float) -> tuple[float, float, float]:
    return (c[0] + (fog[0] - c[0]) * f, c[1] + (fog[1] - c[1]) * f, c[2] + (fog[2] - c[2]) * f)


def _scale(c: Sequence[float], k: float) -> tuple[float, float, float]:
    return (min(c[0] * k, 255.0), min(c[1] * k, 255.0), min(c[2] * k, 255.0))


class Renderer:
    """Renders the front camera of one drive. ``render(x, y, yaw, vehicles)`` -> (H, W, 3) uint8 RGB."""

    def __init__(self, camera: CameraConfig, road: Road, scenery: Scenery | None = None,
                 appearance: Appearance | None = None, *, width_px: int | None = None, height_px: int | None = None,
                 view_m: float = 170.0, supersample: int | None = None, dash_m: tuple[float, float] = (3.0, 9.0)
                 ) -> None:
        self.out_w = int(width_px or camera.width_px)
        self.out_h = int(height_px or camera.height_px)
        self.ss = int(supersample if supersample is not None else (2 if self.out_h <= 320 else 1))
        self.cam = PinholeCamera.from_config(camera, self.out_w * self.ss, self.out_h * self.ss)
        self.road = road
        self.scenery = scenery if scenery is not None else empty_scenery()
        self.app = appearance if appearance is not None else Appearance()
        self.view_m = view_m
        self.dash_m = dash_m
        self.w, self.h = self.cam.width_px, self.cam.height_px
        self._r_ob = self.cam.base_from_camera.rotation.T  # base -> optical
        self._t_bo = self.cam.base_from_camera.translation
        self._min_px = 0.6 * self.ss  # skip boxes smaller than this on screen (render pixels)
        self._min_area = 0.15 * self.ss * self.ss  # and faces smaller than this (render pixels squared)
        self._line = cv2.LINE_8
        self._prepare_background()
        self._prepare_strips()
        self._vehicle_cache: dict[tuple, tuple[np.ndarray, list]] = {}
        self._decal_cache: dict[tuple, tuple[np.ndarray, ...]] = {}

    # ------------------------------------------------------------------------------------------------
    # precomputation
    def _prepare_background(self) -> None:
        app, h, w = self.app, self.h, self.w
        self.horizon_v = self.cam.horizon_v()
        hv = int(np.clip(math.floor(self.horizon_v) + 1, 0, h))  # first row below the horizon
        self._h0 = hv
        rows = np.arange(h, dtype=float)
        t = np.clip((self.horizon_v - rows) / max(self.horizon_v, 1.0), 0.0, 1.0) ** 0.6
        sky = (np.asarray(app.sky_horizon)[None] * (1 - t[:, None]) + np.asarray(app.sky_top)[None] * t[:, None])
        bg = np.repeat(sky[:, None, :], w, axis=1)
        bg[hv:] = np.asarray(app.grass) * app.light
        self._background = np.clip(bg, 0, 255).astype(np.uint8)
        # haze over the ground, by row: distance of the ground point seen at (cx, v)
        v_ground = np.arange(hv, h, dtype=float)
        uv = np.stack([np.full_like(v_ground, self.cam.cx), v_ground], axis=1)
        pts, hit = self.cam.pixel_ray_to_ground(uv)
        dist = np.where(hit, np.hypot(pts[:, 0] - self._t_bo[0], pts[:, 1] - self._t_bo[1]), 1e9)
        a = np.clip(app.fade(np.nan_to_num(dist, nan=1e9)), 0.0, 1.0)
        self._fog_keep = np.round((1.0 - a) * 256.0).astype(np.uint16)[:, None, None]
        self._fog_add = np.round(a[:, None, None] * 256.0 * np.asarray(app.fog)[None, None, :]).astype(np.uint16)
        # far hills: colour and angular profile
        self._hill_rgb = np.array(_mix(_scale(app.hills, app.light), app.fog, 0.45), np.uint8)
        self._hill_cols = np.arange(w, dtype=float)
        self._rows = np.arange(h)[:, None]

    def _prepare_strips(self) -> None:
        """Ground strips (d0, d1, colour) and marking lines; s sample offsets dense near, sparse far."""
        app, road = self.app, self.road
        lit = lambda c: _scale(c, app.light)  # noqa: E731
        re, le, sh = road.right_edge_d_m, road.left_edge_d_m, road.shoulder_m
        self._strips = [
            (re - sh, re, lit(app.shoulder)), (le, le + sh, lit(app.shoulder)), (re, le, lit(app.asphalt)),
        ]
        lw = 0.15
        lines = [(re + 0.25 - lw / 2, re + 0.25 + lw / 2), (le - 0.25 - lw / 2, le - 0.25 + lw / 2)]
        self._lines = [(a, b, lit(app.marking)) for a, b in lines]
        if road.divider_double:
            self._lines += [(-0.2 - lw / 2, -0.2 + lw / 2, lit(app.divider)), (0.2 - lw / 2, 0.2 + lw / 2,
                                                                                 lit(app.divider))]
        else:
            self._lines += [(-lw / 2, lw / 2, lit(app.divider))]
        self._dash_d = [-k * road.lane_width_m for k in range(1, road.n_forward)]
        self._dash_d += [k * road.lane_width_m for k in range(1, road.n_oncoming)]
        self._dash_rgb = lit(app.marking)
        offs = [-6.0]
        while offs[-1] < self.view_m:
            offs.append(offs[-1] + float(np.clip(0.06 * abs(offs[-1]), 0.75, 6.0)))
        self._s_offsets = np.array(offs)

    # ------------------------------------------------------------------------------------------------
    # transforms
    def _world_to_cam(self, x_m: float, y_m: float, yaw_rad: float) -> tuple[np.ndarray, np.ndarray]:
        """(R, t) with p_optical = R @ p_world + t for the ego's rear axle at (x, y, yaw)."""
        c, s = math.cos(yaw_rad), math.sin(yaw_rad)
        r_bw = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])  # world -> base
        r = self._r_ob @ r_bw
        t = -self._r_ob @ (r_bw @ np.array([x_m, y_m, 0.0]) + self._t_bo)
        return r, t

    def project_world(self, points_world: np.ndarray, x_m: float, y_m: float, yaw_rad: float
                      ) -> tuple[np.ndarray, np.ndarray]:
        """World points (..., 3) -> pixels (..., 2) of the output image and ``in_front`` (..., ), for an ego whose
        rear axle is at (x, y, yaw). The same transform the renderer draws with (overlays, tests)."""
        r, t = self._world_to_cam(x_m, y_m, yaw_rad)
        pc = np.asarray(points_world, float) @ r.T + t
        in_front = pc[..., 2] > NEAR_M
        z = np.where(in_front, pc[..., 2], np.nan)
        u = (self.cam.fx * pc[..., 0] / z + self.cam.cx + 0.5) / self.ss - 0.5
        v = (self.cam.fy * pc[..., 1] / z + self.cam.cy + 0.5) / self.ss - 0.5
        return np.stack([u, v], axis=-1), in_front

    def _project(self, pc: np.ndarray) -> np.ndarray:
        """Optical-frame points (..., 3) with z >= near -> fixed-point pixel coordinates (..., 2) int32."""
        z = pc[..., 2]
        u = self.cam.fx * pc[..., 0] / z + self.cam.cx
        v = self.cam.fy * pc[..., 1] / z + self.cam.cy
        uv = np.clip(np.stack([u, v], axis=-1), -_LIM, _LIM)
        return np.round(uv * _SCALE).astype(np.int32)

    def _fill_ground(self, img: np.ndarray, pts_cam: np.ndarray, color: Sequence[float]) -> None:
        poly = clip_polygon_near_fast(pts_cam, NEAR_M)
        if len(poly) >= 3:
            cv2.fillPoly(img, [self._project(poly)], color, self._line, _SHIFT)

    def _fill_ground_quads(self, img: np.ndarray, quads_cam: np.ndarray, colors: list) -> None:
        """Fill many small convex quads (n, 4, 3) given in the optical frame, each in its own colour."""
        z = quads_cam[..., 2]
        front = z.min(axis=1) > NEAR_M
        uv = self._project(np.where(front[:, None, None], quads_cam, 1.0))
        for i, (f, zmax) in enumerate(zip(front.tolist(), z.max(axis=1).tolist())):
            if f:
                cv2.fillConvexPoly(img, uv[i], colors[i], self._line, _SHIFT)
            elif zmax > NEAR_M:
                self._fill_ground(img, quads_cam[i], colors[i])

    # ------------------------------------------------------------------------------------------------
    def camera_s_m(self, x_m: float, y_m: float, yaw_rad: float) -> float:
        """Arc length of the road point nearest the camera (global coarse search, then refined)."""
        cx = x_m + self._t_bo[0] * math.cos(yaw_rad)
        cy = y_m + self._t_bo[0] * math.sin(yaw_rad)
        step = 16
        coarse = self.road.xy_m[::step]
        i = int(np.argmin((coarse[:, 0] - cx) ** 2 + (coarse[:, 1] - cy) ** 2)) * step
        return self.road.world_to_frenet(cx, cy, float(self.road.s_m[i]), window_m=12.0)[0]

    def render(self, x_m: float, y_m: float, yaw_rad: float, vehicles: Sequence[VehicleView] = (), *,
               s_hint_m: float | None = None) -> np.ndarray:
        """The camera image of an ego whose rear axle is at (x, y, yaw), with ``vehicles`` on the road."""
        r, t = self._world_to_cam(x_m, y_m, yaw_rad)
        s_cam = self.camera_s_m(x_m, y_m, yaw_rad) if s_hint_m is None else s_hint_m
        img = self._background.copy()
        self._draw_hills(img, yaw_rad)
        self._draw_ground(img, r, t, s_cam, vehicles)
        self._haze(img)
        self._draw_objects(img, r, t, s_cam, vehicles)
        if self.ss > 1:
            img = cv2.resize(img, (self.out_w, self.out_h), interpolation=cv2.INTER_AREA)
        return img

    def _draw_hills(self, img: np.ndarray, yaw_rad: float) -> None:
        if self._h0 <= 0:
            return
        az = yaw_rad + np.arctan2(self.cam.cx - self._hill_cols, self.cam.fx)
        p = self.app.hill_phase
        e = self.app.hill_height_rad * (0.55 + 0.25 * np.sin(2 * az + p[0]) + 0.12 * np.sin(5 * az + p[1])
                                        + 0.08 * np.sin(11 * az + p[2]))
        top = self.horizon_v - self.cam.fy * np.tan(e)
        mask = (self._rows[: self._h0] >= top[None, :])
        img[: self._h0][mask] = self._hill_rgb

    def _draw_ground(self, img: np.ndarray, r: np.ndarray, t: np.ndarray, s_cam: float,
                     vehicles: Sequence[VehicleView]) -> None:
        road = self.road
        # grass patches (flat scenery boxes)
        sl = self.scenery.in_range(s_cam - 10.0, s_cam + self.view_m)
        kinds = self.scenery.kind[sl]
        patches = np.nonzero(kinds == KIND_PATCH)[0]
        if len(patches):
            boxes = self.scenery.boxes[sl][patches]
            colors = self.scenery.colors[sl][patches] * self.app.light
            self._fill_ground_quads(img, box_corners(boxes)[:, :4, :] @ r.T + t, colors.tolist())
        s = s_cam + self._s_offsets
        xy, h = road.frenet_to_world(s, 0.0)
        nx, ny = -np.sin(h), np.cos(h)

        def strip(d0: float, d1: float) -> np.ndarray:
            a = np.stack([xy[:, 0] + d0 * nx, xy[:, 1] + d0 * ny, np.zeros_like(s)], axis=1)
            b = np.stack([xy[:, 0] + d1 * nx, xy[:, 1] + d1 * ny, np.zeros_like(s)], axis=1)
            return np.concatenate([a, b[::-1]]) @ r.T + t

        for d0, d1, color in self._strips + self._lines:
            self._fill_ground(img, strip(d0, d1), color)
        # dashed lane lines: world-fixed dashes
        dash, period = self.dash_m
        if self._dash_d:
            k0 = math.floor((s_cam - 8.0) / period)
            k1 = math.ceil((s_cam + min(self.view_m, 110.0)) / period)
            s0 = np.arange(k0, k1) * period
            ss = np.stack([s0, s0 + dash], axis=1)  # (n, 2)
            polys = []
            for d in self._dash_d:
                pa, _ = road.frenet_to_world(ss, d - 0.075)
                pb, _ = road.frenet_to_world(ss, d + 0.075)
                q = np.concatenate([pa, pb[:, ::-1]], axis=1)  # (n, 4, 2)
                polys.append(q)
            q = np.concatenate(polys)
            q3 = np.concatenate([q, np.zeros(q.shape[:2] + (1,))], axis=2) @ r.T + t
            zmin = q3[..., 2].min(axis=1)
            ok = q3[..., 2].max(axis=1) > NEAR_M
            whole = [self._project(p) for p in q3[ok & (zmin >= NEAR_M)]]
            for p in q3[ok & (zmin < NEAR_M)]:
                c = clip_polygon_near(p, NEAR_M)
                if len(c) >= 3:
                    whole.append(self._project(c))
            if whole:
                cv2.fillPoly(img, whole, self._dash_rgb, self._line, _SHIFT)
        # contact shadows under vehicles (not at night)
        if vehicles and self.app.time_of_day != "night":
            shade = _scale(self.app.asphalt, 0.45 * self.app.light)
            b = np.array([[v.x_m, v.y_m, 0.0, v.length_m + 0.3, v.width_m + 0.3, 0.0, v.yaw_rad] for v in vehicles])
            self._fill_ground_quads(img, box_corners(b)[:, :4, :] @ r.T + t, [shade] * len(b))

    def _haze(self, img: np.ndarray) -> None:
        g = img[self._h0:]
        g[...] = ((g.astype(np.uint16) * self._fog_keep + self._fog_add) >> 8).astype(np.uint8)

    # ------------------------------------------------------------------------------------------------
    def _vehicle_parts(self, v: VehicleView) -> tuple[np.ndarray, list]:
        """Local boxes (n, 7) relative to the vehicle centre and their colours [(side, top)], cached by shape."""
        key = (v.kind, round(v.length_m, 3), round(v.width_m, 3), round(v.height_m, 3), v.color_rgb)
        hit = self._vehicle_cache.get(key)
        if hit is not None:
            return hit
        if len(self._vehicle_cache) > 4096:  # long drives meet many vehicles: keep the cache bounded
            self._vehicle_cache.clear()
        L, W, H, col = v.length_m, v.width_m, v.height_m, v.color_rgb  # noqa: N806
        parts: list[tuple[float, float, float, float, float, float]] = []  # (x, z0, l, w, h, y)
        colors: list[tuple[tuple, tuple]] = []
        parts.append((0.0, 0.0, L - 0.5, W - 0.12, 0.4, 0.0))
        colors.append((_TIRE, _TIRE))
        if v.kind == "truck":
            cab = 2.3
            parts.append((L / 2 - cab / 2, 0.35, cab, W, H - 0.55, 0.0))
            colors.append((col, col))
            cargo = tuple(float(c) for c in np.clip(np.asarray(col) * 0.3 + 170.0, 0, 255))
            parts.append((-cab / 2 - 0.15, 0.45, L - cab - 0.3, W, H - 0.45, 0.0))
            colors.append((cargo, cargo))
        elif v.kind == "van":
            parts.append((0.0, 0.3, L, W, H - 0.3, 0.0))
            colors.append((col, col))
        else:
            body_top = 0.55 * H + 0.12
            parts.append((0.0, 0.3, L, W, body_top - 0.3, 0.0))
            colors.append((col, col))
            cl = L * 0.5
            parts.append((-L * 0.08, body_top, cl, W - 0.2, H - body_top, 0.0))
            colors.append((_GLASS, col))
        arr = np.array([[x, y, z0 + h / 2, ln, w, h, 0.0] for x, z0, ln, w, h, y in parts], float)
        self._vehicle_cache[key] = (arr, colors)
        return arr, colors

    def _decal_arrays(self, v: VehicleView, night: bool) -> tuple[np.ndarray, ...]:
        """``_decals`` as arrays (quads (k, 4, 3), faces, colours (k, 3), halo (k,), emissive (k,)), cached."""
        key = (v.kind, round(v.length_m, 3), round(v.width_m, 3), round(v.height_m, 3), v.brake_on, v.left_lamp_on,
               v.right_lamp_on, v.lamps_on, night)
        hit = self._decal_cache.get(key)
        if hit is None:
            if len(self._decal_cache) > 4096:
                self._decal_cache.clear()
            items = self._decals(v, night)
            hit = (np.array([q for _, q, _, _, _ in items]), np.array([f for f, _, _, _, _ in items]),
                   np.array([c for _, _, c, _, _ in items], float), np.array([g for _, _, _, g, _ in items]),
                   np.array([e for _, _, _, _, e in items]))
            self._decal_cache[key] = hit
        return hit

    def _decals(self, v: VehicleView, night: bool) -> list[tuple[int, np.ndarray, tuple, float, bool]]:
        """Lamps, plates and windows: (face, (4, 3) local points, colour, halo size m, emissive)."""
        L, W, H = v.length_m, v.width_m, v.height_m  # noqa: N806
        out: list[tuple[int, np.ndarray, tuple, float, bool]] = []
        zt = (0.55 * H + 0.12) if v.kind == "car" else min(1.2, H - 0.4)  # tail lamp top
        xb, xf = -L / 2 - 0.02, L / 2 + 0.02
        tail = _BRAKE if v.brake_on else (_TAIL_ON if v.lamps_on else _TAIL_OFF)
        grow = 0.09 if v.brake_on else (0.05 if v.lamps_on and night else 0.0)

        def across(x: float, y0: float, y1: float, z0: float, z1: float) -> np.ndarray:
            return np.array([[x, y0, z0], [x, y1, z0], [x, y1, z1], [x, y0, z1]])

        def along(y: float, x0: float, x1: float, z0: float, z1: float) -> np.ndarray:
            return np.array([[x0, y, z0], [x1, y, z0], [x1, y, z1], [x0, y, z1]])

        # windows of vans and truck cabs (cars have a glass cabin)
        if v.kind == "van":
            z0, z1 = 0.55 * H, H - 0.12
            out.append((FACE_FRONT, across(xf, -W / 2 + 0.12, W / 2 - 0.12, z0, z1), _GLASS, 0.0, False))
            out.append((FACE_BACK, across(xb, -W / 2 + 0.2, W / 2 - 0.2, 0.62 * H, z1 - 0.08), _GLASS, 0.0, False))
            for side, face in ((1.0, FACE_LEFT), (-1.0, FACE_RIGHT)):
                out.append((face, along(side * (W / 2 + 0.02), L / 2 - 1.7, L / 2 - 0.25, z0, z1), _GLASS, 0.0, False))
        elif v.kind == "truck":
            z0, z1 = 0.35 + 0.5 * (H - 0.55), H - 0.4
            out.append((FACE_FRONT, across(xf, -W / 2 + 0.15, W / 2 - 0.15, z0, z1), _GLASS, 0.0, False))
            for side, face in ((1.0, FACE_LEFT), (-1.0, FACE_RIGHT)):
                out.append((face, along(side * (W / 2 + 0.02), L / 2 - 1.3, L / 2 - 0.2, z0, z1), _GLASS, 0.0, False))
        for side in (-1.0, 1.0):
            y_in, y_out = side * (W / 2 - 0.42), side * (W / 2 - 0.06)
            out.append((FACE_BACK, across(xb, y_in, y_out, zt - 0.26, zt - 0.05), tail, grow, True))
            if v.left_lamp_on if side > 0 else v.right_lamp_on:
                out.append((FACE_BACK, across(xb, y_in, y_out, zt - 0.46, zt - 0.26), _AMBER, 0.07, True))
                out.append((FACE_FRONT, across(xf, y_in, y_out, 0.45, 0.62), _AMBER, 0.07, True))
            head = _HEAD if v.lamps_on else _DRL
            out.append((FACE_FRONT, across(xf, y_in, y_out, 0.62, 0.78), head, 0.08 if v.lamps_on else 0.0, True))
        out.append((FACE_BACK, across(xb, -0.26, 0.26, 0.42, 0.55), _PLATE, 0.0, False))
        out.append((FACE_FRONT, across(xf, -0.26, 0.26, 0.32, 0.45), _PLATE, 0.0, False))
        if v.brake_on and v.kind == "car":
            out.append((FACE_BACK, across(-L * 0.08 - L * 0.25 - 0.02, -0.25, 0.25, H - 0.12, H - 0.04), _BRAKE, 0.03,
                        True))
        return out

    def _draw_objects(self, img: np.ndarray, r: np.ndarray, t: np.ndarray, s_cam: float,
                      vehicles: Sequence[VehicleView]) -> None:
        app = self.app
        night = app.time_of_day == "night"
        sl = self.scenery.in_range(s_cam - 8.0, s_cam + self.view_m)
        keep = self.scenery.kind[sl] != KIND_PATCH
        boxes = [self.scenery.boxes[sl][keep]]
        side_c = [self.scenery.colors[sl][keep]]
        top_c = [self.scenery.colors[sl][keep]]
        group = [self.scenery.group[sl][keep]]
        n_box = int(keep.sum())
        gbase = int(self.scenery.group.max()) + 1 if len(self.scenery) else 0
        veh_last_box: dict[int, int] = {}  # vehicle group -> its last box (decals are drawn after it)
        dec_quads, dec_normals, dec_cols, dec_halo, dec_emit, dec_owner = [], [], [], [], [], []
        for i, v in enumerate(vehicles):
            local, colors = self._vehicle_parts(v)
            c, s = math.cos(v.yaw_rad), math.sin(v.yaw_rad)
            wb = local.copy()
            wb[:, 0] = v.x_m + c * local[:, 0] - s * local[:, 1]
            wb[:, 1] = v.y_m + s * local[:, 0] + c * local[:, 1]
            wb[:, 6] = v.yaw_rad
            boxes.append(wb)
            side_c.append(np.array([a for a, _ in colors], float))
            top_c.append(np.array([b for _, b in colors], float))
            group.append(np.full(len(wb), gbase + i))
            n_box += len(wb)
            veh_last_box[gbase + i] = n_box - 1
            quads, faces, cols, halo, emit = self._decal_arrays(v, night)
            rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
            dec_quads.append(quads @ rot.T + np.array([v.x_m, v.y_m, 0.0]))
            dec_normals.append(_FACE_NORMALS[faces] @ rot.T)
            dec_cols.append(cols)
            dec_halo.append(halo)
            dec_emit.append(emit)
            dec_owner.append(np.full(len(faces), gbase + i))
        boxes_a = np.concatenate(boxes)
        if not len(boxes_a):
            return
        side_a, top_a, group_a = np.concatenate(side_c), np.concatenate(top_c), np.concatenate(group)
        corners = box_corners(boxes_a) @ r.T + t  # (n, 8, 3) optical
        z = corners[..., 2]
        zmax = z.max(axis=1)
        fx = self.cam.fx
        # culling: behind the camera, outside the field of view, or smaller than a pixel
        zc = np.maximum(z, NEAR_M)
        xr, yr = corners[..., 0] / zc, corners[..., 1] / zc
        lim_l, lim_r = -(self.cam.cx + 1) / fx, (self.w - self.cam.cx) / fx
        lim_t, lim_b = -(self.cam.cy + 1) / self.cam.fy, (self.h - self.cam.cy) / self.cam.fy
        all_front = z.min(axis=1) > NEAR_M
        outside = all_front & ((xr.max(1) < lim_l) | (xr.min(1) > lim_r) | (yr.max(1) < lim_t) | (yr.min(1) > lim_b))
        depth = np.linalg.norm(corners.mean(axis=1), axis=1)
        size_px = fx * np.max(boxes_a[:, 3:6], axis=1) / np.maximum(depth, 1e-3)
        visible = (zmax > NEAR_M) & ~outside & (size_px >= self._min_px)
        # painter's order: objects far to near by the distance of their first box, boxes of an object in order
        _, first_idx, inverse = np.unique(group_a, return_index=True, return_inverse=True)
        key = depth[first_idx][inverse]
        order = np.lexsort((np.arange(len(boxes_a)), -key))
        # face visibility and shading
        cy_, sy_ = np.cos(boxes_a[:, 6]), np.sin(boxes_a[:, 6])
        n_world = np.zeros((len(boxes_a), 6, 3))
        n_world[:, 0, 0], n_world[:, 0, 1] = cy_, sy_
        n_world[:, 1, :2] = -n_world[:, 0, :2]
        n_world[:, 2, 0], n_world[:, 2, 1] = -sy_, cy_
        n_world[:, 3, :2] = -n_world[:, 2, :2]
        n_world[:, 4, 2], n_world[:, 5, 2] = 1.0, -1.0
        n_cam = n_world @ r.T
        face_c = corners[:, _FACES].mean(axis=2)  # (n, 6, 3)
        facing = np.einsum("nfk,nfk->nf", n_cam, face_c) < -1e-6
        shade = 0.62 + 0.38 * np.clip(n_world @ np.asarray(app.sun_dir), 0.0, 1.0)  # (n, 6)
        shade[:, 4], shade[:, 5] = 1.05, 0.45
        fade = app.fade(depth)
        base = np.where((np.arange(6) == FACE_TOP)[None, :, None], top_a[:, None, :], side_a[:, None, :])
        cols = base * (shade[..., None] * app.light)
        cols = np.clip(cols + (np.asarray(app.fog)[None, None, :] - cols) * fade[:, None, None], 0, 255)
        uv_faces = np.ascontiguousarray(self._project(np.where(z[..., None] > NEAR_M, corners, 1.0))[:, _FACES])
        # skip faces that cover (almost) no pixel: shoelace area in render pixels (fixed point)
        fu, fv = uv_faces[..., 0].astype(np.float64), uv_faces[..., 1].astype(np.float64)
        area = 0.5 * np.abs(np.sum(fu * np.roll(fv, -1, axis=2) - np.roll(fu, -1, axis=2) * fv, axis=2))
        facing &= (area >= self._min_area * _SCALE * _SCALE) | ~all_front[:, None]
        decals = self._prepare_decals(r, t, dec_quads, dec_normals, dec_cols, dec_halo, dec_emit, dec_owner, night)
        vis_l, front_l, group_l = visible.tolist(), all_front.tolist(), group_a.tolist()
        facing_l, cols_l = facing.tolist(), cols.tolist()
        fill, line = cv2.fillConvexPoly, self._line
        for bi in order.tolist():
            if vis_l[bi]:
                fl, cl = facing_l[bi], cols_l[bi]
                if front_l[bi]:
                    uvb = uv_faces[bi]
                    for f in range(6):
                        if fl[f]:
                            fill(img, uvb[f], cl[f], line, _SHIFT)
                else:
                    for f in range(6):
                        if fl[f]:
                            poly = clip_polygon_near(corners[bi, _FACES[f]], NEAR_M)
                            if len(poly) >= 3:
                                cv2.fillPoly(img, [self._project(poly)], cl[f], line, _SHIFT)
            g = group_l[bi]
            if g in decals and veh_last_box.get(g) == bi:
                for uv_halo, col_halo, uv_q, col_q in decals[g]:
                    if uv_halo is not None:
                        fill(img, uv_halo, col_halo, line, _SHIFT)
                    fill(img, uv_q, col_q, line, _SHIFT)

    def _prepare_decals(self, r: np.ndarray, t: np.ndarray, quads: list, normals: list, cols: list, halo: list,
                        emit: list, owner: list, night: bool) -> dict[int, list]:
        """Project every vehicle's decals at once; per vehicle group, what to fill: (halo uv, colour, uv, colour)."""
        if not quads:
            return {}
        q = np.concatenate(quads) @ r.T + t  # (D, 4, 3)
        nrm = np.concatenate(normals) @ r.T
        col, hal, emi, own = np.concatenate(cols), np.concatenate(halo), np.concatenate(emit), np.concatenate(owner)
        ctr = q.mean(axis=1)
        ok = (q[..., 2].min(axis=1) > NEAR_M) & (np.einsum("dk,dk->d", nrm, ctr) < 0.0)
        depth = np.linalg.norm(ctr, axis=1)
        fade = self.app.fade(depth)[:, None]
        lamp_fade = fade * (0.3 if night else 0.8)  # lamps glow through the haze
        fog = np.asarray(self.app.fog)[None, :]
        lit = col * self.app.light
        col_q = np.where(emi[:, None], col + (fog - col) * lamp_fade, lit + (fog - lit) * fade)
        halo_col = col * 0.75 + (fog - col * 0.75) * lamp_fade
        half_diag = np.maximum(np.linalg.norm(q[:, 0] - q[:, 2], axis=1) * 0.5, 0.05)
        bloom_m = LAMP_BLOOM_WIDTH_FRAC * self.w * np.maximum(ctr[:, 2], NEAR_M) / self.cam.fx
        hal = np.where(emi & (hal > 0), np.maximum(hal, bloom_m), hal)
        big = ctr[:, None, :] + (q - ctr[:, None, :]) * (1.0 + hal / half_diag)[:, None, None]
        q_safe = np.where(ok[:, None, None], q, 1.0)
        uv = self._project(q_safe)
        uv_big = self._project(np.where(ok[:, None, None], big, 1.0))
        out: dict[int, list] = {}
        for i in np.nonzero(ok)[0].tolist():
            has_halo = bool(emi[i]) and hal[i] > 0
            out.setdefault(int(own[i]), []).append((uv_big[i] if has_halo else None, tuple(halo_col[i].tolist()),
                                                    uv[i], tuple(col_q[i].tolist())))
        return out
