"""Adaptive dynamic focal loss on the forecast dyn tokens (reference/pwm_method.md section 4).

For every supervised position p (slot i of frame t predicting slot i of frame t+1) with input token x_p (frame t),
label y_p (frame t+1), predicted probability of the label q_p = softmax(logits_p)[y_p] and a validity flag v_p:

    w_p   = alpha  if y_p != x_p   (the token changed since the previous frame: "dynamic")
          = beta   if y_p == x_p   (static)
    f_p   = (1 - q_p) ** gamma     (focusing term; gamma = 0 turns it off, as in the official code)
    ce_p  = -log q_p

    L     = sum_p v_p * w_p * f_p * ce_p / N                   N = sum_p v_p   (the official normalisation)

Adaptive normalisation (``adaptive=True``): with r = the batch's share of changed tokens among valid positions,

    L     = sum_p v_p * w_p * f_p * ce_p / (N * (alpha * r + beta * (1 - r)))  =  ... / sum_p v_p * w_p

so the loss keeps its scale whether little or much of the scene moves. ``focal=False`` is the plain mean
cross-entropy of the ablation (w_p = 1, f_p = 1). Defaults (alpha 1.0, beta 0.4, gamma 0, not adaptive) follow the
official code; they live in ``WorldModelConfig``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name


def token_weights(targets: torch.Tensor, prev_tokens: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """w_p: ``alpha`` where the target differs from the previous frame's token at the same slot, else ``beta``."""
    changed = (targets != prev_tokens).float()
    return changed * (alpha - beta) + beta


def dynamic_focal_loss(logits: torch.Tensor, targets: torch.Tensor, prev_tokens: torch.Tensor,
                       valid: torch.Tensor | None = None, *, focal: bool = True, alpha: float = 1.0,
                       beta: float = 0.4, gamma: float = 0.0, adaptive: bool = False) -> torch.Tensor:
    """The loss above (a scalar).

    logits (..., C) float, targets (...) int64 in [0, C), prev_tokens (...) int64 (the input token of each position,
    same code space as the targets), valid (...) bool or None (all valid). Returns 0 when nothing is valid.
    """
    c = logits.shape[-1]
    logits = logits.reshape(-1, c).float()  # (N, C)
    targets = targets.reshape(-1)
    prev_tokens = prev_tokens.reshape(-1)
    v = torch.ones_like(targets, dtype=torch.float32) if valid is None else valid.reshape(-1).float()  # (N,)
    n = v.sum()
    if float(n) == 0.0:
        return logits.sum() * 0.0
    logp = F.log_softmax(logits, dim=-1).gather(1, targets[:, None])[:, 0]  # (N,) log q_p
    ce = -logp
    if not focal:
        return (v * ce).sum() / n
    w = token_weights(targets, prev_tokens, alpha, beta) * v  # (N,)
    if gamma > 0:
        ce = ce * (1.0 - logp.exp()).clamp_min(0.0).pow(gamma)
    total = (w * ce).sum()
    if adaptive:
        return total / w.sum().clamp_min(1e-12)
    return total / n
