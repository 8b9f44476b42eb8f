"""A training-only penalty on planned waypoints that overlap the other road users' ground-truth boxes.

The clips label every waypoint time with the boxes of the vehicles around (``boxes`` (B, K, N, 7) in the ego frame at
t, ``BOX_FIELDS``), so a plan can be told not only how far it is from where the car went but also that it drove into
someone: at each waypoint the metric's ego box (``pwm_model.geometry``: 4.084 x 1.85 m, its centre 1.4 m ahead of
base_link along the waypoint's yaw, grown by ``margin_m`` on every side) is compared with each box in that box's own
frame, and where both extents overlap the shallower penetration (metres) is the penalty; it pushes the waypoint out
along that axis (back, for a rear-end; sideways, for a lateral touch). The recorded future never overlaps (the metric
is 0 % on it, also with a 1 m margin), so a plan that follows it pays nothing. The runtime never sees boxes: this
shapes training only (``train.collision_weight``).
"""

from __future__ import annotations

import torch

from pwm_model.geometry import METRIC_EGO_CENTER_X_M as EGO_CENTER_X_M
from pwm_model.geometry import METRIC_EGO_LENGTH_M as EGO_LENGTH_M
from pwm_model.geometry import METRIC_EGO_WIDTH_M as EGO_WIDTH_M


def overlap_penalty(waypoints: torch.Tensor, boxes: torch.Tensor, boxes_valid: torch.Tensor,
                    waypoints_valid: torch.Tensor | None = None, margin_m: float = 0.25) -> torch.Tensor:
    """Mean over the clips of the summed penetration (m) of the planned ego boxes into the ground-truth boxes.

    waypoints (B, K, 3) x_m, y_m, yaw_rad; boxes (B, K, N, 7); boxes_valid (B, K, N) bool; waypoints_valid (B, K).
    """
    wp = waypoints.float()
    bx = boxes.float()
    yaw = wp[..., 2:3]  # (B, K, 1)
    centre = wp[..., :2] + EGO_CENTER_X_M * torch.cat([torch.cos(yaw), torch.sin(yaw)], -1)  # (B, K, 2)
    rel = centre[:, :, None, :] - bx[..., :2]  # (B, K, N, 2) ego box centre relative to each box
    c, s = torch.cos(bx[..., 6]), torch.sin(bx[..., 6])
    along = c * rel[..., 0] + s * rel[..., 1]  # in the box's frame
    across = -s * rel[..., 0] + c * rel[..., 1]
    into_x = 0.5 * (bx[..., 3] + EGO_LENGTH_M) + margin_m - along.abs()
    into_y = 0.5 * (bx[..., 4] + EGO_WIDTH_M) + margin_m - across.abs()
    pen = torch.relu(torch.minimum(into_x, into_y))  # > 0 only where both extents overlap
    use = boxes_valid.bool()
    if waypoints_valid is not None:
        use = use & waypoints_valid.bool()[:, :, None]
    pen = torch.where(use, pen, torch.zeros_like(pen))
    return pen.sum(dim=(1, 2)).mean()
