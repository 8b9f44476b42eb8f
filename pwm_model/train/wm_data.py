"""World-model training data: the token cache and the clip labels of a store as tensors, all in memory."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pwm_model.data.contract import EGO_DIM, label_ego_vectors
from pwm_model.data.tokens import TokenCache
from pwm_model.errors import DataError


@dataclass
class WorldModelData:
    """The tensors a world-model step draws its batches from (all on the CPU)."""

    ctx_tokens: torch.Tensor  # (n, Lc) int64
    dyn_tokens: torch.Tensor  # (n, H + F, Ld) int64
    ego: torch.Tensor  # (n, EGO_DIM) float32
    ego_valid: torch.Tensor  # (n,) bool
    waypoints: torch.Tensor  # (n, K, 3) float32
    waypoints_valid: torch.Tensor  # (n, K) bool
    boxes: torch.Tensor | None = None  # (n, K, N, 7) float32 other road users at each waypoint time (BOX_FIELDS)
    boxes_valid: torch.Tensor | None = None  # (n, K, N) bool

    def __len__(self) -> int:
        return int(self.ctx_tokens.shape[0])

    def batch(self, idx: torch.Tensor, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        keys = ("ctx_tokens", "dyn_tokens", "ego", "ego_valid", "waypoints", "waypoints_valid")
        if self.boxes is not None and self.boxes_valid is not None:
            keys += ("boxes", "boxes_valid")
        return {k: getattr(self, k)[idx].to(device) for k in keys}

    @staticmethod
    def from_arrays(cache: TokenCache, labels: dict[str, np.ndarray] | None, *, with_boxes: bool = False
                    ) -> WorldModelData:
        """Tokens plus labels; ``labels`` None gives an action-free set (no ego, no waypoints). ``with_boxes``
        keeps the labels' boxes too (``train.collision_weight``)."""
        n = len(cache.ctx)
        k = labels["waypoints_xyyaw"].shape[1] if labels is not None else 1
        if labels is not None and len(labels["ego"]) != n:
            raise DataError(f"the token cache has {n} clips but the store's labels {len(labels['ego'])}")
        return WorldModelData(
            ctx_tokens=torch.from_numpy(cache.ctx.astype(np.int64)),
            dyn_tokens=torch.from_numpy(cache.dyn.astype(np.int64)),
            ego=torch.from_numpy(label_ego_vectors(labels))
            if labels is not None else torch.zeros(n, EGO_DIM),
            ego_valid=torch.full((n,), labels is not None),
            waypoints=torch.from_numpy(labels["waypoints_xyyaw"].astype(np.float32)) if labels is not None
            else torch.zeros(n, k, 3),
            waypoints_valid=torch.from_numpy(labels["waypoints_valid"].astype(bool)) if labels is not None
            else torch.zeros(n, k, dtype=torch.bool),
            boxes=torch.from_numpy(np.asarray(labels["boxes"], np.float32)) if with_boxes and labels is not None
            else None,
            boxes_valid=torch.from_numpy(np.asarray(labels["boxes_valid"], bool)) if with_boxes and labels is not None
            else None)
