"""Planning and forecast metrics in plain numpy (no torch): L2 in both nuScenes protocols, collision, PSNR, SSIM.

Conventions (shared with the offline rosbag evaluator):
- Plans and ground truth are K waypoints ``(x_m, y_m, yaw_rad)`` in ``base_link`` at the current frame, waypoint k
  at ``k * waypoint_dt_s`` (k = 1..K), with a validity mask for the ground truth.
- L2 at T seconds, two protocols (reference/pwm_method.md section 6):
  ``vad``: the mean displacement error over the waypoints up to T (VAD, BEV-Planner and PWM's Table 1),
  ``uniad``: the displacement error of the waypoint at T (UniAD, ST-P3).
  Both average over the valid (clip, waypoint) pairs; ``l2_avg`` is the mean of the 1, 2 and 3 s values.
- Collision: the ego box (``EGO_LENGTH_M`` x ``EGO_WIDTH_M``, centred ``ego_center_x_m`` ahead of base_link) swept
  from waypoint k-1 to waypoint k (waypoint 0 is the ego at the origin) against the ground-truth boxes at the time of
  waypoint k, in bird's-eye view. Waypoints where the *ground-truth* trajectory itself overlaps a box are left out
  (label noise, as in ST-P3). Per horizon the rate follows the same two protocols; ``collision_rate`` is the share
  of clips whose plan hits a box at any valid waypoint of the whole plan (``collision_rate_3s``: up to the last
  horizon), split by the kind of the first hit into ``collision_longitudinal_rate`` (the box is in the ego's path:
  rear-end) and ``collision_lateral_rate`` (beside it: into the next lane, across the divider), with its 95 %
  Wilson interval (``wilson_interval``); two planners on the same clips compare by their discordant clips
  (``paired_collisions``: McNemar's exact test), since a few clips in a thousand are within chance.
- Images: PSNR in dB and SSIM (Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03; mean over channels) on uint8
  images or floats with an explicit ``data_range``.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from pwm_model.geometry import METRIC_EGO_CENTER_X_M, METRIC_EGO_LENGTH_M, METRIC_EGO_WIDTH_M, box_footprint

EGO_LENGTH_M = METRIC_EGO_LENGTH_M  # nuScenes ego box used by the ST-P3 / UniAD / VAD collision metric
EGO_WIDTH_M = METRIC_EGO_WIDTH_M
EGO_CENTER_X_M = METRIC_EGO_CENTER_X_M  # box centre ahead of base_link (the rear axle in the synthetic world, nuScenes)
HORIZONS_S = (1.0, 2.0, 3.0)
PSNR_CAP_DB = 100.0  # PSNR of identical images (instead of +inf, so that means stay finite)


def horizon_index(horizon_s: float, waypoint_dt_s: float, num_waypoints: int) -> int | None:
    """Number of waypoints up to ``horizon_s`` when it falls on a waypoint time, else None."""
    k = horizon_s / waypoint_dt_s
    if abs(k - round(k)) > 1e-6 or round(k) < 1 or round(k) > num_waypoints:
        return None
    return int(round(k))


def displacement_errors(pred_xy: np.ndarray, gt_xy: np.ndarray) -> np.ndarray:
    """Euclidean distance per waypoint: (N, K, >=2) x (N, K, >=2) -> (N, K)."""
    return np.linalg.norm(np.asarray(pred_xy, np.float64)[..., :2] - np.asarray(gt_xy, np.float64)[..., :2], axis=-1)


def per_clip_l2(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None, waypoint_dt_s: float,
                horizon_s: float = 3.0) -> np.ndarray:
    """Each clip's L2 up to ``horizon_s`` (vad protocol: its mean over the valid waypoints up to T): (N,) metres,
    NaN for a clip with no valid waypoint there (or a horizon off the waypoint grid)."""
    err = displacement_errors(pred, gt)  # (N, K)
    kh = horizon_index(horizon_s, waypoint_dt_s, err.shape[1])
    if kh is None:
        return np.full(err.shape[0], math.nan)
    v = np.ones_like(err, bool) if valid is None else np.asarray(valid, bool)
    w = v[:, :kh].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (err[:, :kh] * w).sum(axis=1) / w.sum(axis=1)


def l2_metrics(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None, waypoint_dt_s: float,
               horizons_s: tuple[float, ...] = HORIZONS_S, prefix: str = "l2") -> dict[str, float]:
    """``{prefix}_{T}s`` (vad protocol), ``{prefix}_uniad_{T}s`` and ``{prefix}_avg`` in metres (NaN if undefined).

    pred, gt (N, K, >=2); valid (N, K) bool or None.
    """
    err = displacement_errors(pred, gt)  # (N, K)
    n, k = err.shape
    v = np.ones((n, k), bool) if valid is None else np.asarray(valid, bool)
    out: dict[str, float] = {}
    vad = []
    for h in horizons_s:
        name = f"{h:g}s"
        kh = horizon_index(h, waypoint_dt_s, k)
        if kh is None:
            out[f"{prefix}_{name}"] = out[f"{prefix}_uniad_{name}"] = math.nan
            vad.append(math.nan)
            continue
        window = v[:, :kh]
        out[f"{prefix}_{name}"] = float(err[:, :kh][window].mean()) if window.any() else math.nan
        at = v[:, kh - 1]
        out[f"{prefix}_uniad_{name}"] = float(err[:, kh - 1][at].mean()) if at.any() else math.nan
        vad.append(out[f"{prefix}_{name}"])
    out[f"{prefix}_avg"] = float(np.mean(vad)) if vad else math.nan
    return out


def _rects_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Separating-axis test for convex quadrilaterals, vectorised: a (..., 4, 2), b (..., 4, 2) -> (...) bool."""
    a, b = np.broadcast_arrays(a, b)
    edges = np.concatenate([np.roll(a, -1, axis=-2) - a, np.roll(b, -1, axis=-2) - b], axis=-2)  # (..., 8, 2)
    axes = np.stack([-edges[..., 1], edges[..., 0]], axis=-1)  # (..., 8, 2)
    pa = np.einsum("...ic,...jc->...ji", a, axes)  # (..., 8 axes, 4 corners)
    pb = np.einsum("...ic,...jc->...ji", b, axes)
    separated = (pa.max(-1) < pb.min(-1)) | (pb.max(-1) < pa.min(-1))  # (..., 8)
    return ~separated.any(-1)


