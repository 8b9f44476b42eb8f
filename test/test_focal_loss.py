"""The adaptive dynamic focal loss against hand-computed numbers (formula in world_model/focal_loss.py)."""

from __future__ import annotations

import math

import torch

from pwm_model.world_model.focal_loss import dynamic_focal_loss, token_weights

# four positions, three codes; targets vs the previous frame's tokens: static, changed, static, changed
TARGETS = torch.tensor([0, 1, 2, 0])
PREV = torch.tensor([0, 2, 2, 1])


def test_weights_follow_the_change_rule() -> None:
    torch.testing.assert_close(token_weights(TARGETS, PREV, 1.0, 0.4), torch.tensor([0.4, 1.0, 0.4, 1.0]))
    torch.testing.assert_close(token_weights(TARGETS, PREV, 2.0, 0.5), torch.tensor([0.5, 2.0, 0.5, 2.0]))


def test_uniform_logits_by_hand() -> None:
    logits = torch.zeros(4, 3)  # every CE = ln 3
    ln3 = math.log(3.0)
    loss = dynamic_focal_loss(logits, TARGETS, PREV)  # defaults alpha 1.0, beta 0.4
    assert math.isclose(float(loss), (0.4 + 1.0 + 0.4 + 1.0) * ln3 / 4, rel_tol=1e-6)
    adaptive = dynamic_focal_loss(logits, TARGETS, PREV, adaptive=True)  # divides by sum of weights instead
    assert math.isclose(float(adaptive), ln3, rel_tol=1e-6)
    plain = dynamic_focal_loss(logits, TARGETS, PREV, focal=False)
    assert math.isclose(float(plain), ln3, rel_tol=1e-6)


def test_focusing_term_validity_mask_and_shapes_by_hand() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 3.0]])
    q = [math.exp(row[t]) / sum(math.exp(v) for v in row) for row, t in zip(logits.tolist(), TARGETS.tolist())]
    w = [0.4, 1.0, 0.4, 1.0]
    gamma = 2.0
    terms = [wi * (1 - qi) ** gamma * -math.log(qi) for wi, qi in zip(w, q)]
    loss = dynamic_focal_loss(logits, TARGETS, PREV, gamma=gamma)
    assert math.isclose(float(loss), sum(terms) / 4, rel_tol=1e-5)
    valid = torch.tensor([True, True, False, True])
    masked = dynamic_focal_loss(logits, TARGETS, PREV, valid, gamma=gamma)
    assert math.isclose(float(masked), (terms[0] + terms[1] + terms[3]) / 3, rel_tol=1e-5)
    masked_adaptive = dynamic_focal_loss(logits, TARGETS, PREV, valid, gamma=gamma, adaptive=True)
    assert math.isclose(float(masked_adaptive), (terms[0] + terms[1] + terms[3]) / 2.4, rel_tol=1e-5)
    # leading dimensions (B, F, Ld, C) are flattened the same way
    again = dynamic_focal_loss(logits.view(1, 2, 2, 3), TARGETS.view(1, 2, 2), PREV.view(1, 2, 2), gamma=gamma)
    assert math.isclose(float(again), float(loss), rel_tol=1e-6)
    nothing = dynamic_focal_loss(logits, TARGETS, PREV, torch.zeros(4, dtype=torch.bool))
    assert float(nothing) == 0.0


def test_changed_tokens_get_more_gradient() -> None:
    logits = torch.zeros(4, 3, requires_grad=True)
    dynamic_focal_loss(logits, TARGETS, PREV).backward()
    g = logits.grad.abs().sum(1)
    assert math.isclose(float(g[1] / g[0]), 1.0 / 0.4, rel_tol=1e-5)
