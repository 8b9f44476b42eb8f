"""Geometry: SE(2)/SE(3) round trips, pose interpolation across +-pi, the pinhole camera, near-plane clipping,
and the synthetic renderer's projection, vanishing point and occlusion (real renders, pixel colours checked)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pwm_model.config import CameraConfig
from pwm_model.data.synthetic.appearance import Appearance
from pwm_model.data.synthetic.render import NEAR_M, Renderer
from pwm_model.data.synthetic.road import straight_road
from pwm_model.data.synthetic.scenery import KIND_BUILDING, Scenery
from pwm_model.geometry import (
    PinholeCamera,
    Pose3,
    box_corners,
    box_footprint,
    clip_polygon_near,
    clip_polygon_near_fast,
    from_ego_frame,
    interpolate_poses,
    interpolate_scalar,
    polygons_intersect,
    poses_to_ego_frame,
    project_boxes,
    quat_from_yaw,
    quat_to_matrix,
    se2_matrix,
    to_ego_frame,
    wrap_angle,
    yaw_from_quat,
)

CAM = CameraConfig(width_px=128, height_px=64)  # hfov 90 deg, mount (1.6, 0, 1.5), pitch 3 deg down
CLEAR = Appearance(fog_dist_m=1e9, light=1.0)  # no haze: rendered colours are the shaded surface colours


# ----------------------------------------------------------------------------------------------------
# SE(2) / SE(3)

def test_wrap_angle_range_and_types():
    a = np.array([-3 * math.pi, -math.pi, 0.0, math.pi, 2.5 * math.pi])
    w = wrap_angle(a)
    assert np.all(w >= -math.pi) and np.all(w < math.pi)
    np.testing.assert_allclose(np.cos(w), np.cos(a), atol=1e-12)
    assert isinstance(wrap_angle(4.0), float) and -math.pi <= wrap_angle(4.0) < math.pi


def test_se2_ego_frame_round_trip():
    rng = np.random.default_rng(0)
    pts = rng.normal(0, 30, (50, 2))
    for x, y, yaw in ((0.0, 0.0, 0.0), (12.0, -4.0, 2.9), (-100.0, 55.0, -3.1)):
        ego = to_ego_frame(pts, x, y, yaw)
        np.testing.assert_allclose(from_ego_frame(ego, x, y, yaw), pts, atol=1e-9)
        # the homogeneous matrix says the same thing
        m = se2_matrix(x, y, yaw)
        hom = np.concatenate([ego, np.ones((50, 1))], axis=1) @ m.T
        np.testing.assert_allclose(hom[:, :2], pts, atol=1e-9)
    # a point straight ahead of an ego heading +y lies on its x axis
    np.testing.assert_allclose(to_ego_frame(np.array([0.0, 5.0]), 0.0, 0.0, math.pi / 2), [5.0, 0.0], atol=1e-12)


def test_poses_to_ego_frame_wraps_yaw():
    p = poses_to_ego_frame(np.array([[1.0, 0.0, 3.1]]), 0.0, 0.0, -3.1)
    assert -math.pi <= p[0, 2] < math.pi
    assert abs(p[0, 2] - wrap_angle(6.2)) < 1e-12


def test_pose3_compose_inverse_round_trip():
    a = Pose3.from_xyz_rpy(1.0, -2.0, 0.5, 0.1, -0.2, 2.5)
    b = Pose3.from_xyz_rpy(-3.0, 0.7, 1.1, -0.3, 0.05, -1.2)
    pts = np.random.default_rng(1).normal(size=(20, 3))
    np.testing.assert_allclose(a.inverse().apply(a.apply(pts)), pts, atol=1e-12)
    np.testing.assert_allclose(a.compose(b).apply(pts), a.apply(b.apply(pts)), atol=1e-12)
    np.testing.assert_allclose(a.compose(a.inverse()).matrix(), np.eye(4), atol=1e-12)
    np.testing.assert_allclose(a.rotation @ a.rotation.T, np.eye(3), atol=1e-12)


def test_quaternion_yaw_round_trip():
    for yaw in (-3.14, -1.0, 0.0, 0.5, 3.1):
        q = quat_from_yaw(yaw)
        assert abs(wrap_angle(yaw_from_quat(*q) - yaw)) < 1e-12
        np.testing.assert_allclose(quat_to_matrix(*q), Pose3.from_xyz_rpy(0, 0, 0, 0, 0, yaw).rotation, atol=1e-12)
    with pytest.raises(ValueError):
        quat_to_matrix(0.0, 0.0, 0.0, 0.0)


def test_interpolate_poses_across_pi():
    t = np.array([0, 100, 200], np.int64)
    poses = np.array([[0.0, 0.0, 3.0], [1.0, 2.0, -3.0], [2.0, 4.0, -2.9]])
    out, valid = interpolate_poses(np.array([50, 100, 150, 250]), t, poses)
    assert valid.tolist() == [True, True, True, False]
    np.testing.assert_allclose(out[0, :2], [0.5, 1.0])
    # halfway between 3.0 and -3.0 along the short arc is pi, not 0
    assert abs(abs(out[0, 2]) - math.pi) < 1e-9
    assert abs(out[1, 2] - (-3.0)) < 1e-9
    np.testing.assert_allclose(out[2], [1.5, 3.0, -2.95], atol=1e-9)
    np.testing.assert_allclose(out[3], poses[2], atol=1e-9)  # clamped to the last pose
    np.testing.assert_allclose(interpolate_scalar([50, 300], t, [0.0, 10.0, 20.0]), [5.0, 20.0])
    with pytest.raises(ValueError):
        interpolate_poses(np.array([0]), np.array([0, 0]), np.zeros((2, 3)))


def test_box_footprint_and_intersection():
    a = np.array([0.0, 0.0, 0.75, 4.0, 2.0, 1.5, 0.0])
    fp = box_footprint(a)
    assert fp.shape == (4, 2)
    area = 0.5 * np.sum(fp[:, 0] * np.roll(fp[:, 1], -1) - np.roll(fp[:, 0], -1) * fp[:, 1])
    assert area == pytest.approx(8.0)  # counter-clockwise: positive area
    b = a.copy()
    b[0] = 3.9
    assert polygons_intersect(fp, box_footprint(b))
    b[0] = 4.1
    assert not polygons_intersect(fp, box_footprint(b))
    b[0], b[6] = 3.0, math.pi / 4  # rotated, corner reaching back into a
    assert polygons_intersect(fp, box_footprint(b))


# ----------------------------------------------------------------------------------------------------
# Pinhole camera

def _by_hand(cfg: CameraConfig, p_base: np.ndarray) -> np.ndarray:
    """Pixel of a base_link point from first principles: optical axes of a camera pitched down by theta."""
    th = math.radians(cfg.pitch_down_deg)
    fx = (cfg.width_px / 2) / math.tan(math.radians(cfg.hfov_deg) / 2)
    z_opt = np.array([math.cos(th), 0.0, -math.sin(th)])
    x_opt = np.array([0.0, -1.0, 0.0])
    y_opt = np.array([-math.sin(th), 0.0, -math.cos(th)])
    d = p_base - np.array([cfg.mount_x_m, cfg.mount_y_m, cfg.mount_z_m])
    return np.array([(cfg.width_px - 1) / 2 + fx * (d @ x_opt) / (d @ z_opt),
                     (cfg.height_px - 1) / 2 + fx * (d @ y_opt) / (d @ z_opt)])


def test_box_projects_where_pinhole_maths_says():
    cfg = CameraConfig(width_px=448, height_px=256)
    cam = PinholeCamera.from_config(cfg)
    box = np.array([[20.0, 2.0, 0.75, 4.5, 1.8, 1.5, 0.3]])
    uv, front = project_boxes(cam, box)
    assert front.all()
    for corner, pix in zip(box_corners(box)[0], uv[0]):
        np.testing.assert_allclose(pix, _by_hand(cfg, corner), atol=1e-9)
    # a point on the optical axis lands on the principal point; behind the camera is not projected
    th = math.radians(cfg.pitch_down_deg)
    on_axis = np.array([cfg.mount_x_m + 10 * math.cos(th), 0.0, cfg.mount_z_m - 10 * math.sin(th)])
    np.testing.assert_allclose(cam.project(on_axis)[0], [cam.cx, cam.cy], atol=1e-9)
    uv_b, front_b = cam.project(np.array([-5.0, 0.0, 1.0]))
    assert not front_b and np.isnan(uv_b).all()
    # ground rays invert the projection
    ground = np.array([[8.0, -1.5, 0.0], [35.0, 3.0, 0.0]])
    hit, ok = cam.pixel_ray_to_ground(cam.project(ground)[0])
    assert ok.all()
    np.testing.assert_allclose(hit, ground, atol=1e-9)
    # scaling the image scales the pixels
    small = cam.scaled(224, 128)
    np.testing.assert_allclose((small.project(ground)[0] + 0.5) * 2 - 0.5, cam.project(ground)[0], atol=1e-9)


def test_rendered_box_lands_where_projected():
    """Render a single magenta box on an empty straight road: its pixels span the projected corners."""
    road = straight_road(300.0)
    box = np.array([[25.0, -1.0, 1.0, 3.0, 2.0, 2.0, 0.4]])  # world frame; the ego starts at the origin
    scen = Scenery(box, np.array([[255.0, 0.0, 255.0]]), np.array([0]), np.array([KIND_BUILDING]), np.array([25.0]))
    cfg = CameraConfig(width_px=224, height_px=128)
    ren = Renderer(cfg, road, scen, CLEAR, supersample=1)
    ego = (0.0, 0.0, 0.05)
    img = ren.render(*ego).astype(int)
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    mask = (g < 30) & (r > 100) & (abs(r - b) < 12)
    assert mask.sum() > 30
    vs, us = np.nonzero(mask)
    uv, front = ren.project_world(box_corners(box)[0], *ego)
    assert front.all()
    # the filled pixels (centres inside the polygon) lie within the projected extent, and nearly fill it
    assert us.min() >= uv[:, 0].min() - 1.0 and us.max() <= uv[:, 0].max() + 1.0
    assert vs.min() >= uv[:, 1].min() - 1.0 and vs.max() <= uv[:, 1].max() + 1.0
    assert us.min() <= uv[:, 0].min() + 1.5 and us.max() >= uv[:, 0].max() - 1.5
    assert vs.min() <= uv[:, 1].min() + 1.5 and vs.max() >= uv[:, 1].max() - 1.5
    # the projection agrees with geometry.PinholeCamera applied in the ego frame
    cam = PinholeCamera.from_config(cfg)
    corners = box_corners(box)[0]
    base = np.concatenate([to_ego_frame(corners[:, :2], *ego), corners[:, 2:]], axis=1)
    np.testing.assert_allclose(uv, cam.project(base)[0], atol=1e-9)


def test_parallel_lane_lines_meet_at_the_vanishing_point():
    road = straight_road(400.0, n_forward=3, n_oncoming=2, lane_width_m=3.5)
    ren = Renderer(CameraConfig(width_px=448, height_px=256), road, appearance=CLEAR, supersample=1)
    ego = (0.0, road.lane_d_m(1), 0.0)  # centre of the middle lane, heading along the road
    lines = []
    for d in (road.right_edge_d_m, -3.5, -7.0, 0.0, 3.5, road.left_edge_d_m):
        s = np.array([8.0, 150.0])
        xy, _ = road.frenet_to_world(s, d)
        uv, front = ren.project_world(np.concatenate([xy, np.zeros((2, 1))], axis=1), *ego)
        assert front.all()
        lines.append(uv)
    # intersect each pair of image lines: all meet at (cx, horizon row)
    cam = ren.cam
    for i in range(len(lines)):
        for j in range(i + 1, len(lines)):
            (p1, p2), (q1, q2) = lines[i], lines[j]
            d1, d2 = p2 - p1, q2 - q1
            w = q1 - p1
            t = (w[0] * d2[1] - w[1] * d2[0]) / (d1[0] * d2[1] - d1[1] * d2[0])
            vp = p1 + t * d1
            np.testing.assert_allclose(vp, [cam.cx, cam.horizon_v()], atol=1e-6)
    assert ren.horizon_v == pytest.approx(cam.horizon_v())
    # lines on the ego's right lean right below the horizon, on its left lean left
    assert lines[0][0, 0] > cam.cx and lines[-1][0, 0] < cam.cx
    # and the horizon row splits the rendered image: sky above (blue dominant), ground below
    img = ren.render(*ego)
    h0 = int(math.floor(cam.horizon_v()))
    above, below = img[max(h0 - 20, 0), 5].astype(int), img[h0 + 20, 5].astype(int)
    assert above[2] > above[1] and below[2] < below[1]


def test_nearer_box_hides_farther_box():
    """Painter's order by depth: the near box wins where both project, whatever the input order."""
    road = straight_road(300.0)
    near = [15.0, -1.75, 1.0, 2.0, 2.0, 2.0, 0.0]
    far = [30.0, -1.75, 2.0, 3.0, 4.0, 4.0, 0.0]  # taller: its top shows above the near box
    red, blue = [230.0, 10.0, 10.0], [10.0, 10.0, 230.0]
    for boxes, colors in (([near, far], [red, blue]), ([far, near], [blue, red])):
        b = np.array(boxes)
        scen = Scenery(b, np.array(colors), np.array([0, 1]), np.array([KIND_BUILDING] * 2), b[:, 0].copy())
        order = np.argsort(scen.s_m)
        scen = Scenery(b[order], np.array(colors)[order], np.array([0, 1]), scen.kind, scen.s_m[order])
        ren = Renderer(CAM, road, scen, CLEAR, supersample=1)
        ego = (0.0, -1.75, 0.0)
        img = ren.render(*ego).astype(int)
        centre_near, _ = ren.project_world(np.array([near[0] - 1.0, near[1], near[2]]), *ego)
        u, v = np.round(centre_near).astype(int)
        assert img[v, u, 0] > 100 and img[v, u, 2] < 60, img[v, u]  # red, the near box
        top_far, _ = ren.project_world(np.array([far[0] - 1.5, far[1], 3.6]), *ego)
        u, v = np.round(top_far).astype(int)
        assert img[v, u, 2] > 100 and img[v, u, 0] < 60, img[v, u]  # blue, the far box above it


