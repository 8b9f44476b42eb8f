"""Does the plan read the forecast? The same planner fed its own forecast, the true future, random tokens, copies
of the current frame, or no future frames at all; each probe's l2_3s against the own-forecast plan, paired by clip
with intervals clustered by drive.

A planner that uses its forecast plans better from the true future (``oracle`` below zero) and worse from random
tokens; one that ignores it gives the same plan whatever it is fed (every difference near zero).
"""

from __future__ import annotations

import numpy as np
import torch

from pwm_model.eval import metrics as M
from pwm_model.eval.baselines import copy_last_frame
from pwm_model.eval.intervals import cluster_bootstrap, paired_difference

PROBES = ("oracle", "random", "copy_last", "none")


def probe_future(name: str, dyn: np.ndarray, history_frames: int, fed_frames: int, codebook_size: int,
                 rng: np.random.Generator) -> np.ndarray:
    """The future frames a probe feeds: (N, fed_frames, Ld) codes from the clips' dyn tokens (N, H + F, Ld)."""
    h, n, ld = history_frames, dyn.shape[0], dyn.shape[2]
    if name == "oracle":
        return dyn[:, h:h + fed_frames].astype(np.int64)  # frames t+1 .. t+fed
    if name == "random":
        return rng.integers(0, codebook_size, (n, fed_frames, ld), dtype=np.int64)
    if name == "copy_last":
        return copy_last_frame(dyn[:, h - 1].astype(np.int64), fed_frames)  # frame t, again and again
    if name == "none":
        return np.zeros((n, 0, ld), np.int64)
    raise ValueError(f"unknown reliance probe {name!r}: choose one of {', '.join(PROBES)}")


@torch.no_grad()
def probe_plans(model: torch.nn.Module, ctx: np.ndarray, dyn: np.ndarray, ego: np.ndarray, *,
                batch_size: int = 64, device: str = "cpu", seed: int = 0) -> dict[str, np.ndarray]:
    """Every probe's waypoints (N, K, 3) for the clips' ctx (N, Lc) and dyn (N, H + F_data, Ld) tokens."""
    h, fed = model.history_frames, max(model.forecast_frames - 1, 0)
    rng = np.random.default_rng(seed)
    out = {}
    for name in PROBES:
        future = probe_future(name, dyn, h, fed, model.codebook_size, rng)
        plans = []
        for s in range(0, len(ctx), batch_size):
            sl = slice(s, s + batch_size)
            plans.append(model.plan_with_future(
                torch.from_numpy(ctx[sl].astype(np.int64)).to(device),
                torch.from_numpy(dyn[sl, :h].astype(np.int64)).to(device),
                torch.from_numpy(future[sl]).to(device), torch.from_numpy(ego[sl]).to(device)).cpu().numpy())
        out[name] = np.concatenate(plans)
    return out


def reliance_table(own: np.ndarray, probes: dict[str, np.ndarray], labels: dict[str, np.ndarray],
                   waypoint_dt_s: float) -> dict[str, tuple[float, float, float]]:
    """Per probe, its l2_3s minus the own-forecast plan's (mean, lo, hi), and ``own`` itself, clustered by drive."""
    gt, valid, drives = labels["waypoints_xyyaw"], labels["waypoints_valid"], labels["drive"]
    base = M.per_clip_l2(own, gt, valid, waypoint_dt_s)
    table = {"own": cluster_bootstrap(base, drives)}
    for name, plan in probes.items():
        table[name] = paired_difference(M.per_clip_l2(plan, gt, valid, waypoint_dt_s), base, drives)
    return table


def flip_command(ego: np.ndarray) -> np.ndarray:
    """Ego vectors (N, EGO_DIM) with left and right swapped in the command one-hot (straight stays straight)."""
    out = np.array(ego, np.float32, copy=True)
    out[:, 2], out[:, 4] = ego[:, 4], ego[:, 2]
    return out


@torch.no_grad()
def command_response(model: torch.nn.Module, ctx: np.ndarray, dyn: np.ndarray, ego: np.ndarray, own: np.ndarray,
                     labels: dict[str, np.ndarray], waypoint_dt_s: float, *, batch_size: int = 64,
                     device: str = "cpu") -> dict[str, float]:
    """Does the plan follow the route command? On the clips whose command is left or right, the own plan against
    the plan with the command flipped, at 3 s: ``command_flip_shift_3s_m`` (mean |y_own - y_flipped|, how far the
    flip moves the plan sideways) and ``command_flip_lateral_3s_m`` (mean lateral error of the flipped plan minus the
    own plan's: how much the true command helps; above zero when the plan follows it). ``command_clips``: how many.
    """
    out = {"command_clips": 0, "command_flip_shift_3s_m": float("nan"), "command_flip_lateral_3s_m": float("nan")}
    k3 = M.horizon_index(3.0, waypoint_dt_s, own.shape[1])
    if k3 is None:
        return out  # the plan does not reach 3 s on its waypoint grid
    k3 -= 1
    rows = np.nonzero(np.isin(labels["command"], (0, 2)) & labels["waypoints_valid"][:, k3])[0]
    out["command_clips"] = int(len(rows))
    if len(rows) == 0:
        return out
    h, flipped = model.history_frames, []
    for s in range(0, len(rows), batch_size):
        r = rows[s:s + batch_size]
        _, w = model.rollout(torch.from_numpy(ctx[r].astype(np.int64)).to(device),
                             torch.from_numpy(dyn[r, :h].astype(np.int64)).to(device),
                             torch.from_numpy(flip_command(ego[r])).to(device), temperature=0.0)
        flipped.append(w.cpu().numpy())
    y_flip = np.concatenate(flipped)[:, k3, 1]
    y_own, y_true = own[rows, k3, 1], labels["waypoints_xyyaw"][rows, k3, 1]
    out["command_flip_shift_3s_m"] = float(np.abs(y_own - y_flip).mean())
    out["command_flip_lateral_3s_m"] = float((np.abs(y_flip - y_true) - np.abs(y_own - y_true)).mean())
    return out