def ego_footprints(poses: np.ndarray, length_m: float = EGO_LENGTH_M, width_m: float = EGO_WIDTH_M,
                   center_x_m: float = EGO_CENTER_X_M) -> np.ndarray:
    """BEV corners (..., 4, 2) of the ego box at base_link poses (..., 3)."""
    p = np.asarray(poses, np.float64)
    c, s = np.cos(p[..., 2]), np.sin(p[..., 2])
    box = np.stack([p[..., 0] + center_x_m * c, p[..., 1] + center_x_m * s, np.zeros_like(c),
                    np.full_like(c, length_m), np.full_like(c, width_m), np.ones_like(c), p[..., 2]], axis=-1)
    return box_footprint(box)


def sweep_collisions(traj: np.ndarray, boxes: np.ndarray, boxes_valid: np.ndarray, sweep_steps: int = 4,
                     length_m: float = EGO_LENGTH_M, width_m: float = EGO_WIDTH_M,
                     center_x_m: float = EGO_CENTER_X_M) -> np.ndarray:
    """Per waypoint, whether the ego box swept from waypoint k-1 to k overlaps a box at waypoint k's time.

    traj (N, K, 3) base_link poses (x, y, yaw) in the ego frame at t; boxes (N, K, M, 7) (geometry BOX_FIELDS)
    at each waypoint time in the same frame; boxes_valid (N, K, M). Returns (N, K) bool.
    """
    return sweep_collision_kinds(traj, boxes, boxes_valid, sweep_steps, length_m, width_m, center_x_m) != NO_HIT