# ----------------------------------------------------------------------------------------------------
# Near-plane clipping

def test_clip_polygon_near_keeps_crossing_polygon_finite():
    cam = PinholeCamera.from_config(CameraConfig(width_px=448, height_px=256))
    # a ground quad from 5 m behind the camera to 20 m ahead, in the optical frame
    quad_base = np.array([[-5.0, 2.0, 0.0], [20.0, 2.0, 0.0], [20.0, -2.0, 0.0], [-5.0, -2.0, 0.0]])
    quad_cam = cam.base_to_camera(quad_base)
    assert quad_cam[:, 2].min() < 0 < quad_cam[:, 2].max()
    near = 0.5
    clipped = clip_polygon_near(quad_cam, near)
    assert len(clipped) == 4 and np.all(clipped[:, 2] >= near - 1e-9)
    uv = cam.K @ clipped.T
    uv = (uv[:2] / uv[2]).T
    assert np.isfinite(uv).all() and np.abs(uv).max() < 1e5
    # polygons fully behind vanish, fully in front are kept as they are
    assert len(clip_polygon_near(quad_cam * np.array([1, 1, -1]) - np.array([0, 0, 30.0]), near)) == 0
    front = quad_cam + np.array([0.0, 0.0, 10.0])
    np.testing.assert_allclose(clip_polygon_near(front, near), front)


