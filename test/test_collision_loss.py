"""The training-only overlap penalty: zero for a plan clear of every box, the penetration for one that is not, and a
gradient that pushes the waypoint out the shallow way."""

from __future__ import annotations

import pytest
import torch

from pwm_model.eval.metrics import EGO_CENTER_X_M, EGO_LENGTH_M
from pwm_model.train.collision_loss import overlap_penalty


def _lead(x_m: float, y_m: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One 4.5 x 1.8 m car at (x_m, y_m), heading along x, at both of two waypoint times."""
    box = torch.tensor([x_m, y_m, 0.8, 4.5, 1.8, 1.5, 0.0])
    return box.repeat(1, 2, 1, 1), torch.ones(1, 2, 1, dtype=torch.bool)


def test_a_plan_clear_of_the_box_pays_nothing_and_one_into_it_pays_the_penetration():
    boxes, valid = _lead(20.0)
    clear = torch.tensor([[[5.0, 0.0, 0.0], [10.0, 0.0, 0.0]]])
    assert float(overlap_penalty(clear, boxes, valid, margin_m=0.0)) == 0.0
    beside = torch.tensor([[[5.0, 0.0, 0.0], [20.0, 3.7, 0.0]]])  # level with it, one lane over: clear
    assert float(overlap_penalty(beside, boxes, valid, margin_m=0.25)) == 0.0
    # the second waypoint 1 m too far: the ego box's front is 1 m into the car's rear
    gap_x = 20.0 - 0.5 * 4.5 - (EGO_CENTER_X_M + 0.5 * EGO_LENGTH_M)  # base_link x where the boxes just touch
    into = torch.tensor([[[5.0, 0.0, 0.0], [gap_x + 1.0, 0.0, 0.0]]], requires_grad=True)
    pen = overlap_penalty(into, boxes, valid, margin_m=0.0)
    assert float(pen.detach()) == pytest.approx(1.0, abs=1e-5)
    assert float(overlap_penalty(into.detach(), boxes, valid, margin_m=0.25)) == pytest.approx(1.25, abs=1e-5)
    pen.backward()
    assert into.grad[0, 1, 0] > 0 and into.grad[0, 1, 1] == 0  # descending it moves the waypoint back, not sideways
    into = into.detach()
    assert float(overlap_penalty(into, boxes, torch.zeros_like(valid))) == 0.0  # no valid box, nothing to hit
    wp_valid = torch.tensor([[True, False]])
    assert float(overlap_penalty(into, boxes, valid, wp_valid)) == 0.0  # nor at a waypoint without a label