NO_HIT, HIT_LONGITUDINAL, HIT_LATERAL = 0, 1, 2


def sweep_collision_kinds(traj: np.ndarray, boxes: np.ndarray, boxes_valid: np.ndarray, sweep_steps: int = 4,
                          length_m: float = EGO_LENGTH_M, width_m: float = EGO_WIDTH_M,
                          center_x_m: float = EGO_CENTER_X_M) -> np.ndarray:
    """``sweep_collisions`` with the kind of each hit: (N, K) int8 ``NO_HIT``, ``HIT_LONGITUDINAL`` or ``HIT_LATERAL``.

    A hit is longitudinal (rear-end, or driving into something in the ego's own path) when the other box's centre
    lies within the ego's width, seen from the swept ego pose that touches it; otherwise lateral (drifting into the
    next lane's traffic, across the divider, into the kerb-side). A waypoint with both kinds counts as longitudinal.
    """
    traj = np.asarray(traj, np.float64)
    n, k, _ = traj.shape
    start = np.concatenate([np.zeros((n, 1, 3)), traj[:, :-1]], axis=1)  # (N, K, 3) waypoint k-1 (origin first)
    a = np.linspace(1.0 / sweep_steps, 1.0, sweep_steps)  # (S,) the sweep ends at the waypoint itself
    dyaw = (traj[..., 2] - start[..., 2] + np.pi) % (2 * np.pi) - np.pi
    sub = start[:, :, None, :] + a[None, None, :, None] * np.concatenate(
        [traj[..., :2] - start[..., :2], dyaw[..., None]], -1)[:, :, None, :]  # (N, K, S, 3)
    ego = ego_footprints(sub, length_m, width_m, center_x_m)  # (N, K, S, 4, 2)
    bx = np.asarray(boxes, np.float64)
    if bx.shape[2] == 0:
        return np.zeros((n, k), np.int8)
    other = box_footprint(bx)  # (N, K, M, 4, 2)
    # cheap reject: centre distance beyond the sum of the circumscribed radii
    r_ego = 0.5 * math.hypot(length_m, width_m)
    r_box = 0.5 * np.hypot(bx[..., 3], bx[..., 4])  # (N, K, M)
    ego_c = ego.mean(-2)  # (N, K, S, 2)
    d = np.linalg.norm(ego_c[:, :, :, None, :] - bx[:, :, None, :, :2], axis=-1)  # (N, K, S, M)
    near = (d <= r_ego + r_box[:, :, None, :]) & np.asarray(boxes_valid, bool)[:, :, None, :]
    kinds = np.zeros((n, k), np.int8)
    idx = np.nonzero(near)
    if idx[0].size:
        i, j, s, m = idx
        hit = _rects_overlap(ego[i, j, s], other[i, j, m])
        i, j, s, m = i[hit], j[hit], s[hit], m[hit]
        pose = sub[i, j, s]  # (H, 3) the swept ego pose that touches the box
        rel = bx[i, j, m, :2] - pose[:, :2]
        lateral_m = -np.sin(pose[:, 2]) * rel[:, 0] + np.cos(pose[:, 2]) * rel[:, 1]
        kind = np.where(np.abs(lateral_m) <= 0.5 * width_m, HIT_LONGITUDINAL, HIT_LATERAL).astype(np.int8)
        kinds[i[kind == HIT_LATERAL], j[kind == HIT_LATERAL]] = HIT_LATERAL
        kinds[i[kind == HIT_LONGITUDINAL], j[kind == HIT_LONGITUDINAL]] = HIT_LONGITUDINAL  # wins over lateral
    return kinds


