"""The ego-status MLP baseline: the ego vector the world model also sees -> K waypoints, trained with L1 on the
same training clips (NAVSIM's "Ego-MLP": no camera at all)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pwm_model.data.contract import EGO_DIM

EGO_MLP_HIDDEN = 128  # width of the ego-status MLP's two hidden layers
EGO_MLP_STEPS = 2000  # Adam steps on the training clips (seconds on a CPU)
EGO_MLP_LR = 3e-3


class EgoMLP(nn.Module):
    """ego vector (N, EGO_DIM) = [speed_mps, accel_mps2, one_hot(command, 3), yaw_rate_radps, command_age_s] ->
    waypoints (N, K, 3)."""

    def __init__(self, num_waypoints: int, hidden: int = EGO_MLP_HIDDEN) -> None:
        super().__init__()
        self.k = num_waypoints
        self.register_buffer("scale_in", torch.tensor([10.0, 2.0, 1.0, 1.0, 1.0, 0.2, 1.0]))
        self.register_buffer("scale_out", torch.tensor([10.0, 10.0, 1.0]))
        self.net = nn.Sequential(nn.Linear(EGO_DIM, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, num_waypoints * 3))

    def forward(self, ego: torch.Tensor) -> torch.Tensor:
        return self.net(ego / self.scale_in).view(-1, self.k, 3) * self.scale_out

    @staticmethod
    def fit(ego: np.ndarray, waypoints: np.ndarray, valid: np.ndarray, *, steps: int = EGO_MLP_STEPS,
            batch_size: int = 256, lr: float = EGO_MLP_LR, seed: int = 0) -> EgoMLP:
        """Train on (N, EGO_DIM) ego vectors and (N, K, 3) waypoints with an L1 loss over the valid ones."""
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        x = torch.as_tensor(ego, dtype=torch.float32)
        y = torch.as_tensor(waypoints, dtype=torch.float32)
        v = torch.as_tensor(valid, dtype=torch.float32)[..., None]
        model = EgoMLP(y.shape[1])
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        for _ in range(steps):
            idx = torch.randint(0, len(x), (min(batch_size, len(x)),), generator=g)
            loss = ((model(x[idx]) - y[idx]).abs() * v[idx]).sum() / (v[idx].sum() * 3).clamp_min(1.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        return model.eval()

    @torch.no_grad()
    def predict(self, ego: np.ndarray) -> np.ndarray:
        return self(torch.as_tensor(ego, dtype=torch.float32)).numpy()
