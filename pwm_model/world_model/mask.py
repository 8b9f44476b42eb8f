"""The world model's token layout and its block-causal attention mask.

Sequence (docs/ARCHITECTURE.md; H history frames, F' fed future frames, K waypoint queries):

    [EGO] [ctx frame t: Lc] [dyn t-H+1: Ld] ... [dyn t: Ld] [dyn t+1: Ld] ... [dyn t+F': Ld] [ACT] [Q_1] .. [Q_K]

Every position carries a *block id* that never decreases along the sequence. A position may attend to a key when
the key's block id is at most its own: bidirectional inside a block (a ctx or dyn frame), causal across blocks.
EGO, ACT and every query are blocks of their own, so they are plainly causal.

Per-position information that the embedding needs (token type, frame index, slot index) is built here too, so the
training forward and the KV-cache rollout share one description of the layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# token types (index into the token-type embedding)
TYPE_EGO, TYPE_CTX, TYPE_DYN, TYPE_ACT, TYPE_QUERY = 0, 1, 2, 3, 4
NUM_TYPES = 5
# branches of a training sequence that plans from the model's own forecast (see ``dual_sequence_layout``)
BRANCH_SHARED, BRANCH_TRUE, BRANCH_ROLLOUT = 0, 1, 2


def block_causal_mask(block_ids: torch.Tensor) -> torch.Tensor:
    """Boolean attention mask (S, S) from block ids (S,): ``mask[i, j] = block_ids[j] <= block_ids[i]``.

    True means "query i may attend to key j" (the convention of ``scaled_dot_product_attention``).
    """
    return block_ids[None, :] <= block_ids[:, None]  # (S, S)


def step_mask(past_len: int, new_block_ids: torch.Tensor) -> torch.Tensor:
    """Mask (n, past_len + n) for n new positions appended after ``past_len`` cached ones.

    Every cached position belongs to an earlier block, so the new positions see all of them; among themselves
    they follow the block-causal rule.
    """
    n = new_block_ids.shape[0]
    past = torch.ones(n, past_len, dtype=torch.bool, device=new_block_ids.device)
    return torch.cat([past, block_causal_mask(new_block_ids)], dim=1)  # (n, past_len + n)


@dataclass
class Layout:
    """Per-position descriptors of one token sequence (all (S,) int64 tensors)."""

    types: torch.Tensor  # TYPE_* of each position
    frames: torch.Tensor  # frame index: 0 = oldest history frame, H-1 = current frame t, H-1+k = frame t+k
    slots: torch.Tensor  # row of the slot embedding (ctx slots, dyn slots, query slots, ego, act: disjoint ranges)
    blocks: torch.Tensor  # block id (non-decreasing)
    branches: torch.Tensor | None = None  # BRANCH_* of each position (None: all shared)

    def __len__(self) -> int:
        return int(self.types.shape[0])

    def branch_ids(self) -> torch.Tensor:
        return self.branches if self.branches is not None else torch.zeros_like(self.blocks)

    def with_branch(self, branch: int) -> Layout:
        return Layout(self.types, self.frames, self.slots, self.blocks, torch.full_like(self.blocks, branch))

    def cat(self, other: Layout) -> Layout:
        """This layout followed by ``other`` (its block ids shifted past this one's)."""
        shift = int(self.blocks.max()) + 1 if len(self) else 0
        branches = None
        if self.branches is not None or other.branches is not None:
            branches = torch.cat([self.branch_ids(), other.branch_ids()])
        return Layout(torch.cat([self.types, other.types]), torch.cat([self.frames, other.frames]),
                      torch.cat([self.slots, other.slots]), torch.cat([self.blocks, other.blocks + shift]), branches)

    def mask(self) -> torch.Tensor:
        """The attention mask (S, S): block-causal, and the rollout branch never sees the teacher-forced one."""
        m = block_causal_mask(self.blocks)
        if self.branches is None:
            return m
        b = self.branches
        return m & ~((b[:, None] == BRANCH_ROLLOUT) & (b[None, :] == BRANCH_TRUE))


@dataclass(frozen=True)
class SlotTable:
    """Disjoint ranges of the slot embedding table: ctx slots, dyn slots, query slots, then EGO and ACT."""

    ctx_tokens: int  # Lc
    dyn_tokens: int  # Ld
    num_queries: int  # K

    @property
    def dyn_offset(self) -> int:
        return self.ctx_tokens

    @property
    def query_offset(self) -> int:
        return self.ctx_tokens + self.dyn_tokens

    @property
    def ego_slot(self) -> int:
        return self.query_offset + self.num_queries

    @property
    def act_slot(self) -> int:
        return self.ego_slot + 1

    @property
    def size(self) -> int:
        return self.act_slot + 1


def _single(type_id: int, frame: int, slot: int, block: int) -> Layout:
    t = lambda v: torch.tensor([v], dtype=torch.long)  # noqa: E731
    return Layout(t(type_id), t(frame), t(slot), t(block))


def prefix_layout(slots: SlotTable, history_frames: int) -> Layout:
    """``[EGO][ctx t][dyn t-H+1] .. [dyn t]``: what the rollout's prefill pass reads."""
    cur = history_frames - 1
    lc = slots.ctx_tokens
    ego = _single(TYPE_EGO, cur, slots.ego_slot, 0)
    ctx = Layout(torch.full((lc,), TYPE_CTX), torch.full((lc,), cur), torch.arange(lc), torch.full((lc,), 1))
    out = ego.cat(ctx)
    for f in range(history_frames):
        out = out.cat(dyn_frame_layout(slots, f))
    return out


def dyn_frame_layout(slots: SlotTable, frame: int) -> Layout:
    """One dyn frame (one block) at frame index ``frame``."""
    ld = slots.dyn_tokens
    return Layout(torch.full((ld,), TYPE_DYN), torch.full((ld,), frame), slots.dyn_offset + torch.arange(ld),
                  torch.zeros(ld, dtype=torch.long))


def plan_layout(slots: SlotTable, history_frames: int) -> Layout:
    """``[ACT][Q_1] .. [Q_K]``, each a block of its own, at the current frame's index."""
    k, cur = slots.num_queries, history_frames - 1
    act = _single(TYPE_ACT, cur, slots.act_slot, 0)
    q = Layout(torch.full((k,), TYPE_QUERY), torch.full((k,), cur), slots.query_offset + torch.arange(k),
               torch.arange(k))
    return act.cat(q)


def sequence_layout(slots: SlotTable, history_frames: int, fed_future_frames: int, with_plan: bool) -> Layout:
    """The whole teacher-forced training sequence (see the module docstring)."""
    out = prefix_layout(slots, history_frames)
    for k in range(fed_future_frames):
        out = out.cat(dyn_frame_layout(slots, history_frames + k))
    if with_plan:
        out = out.cat(plan_layout(slots, history_frames))
    return out


def dual_sequence_layout(slots: SlotTable, history_frames: int, fed_future_frames: int) -> Layout:
    """Teacher forcing and planning from a forecast in one pass (training against exposure bias):

        [EGO][ctx][dyn history] [true dyn t+1 .. t+F-1] [forecast dyn t+1 .. t+F-1][ACT][Q_1 .. Q_K]
         shared                  BRANCH_TRUE             BRANCH_ROLLOUT

    The true frames carry the video loss; the forecast frames, ACT and the queries never attend to them
    (``Layout.mask``), so the queries see exactly what a separate pass over [prefix][forecast][ACT][Q] would give.
    """
    out = prefix_layout(slots, history_frames)
    for branch in (BRANCH_TRUE, BRANCH_ROLLOUT):
        for k in range(fed_future_frames):
            out = out.cat(dyn_frame_layout(slots, history_frames + k).with_branch(branch))
    return out.cat(plan_layout(slots, history_frames).with_branch(BRANCH_ROLLOUT))
