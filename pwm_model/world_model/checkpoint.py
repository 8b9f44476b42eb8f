"""The world model in a checkpoint directory (``world_model.safetensors`` beside ``config.yaml``).

Mirrors ``pwm_model.tokenizer.model.load_tokenizer``: the format itself is ``pwm_model/checkpoint.py``.
"""

from __future__ import annotations

import os

import torch

from pwm_model.checkpoint import check_state_dict, load_config, load_state_dict, module_file, save_checkpoint
from pwm_model.config import PwmConfig
from pwm_model.data.contract import EGO_DIM, EGO_DIM_WITHOUT_YAW_RATE
from pwm_model.world_model.model import PolicyWorldModel


def load_world_model(directory: str | os.PathLike[str], cfg: PwmConfig | None = None, *,
                     device: str | torch.device = "cpu") -> tuple[PolicyWorldModel, PwmConfig]:
    """The world model of a checkpoint (its config, or ``cfg`` with the same tensor shapes), in eval mode."""
    cfg = cfg if cfg is not None else load_config(directory)
    model = PolicyWorldModel(cfg)
    init_from(model, directory)
    return model.to(device).eval(), cfg


def init_from(model: PolicyWorldModel, directory: str | os.PathLike[str]) -> None:
    """Load ``world_model.safetensors`` of ``directory`` into ``model`` (names and shapes must match).

    A checkpoint from before the yaw rate, the command age and ``plan_ego`` (a 5- or 6-entry ego vector, no
    ``plan_ego`` tensors) loads with zeros there: it then plans exactly as it did (``upgrade_state``). A model with
    ``world_model.ego_branch`` loaded from a checkpoint without one keeps its fresh branch (zero output). A model with
    ``world_model.command_branches`` loaded from one without starts each command's output as a copy of the single one
    (``branch_state``).
    """
    state = upgrade_state(dict(load_state_dict(directory, "world_model")))
    own = model.state_dict()
    if model.ego_branch is not None and not any(k.startswith("ego_branch.") for k in state):
        # a checkpoint without world_model.ego_branch (e.g. a pretrained trunk): the fresh branch, zero last layer
        state.update({k: v for k, v in own.items() if k.startswith("ego_branch.")})
    if model.branches > 1:
        branch_state(state, own, model.branches)
    check_state_dict(state, model, f"checkpoint file {module_file(directory, 'world_model')}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def upgrade_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A world-model state dict of an earlier layout in today's: zero columns for the ego entries it predates (the
    yaw rate, the command age), zero ``plan_ego``."""
    for key in ("ego_mlp.0.weight", "plan_ego.weight", "ego_branch.0.weight"):  # every layer reading the ego vector
        first = state.get(key)
        if first is not None and first.ndim == 2 and EGO_DIM_WITHOUT_YAW_RATE <= first.shape[1] < EGO_DIM:
            state[key] = torch.cat([first, first.new_zeros(first.shape[0], EGO_DIM - first.shape[1])], dim=1)
    if "plan_ego.weight" not in state and "ego_mlp.2.weight" in state:
        d = state["ego_mlp.2.weight"].shape[0]
        dtype = state["ego_mlp.2.weight"].dtype
        state["plan_ego.weight"] = torch.zeros(d, EGO_DIM, dtype=dtype)
        state["plan_ego.bias"] = torch.zeros(d, dtype=dtype)
    return state


def branch_state(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor], branches: int) -> None:
    """A checkpoint with one output per waypoint (no ``world_model.command_branches``) into a branched model: each
    command's branch starts as a copy of that output, so the model plans exactly as the checkpoint did."""
    for name in ("waypoint_head.4", "ego_branch.4"):
        for kind in ("weight", "bias"):
            key = f"{name}.{kind}"
            old, new = state.get(key), own.get(key)
            if old is None or new is None or old.shape[0] * branches != new.shape[0]:
                continue
            rows = old.shape[0] // 3  # 1 for the head, K for the ego branch: (rows, 3) -> (rows, branches, 3)
            tiled = old.reshape(rows, 1, 3, *old.shape[1:]).expand(rows, branches, 3, *old.shape[1:])
            state[key] = tiled.reshape(new.shape).clone()


def save_world_model(directory: str | os.PathLike[str], cfg: PwmConfig, model: PolicyWorldModel,
                     metrics: dict | None = None, dtype: torch.dtype | None = None) -> None:
    """Write the world model's weights, ``config.yaml`` and ``metrics`` into ``directory``."""
    save_checkpoint(directory, cfg, {"world_model": model}, metrics, dtype=dtype)
