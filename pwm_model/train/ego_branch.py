"""Fit ``world_model.ego_branch`` to the training clips before fine-tuning.

The branch is an MLP of the ego vector alone whose correction to the kinematic prior is added beside the waypoint
head's (world_model/model.py). Fitted here with an L1 loss on the residual ``waypoints - prior(ego)`` (seconds on a
CPU: no trunk pass), fine-tuning starts from a plan as good as the ego-status MLP's, and the trunk's head, whose last
layer starts at zero, learns only what the camera adds to it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pwm_model.train.wm_data import WorldModelData
from pwm_model.world_model.model import PolicyWorldModel
from pwm_model.world_model.prior import kinematic_prior

FIT_BATCH = 256
FIT_LR = 3e-3


def fit_ego_branch(model: PolicyWorldModel, data: WorldModelData, steps: int, *, seed: int = 0,
                   log: Callable[[str], None] = print) -> dict[str, float]:
    """Adam with a cosine schedule for ``steps`` steps on the clips with ego and waypoint labels; returns the mean
    L1 per waypoint coordinate (metres / radians) before and after, over those clips."""
    if model.ego_branch is None:
        raise ValueError("the model has no ego branch (world_model.ego_branch is false)")
    rows = torch.nonzero(data.ego_valid & data.waypoints_valid.any(dim=1)).flatten()
    if len(rows) == 0 or steps == 0:
        return {}
    ego = data.ego[rows].float()
    valid = data.waypoints_valid[rows].float()[..., None]  # (N, K, 1)
    prior = model.cfg.world_model.prior
    base = kinematic_prior(prior, ego, model.waypoint_t_s) if prior != "none" else torch.zeros_like(
        data.waypoints[rows])
    target = data.waypoints[rows].float() - base  # what the branch should add

    def loss_on(idx: torch.Tensor) -> torch.Tensor:
        err = (model.ego_branch_correction(ego[idx]) - target[idx]).abs() * valid[idx]
        return err.sum() / (valid[idx].sum() * 3).clamp_min(1.0)

    params = list(model.ego_branch.parameters())
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        before = float(loss_on(torch.arange(len(rows))))
    opt = torch.optim.Adam(params, lr=FIT_LR)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        idx = torch.randint(0, len(rows), (min(FIT_BATCH, len(rows)),), generator=generator)
        loss = loss_on(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        after = float(loss_on(torch.arange(len(rows))))
    for p in model.parameters():
        p.grad = None
    log(f"ego branch: fitted to {len(rows)} clips in {steps} steps, L1 per coordinate {before:.3f} -> {after:.3f}")
    return {"l1_before": before, "l1_after": after}