def collision_metrics(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None, boxes: np.ndarray,
                      boxes_valid: np.ndarray, waypoint_dt_s: float, horizons_s: tuple[float, ...] = HORIZONS_S,
                      prefix: str = "collision", **ego_box: float) -> dict[str, float]:
    """Collision rates of a plan: ``{prefix}_{T}s_pct`` (vad: mean over waypoints up to T), ``..._uniad_{T}s_pct``
    (at T), ``{prefix}_rate`` (share of clips with a hit anywhere in the plan, 0..1) with its 95 % Wilson interval
    ``{prefix}_rate_ci95_lo`` / ``_hi``, ``{prefix}_rate_{T}s`` (a hit up to the last horizon T),
    ``{prefix}_longitudinal_rate`` / ``{prefix}_lateral_rate`` (by the kind of each clip's first hit:
    ``sweep_collision_kinds``) and ``{prefix}_gt_excluded``.

    pred (N, K, 3) (a 2-column plan gets its yaw from the path direction), gt (N, K, 3), valid (N, K) or None,
    boxes (N, K, M, 7), boxes_valid (N, K, M). ``ego_box``: length_m, width_m, center_x_m.
    """
    return collision_metrics_with_hits(pred, gt, valid, boxes, boxes_valid, waypoint_dt_s, horizons_s, prefix,
                                       **ego_box)[0]


def collision_metrics_with_hits(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None, boxes: np.ndarray,
                                boxes_valid: np.ndarray, waypoint_dt_s: float,
                                horizons_s: tuple[float, ...] = HORIZONS_S, prefix: str = "collision",
                                **ego_box: float) -> tuple[dict[str, float], np.ndarray]:
    """``collision_metrics`` and the per-clip flags (N,) bool it counts in ``{prefix}_rate`` (for paired tests)."""
    pred = with_path_yaw(pred)
    gt = with_path_yaw(gt)
    n, k, _ = pred.shape
    v = np.ones((n, k), bool) if valid is None else np.asarray(valid, bool)
    kind_pred = sweep_collision_kinds(pred, boxes, boxes_valid, **ego_box)
    hit_pred = kind_pred != NO_HIT
    hit_gt = sweep_collisions(gt, boxes, boxes_valid, **ego_box)
    use = v & ~hit_gt  # (N, K)
    out: dict[str, float] = {}
    last = 0
    for h in horizons_s:
        name = f"{h:g}s"
        kh = horizon_index(h, waypoint_dt_s, k)
        if kh is None:
            out[f"{prefix}_{name}_pct"] = out[f"{prefix}_uniad_{name}_pct"] = math.nan
            continue
        last = max(last, kh)
        w = use[:, :kh]
        out[f"{prefix}_{name}_pct"] = 100.0 * float(hit_pred[:, :kh][w].mean()) if w.any() else math.nan
        at = use[:, kh - 1]
        out[f"{prefix}_uniad_{name}_pct"] = 100.0 * float(hit_pred[:, kh - 1][at].mean()) if at.any() else math.nan
    last = last or k
    hits = hit_pred & use
    out[f"{prefix}_rate_{waypoint_dt_s * last:g}s"] = float(hits[:, :last].any(1).mean()) if n else math.nan
    any_hit = hits.any(1)  # over the whole plan
    out[f"{prefix}_rate"] = float(any_hit.mean()) if n else math.nan
    out[f"{prefix}_rate_ci95_lo"], out[f"{prefix}_rate_ci95_hi"] = wilson_interval(int(any_hit.sum()), n)
    first = np.where(any_hit, np.argmax(hits, axis=1), 0)  # the first hit waypoint of each clip
    first_kind = np.where(any_hit, kind_pred[np.arange(n), first], NO_HIT)
    out[f"{prefix}_longitudinal_rate"] = float((first_kind == HIT_LONGITUDINAL).mean()) if n else math.nan
    out[f"{prefix}_lateral_rate"] = float((first_kind == HIT_LATERAL).mean()) if n else math.nan
    out[f"{prefix}_gt_excluded"] = float((v & hit_gt).sum())
    return out, any_hit