def test_vectorised_clip_matches_reference():
    rng = np.random.default_rng(3)
    for n in (3, 4, 7, 40):
        for _ in range(20):
            poly = rng.normal(0, 3, (n, 3))
            ref = clip_polygon_near(poly, 0.3)
            fast = clip_polygon_near_fast(poly, 0.3)
            assert fast.shape == ref.shape
            np.testing.assert_allclose(fast, ref, atol=1e-12)


def test_render_box_crossing_camera_plane():
    """A long wall passing beside the camera (half behind it) is clipped, not smeared: it fills the left edge."""
    road = straight_road(300.0)
    wall = np.array([[5.0, 6.0, 1.0, 40.0, 0.3, 2.0, 0.0]])  # from 15 m behind to 25 m ahead, left of the road
    scen = Scenery(wall, np.array([[250.0, 0.0, 250.0]]), np.array([0]), np.array([KIND_BUILDING]), np.array([5.0]))
    ren = Renderer(CAM, road, scen, CLEAR, supersample=1)
    img = ren.render(0.0, -1.75, 0.0).astype(int)
    mask = (img[..., 1] < 30) & (img[..., 0] > 100) & (img[..., 2] > 100)
    cols = np.nonzero(mask.any(axis=0))[0]
    assert cols.size and cols.min() == 0  # reaches the left image edge (the part beside the camera)
    assert cols.max() < CAM.width_px // 2  # and stays on the left, towards the vanishing point
    assert NEAR_M > 0