def wilson_interval(hits: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a rate ``hits / n`` (95 % for the default z); (nan, nan) when n is 0."""
    if n <= 0:
        return math.nan, math.nan
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_collisions(hits_a: np.ndarray, hits_b: np.ndarray) -> dict[str, float]:
    """Two planners' per-clip hits on the same clips: ``only_a``, ``only_b`` (the discordant clips) and ``p_value``,
    McNemar's exact two-sided test that neither planner hits more often (1.0 when no clip is discordant)."""
    a, b = np.asarray(hits_a, bool), np.asarray(hits_b, bool)
    if a.shape != b.shape:
        raise ValueError(f"per-clip hits of different shapes: {a.shape} vs {b.shape}")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    m = only_a + only_b
    tail = sum(math.comb(m, i) for i in range(min(only_a, only_b) + 1)) / 2**m if m else 0.5  # exact big ints
    return {"only_a": float(only_a), "only_b": float(only_b), "p_value": min(1.0, 2.0 * tail)}


def with_path_yaw(traj: np.ndarray) -> np.ndarray:
    """(N, K, 2 or 3) -> (N, K, 3); a 2-column trajectory gets the heading of its path (from the origin)."""
    t = np.asarray(traj, np.float64)
    if t.shape[-1] >= 3:
        return t[..., :3]
    prev = np.concatenate([np.zeros_like(t[:, :1]), t[:, :-1]], axis=1)
    d = t - prev
    yaw = np.arctan2(d[..., 1], d[..., 0])
    yaw = np.where(np.hypot(d[..., 0], d[..., 1]) < 1e-3, 0.0, yaw)
    return np.concatenate([t, yaw[..., None]], axis=-1)


# ----------------------------------------------------------------------------------------------------
# Images

def _as_float(img: np.ndarray) -> np.ndarray:
    return np.asarray(img, np.float64)


def psnr_db(pred: np.ndarray, target: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """PSNR per image in dB: (..., H, W, C) -> (...); capped at ``PSNR_CAP_DB`` (identical images)."""
    mse = ((_as_float(pred) - _as_float(target)) ** 2).mean(axis=(-3, -2, -1))
    return 10.0 * np.log10(data_range**2 / np.maximum(mse, data_range**2 * 10.0 ** (-PSNR_CAP_DB / 10.0)))


def ssim(pred: np.ndarray, target: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """Mean SSIM per image (Wang et al. 2004; Gaussian 11x11, sigma 1.5, valid region): (..., H, W, C) -> (...)."""
    a, b = _as_float(pred), _as_float(target)
    if a.shape != b.shape:
        raise ValueError(f"ssim needs images of one shape, got {a.shape} and {b.shape}")
    lead, (h, w, c) = a.shape[:-3], a.shape[-3:]
    a = a.reshape(-1, h, w, c)
    b = b.reshape(-1, h, w, c)
    win = min(11, h, w)
    win -= 1 - win % 2  # odd
    g = cv2.getGaussianKernel(win, 1.5)
    kern = g @ g.T
    pad = win // 2
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    out = np.empty(a.shape[0])
    for i in range(a.shape[0]):
        vals = []
        for ch in range(c):
            x, y = a[i, :, :, ch], b[i, :, :, ch]
            f = lambda z: cv2.filter2D(z, -1, kern, borderType=cv2.BORDER_REFLECT)[pad:h - pad, pad:w - pad]  # noqa
            mx, my = f(x), f(y)
            sxx, syy, sxy = f(x * x) - mx * mx, f(y * y) - my * my, f(x * y) - mx * my
            m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
            vals.append(m.mean())
        out[i] = float(np.mean(vals))
    return out.reshape(lead)


def per_horizon_mean(values: np.ndarray) -> list[float]:
    """(N, F) per-clip values -> the mean per forecast horizon (F,), ignoring NaN."""
    v = np.asarray(values, np.float64)
    out = []
    for f in range(v.shape[1]):
        col = v[:, f]
        col = col[np.isfinite(col)]
        out.append(float(col.mean()) if col.size else math.nan)
    return out
