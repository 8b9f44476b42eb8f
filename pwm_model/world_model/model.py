"""``PolicyWorldModel``: forecast dyn frames action-free by parallel next-frame generation, then plan K waypoints.

Vocabulary (docs/ARCHITECTURE.md): ctx codes ``[0, C)``, dyn codes ``[C, 2C)``, then the special tokens EGO (its
embedding row is the learned "no ego" embedding), ACT and QUERY. The frame head predicts dyn codes only (C logits).
Each position's input is the sum of its token, token-type, frame-index and slot embeddings (mask.py); the EGO
position takes an MLP of the ego vector ``[speed_mps, accel_mps2, one_hot(command, 3), yaw_rate_radps,
command_age_s]`` instead of its token embedding when the clip has ego labels. The waypoint head also reads the ego
vector directly (``plan_ego``, added to the query states where the plan is decided), so the route command cannot fade
in the trunk.

Training (teacher forcing): the dyn slots of frames t .. t+F-1 predict the same slots of frames t+1 .. t+F
(history frames are read but not supervised: the ctx frame t precedes them, so predicting frame t-k+1 from t-k
could copy from frame t). ACT and the K queries read everything before them (with ``plan_reads_forecast`` false only
the history: the plan-only ablation that keeps the video loss); the waypoint head regresses (x, y, yaw) in the ego
frame at t, as the correction to a kinematic prior (``world_model.prior``: none, cv or ctra; world_model/prior.py);
with ``world_model.ego_branch`` an MLP of the ego vector alone adds its own correction beside the head's. With
``world_model.command_branches`` both last layers have one output per route command and the command picks one
(conditional imitation), so left, straight and right are learned apart and a flipped command plans the other way.

Inference (``rollout``): one prefill pass over ``[EGO][ctx t][dyn t-H+1 .. t]``, one KV-cached pass per forecast
frame (all Ld slots at once), the last forecast frame is not fed back, then one pass over ``[ACT][Q_1 .. Q_K]``
(``prefill``, ``frame_step``, ``plan_step``; the ONNX graphs of pwm_model/export/graphs.py call these methods).
``rollout_token_by_token`` decodes the same number of tokens one per pass: the speed baseline only.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import torch
from torch import nn

from pwm_model.config import PwmConfig
from pwm_model.data.contract import COMMAND_AGE_INDEX, COMMAND_SLICE, COMMANDS, EGO_DIM
from pwm_model.data.schema import COMMAND_STRAIGHT
from pwm_model.world_model.focal_loss import dynamic_focal_loss
from pwm_model.world_model.mask import (
    TYPE_EGO,
    Layout,
    SlotTable,
    dual_sequence_layout,
    dyn_frame_layout,
    plan_layout,
    prefix_layout,
    sequence_layout,
    step_mask,
)
from pwm_model.world_model.prior import kinematic_prior
from pwm_model.world_model.transformer import KVCache, Transformer, cache_batch, cache_positions

EGO_SCALE = (10.0, 2.0, 1.0, 1.0, 1.0, 0.2, 1.0)  # divides the ego vector: typical 10 m/s, 2 m/s^2, 0.2 rad/s, 1 s
# The head predicts waypoint k in units that grow with its time t_k = k * waypoint_dt_s: metres per second for x and y
# (10 m/s), radians per second for yaw (0.25 rad/s), so every query's target is of order one whatever its horizon.
WAYPOINT_RATE = (10.0, 10.0, 0.25)
# With world_model.prior cv or ctra the head predicts the correction to a kinematic extrapolation of the ego state:
# waypoint k = head + prior_k(ego) (zero prior where the clip has no ego labels).


@lru_cache(maxsize=64)
def _layouts(slots: SlotTable, history: int, kind: str, arg: int) -> Layout:
    if kind == "prefix":
        return prefix_layout(slots, history)
    if kind == "frame":
        return dyn_frame_layout(slots, arg)
    if kind == "plan":
        return plan_layout(slots, history)
    if kind == "dual":
        return dual_sequence_layout(slots, history, arg)
    return sequence_layout(slots, history, arg, with_plan=kind == "seq+plan")


def _pick(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """Greedy argmax (temperature 0) or a sample of softmax(logits / T): (B, n, C) -> (B, n) int64."""
    if temperature <= 0:
        return logits.argmax(-1)
    b, n, c = logits.shape
    probs = torch.softmax(logits.float().reshape(b * n, c) / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).view(b, n)


class PolicyWorldModel(nn.Module):
    """The world-model transformer with its embeddings, frame head and waypoint head (sizes from ``cfg``)."""

    def __init__(self, cfg: PwmConfig) -> None:
        super().__init__()
        wm, tk, data = cfg.world_model, cfg.tokenizer, cfg.data
        self.cfg = cfg
        self.codebook_size = c = tk.codebook_size
        self.ctx_tokens, self.dyn_tokens = tk.ctx_tokens, tk.dyn_tokens
        self.history_frames = data.history_frames
        self.forecast_frames = wm.forecast_frames
        self.num_waypoints = data.num_waypoints
        self.ego_id, self.act_id, self.query_id = 2 * c, 2 * c + 1, 2 * c + 2
        self.vocab_size = 2 * c + 3
        self.slots = SlotTable(self.ctx_tokens, self.dyn_tokens, self.num_waypoints)
        d = wm.d_model
        self.tok_emb = nn.Embedding(self.vocab_size, d)
        self.type_emb = nn.Embedding(5, d)
        self.frame_emb = nn.Embedding(data.history_frames + data.future_frames, d)
        self.slot_emb = nn.Embedding(self.slots.size, d)
        self.ego_mlp = nn.Sequential(nn.Linear(EGO_DIM, wm.ego_hidden), nn.SiLU(), nn.Linear(wm.ego_hidden, d))
        self.transformer = Transformer(wm.layers, d, wm.heads, wm.mlp_ratio, wm.dropout)
        self.frame_head = nn.Linear(d, c)  # logits over the dyn codes
        h = wm.head_hidden
        self.branches = COMMANDS if wm.command_branches else 1  # outputs per waypoint: one per command, or one
        self.waypoint_head = nn.Sequential(nn.Linear(d, h), nn.SiLU(), nn.Linear(h, h), nn.SiLU(),
                                           nn.Linear(h, 3 * self.branches))
        self.plan_ego = nn.Linear(EGO_DIM, d)  # the ego vector straight into the query states (zero at init)
        self.register_buffer("ego_scale", torch.tensor(EGO_SCALE), persistent=False)
        keep = torch.ones(EGO_DIM)
        if not wm.command_age:
            keep[COMMAND_AGE_INDEX] = 0.0  # world_model.command_age false: the planner never sees the age
        self.register_buffer("ego_keep", keep, persistent=False)
        t_s = torch.arange(1, self.num_waypoints + 1, dtype=torch.float32) * data.waypoint_dt_s  # (K,)
        self.register_buffer("waypoint_scale", t_s[:, None] * torch.tensor(WAYPOINT_RATE)[None], persistent=False)
        self.register_buffer("waypoint_t_s", t_s, persistent=False)
        for module in (self.tok_emb, self.type_emb, self.frame_emb, self.slot_emb):
            nn.init.normal_(module.weight, 0.0, 0.02)
        # the ego MLP's first layer keeps PyTorch's default init (its inputs are O(1) features), so the ego
        # embedding varies with speed and command from the first fine-tuning step; outputs start at N(0, 0.02)
        for module in (self.ego_mlp[2], self.frame_head, *self.waypoint_head):
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.02)
                nn.init.zeros_(module.bias)
        # The plan head starts as a plain MLP of the query state plus the ego vector (PyTorch's default init, drawn
        # after every other parameter so the trunk's init does not change) with a zero last layer: a fresh head
        # plans exactly the prior, and learns the correction as fast as an MLP of the ego state does. (A checkpoint
        # written before plan_ego existed loads with plan_ego zero and plans as it did: world_model/checkpoint.py.)
        for module in (self.waypoint_head[0], self.waypoint_head[2], self.plan_ego):
            module.reset_parameters()
        nn.init.zeros_(self.waypoint_head[-1].weight)
        nn.init.zeros_(self.waypoint_head[-1].bias)
        # world_model.ego_branch: an MLP of the ego vector alone, its correction added beside the head's; zero last
        # layer, so a fresh branch changes nothing until fitted (train/ego_branch.py) or trained
        self.ego_branch: nn.Sequential | None = None
        if wm.ego_branch:
            self.reset_ego_branch()

    def reset_ego_branch(self) -> None:
        """A fresh ego branch: PyTorch's default init, zero last layer (it changes nothing until fitted)."""
        e = self.cfg.world_model.ego_branch_hidden
        self.ego_branch = nn.Sequential(nn.Linear(EGO_DIM, e), nn.SiLU(), nn.Linear(e, e), nn.SiLU(),
                                        nn.Linear(e, self.num_waypoints * 3 * self.branches))
        nn.init.zeros_(self.ego_branch[-1].weight)
        nn.init.zeros_(self.ego_branch[-1].bias)

    # ------------------------------------------------------------------------------------------------
    # embeddings and passes

    def _layout(self, kind: str, arg: int = 0) -> Layout:
        lay = _layouts(self.slots, self.history_frames, kind, arg)
        dev = self.tok_emb.weight.device
        return Layout(lay.types.to(dev), lay.frames.to(dev), lay.slots.to(dev), lay.blocks.to(dev),
                      None if lay.branches is None else lay.branches.to(dev))

    def embed(self, ids: torch.Tensor, layout: Layout, ego: torch.Tensor | None = None,
              ego_valid: torch.Tensor | None = None) -> torch.Tensor:
        """ids (B, S) int64 in the model vocabulary, layout of S positions, ego (B, 5), ego_valid (B,) bool.

        Returns (B, S, D). Where ``ego`` is None or ``ego_valid`` False the EGO position keeps the no-ego embedding.
        """
        tok = self.tok_emb(ids)  # (B, S, D)
        if ego is not None:
            e = self.ego_mlp(self.ego_features(ego))  # (B, D)
            sel = (layout.types == TYPE_EGO)[None, :, None]  # (1, S, 1)
            if ego_valid is not None:
                sel = sel & ego_valid.bool()[:, None, None]  # (B, S, 1)
            tok = torch.where(sel, e[:, None, :], tok)
        pos = self.type_emb(layout.types) + self.frame_emb(layout.frames) + self.slot_emb(layout.slots)  # (S, D)
        return tok + pos[None]

    def _prefix_ids(self, ctx_tokens: torch.Tensor, dyn_frames: torch.Tensor) -> torch.Tensor:
        """[EGO][ctx][dyn frames]: ctx (B, Lc), dyn (B, N, Ld) codes in [0, C) -> ids (B, 1 + Lc + N * Ld)."""
        b = ctx_tokens.shape[0]
        ego = torch.full((b, 1), self.ego_id, dtype=torch.long, device=ctx_tokens.device)
        return torch.cat([ego, ctx_tokens.long(), dyn_frames.long().flatten(1) + self.codebook_size], dim=1)

    def _plan_ids(self, batch: int, device: torch.device) -> torch.Tensor:
        """[ACT][QUERY x K] -> (B, 1 + K)."""
        act = torch.full((batch, 1), self.act_id, dtype=torch.long, device=device)
        return torch.cat([act, torch.full((batch, self.num_waypoints), self.query_id, dtype=torch.long, device=device)],
                         dim=1)

    def waypoints_from_hidden(self, h_queries: torch.Tensor, ego: torch.Tensor | None = None,
                              ego_valid: torch.Tensor | None = None) -> torch.Tensor:
        """Query hidden states (B, K, D) -> waypoints (B, K, 3) = (x_m, y_m, yaw_rad) in the ego frame at t.

        With an ``ego`` (B, EGO_DIM) the head also reads it (``plan_ego``), and ``world_model.prior`` cv or ctra adds
        that kinematic extrapolation of it (the head predicts the correction).
        """
        prior = self.cfg.world_model.prior
        valid = None
        if ego is not None:
            valid = torch.ones(ego.shape[0], 1, device=ego.device) if ego_valid is None else \
                ego_valid.float()[:, None]  # (B, 1)
            ego = ego.float() * valid  # no ego labels: a zero state, no prior, no ego branch
            h_queries = h_queries + (self.plan_ego(self.ego_features(ego)) * valid)[:, None, :]
        # float32 from here on, also under bf16 autocast: a bf16 waypoint 40 m ahead has a 0.25 m resolution, which
        # would round the head's corrections (and the loss's gradient) away
        raw = self.waypoint_head(h_queries).float()  # (B, K, 3 * branches)
        wp = self.select_branch(raw.view(raw.shape[0], self.num_waypoints, self.branches, 3), ego) \
            * self.waypoint_scale  # (B, K, 3) * (K, 3)
        if self.ego_branch is not None and ego is not None and valid is not None:
            wp = wp + self.ego_branch_correction(ego) * valid[:, :, None]
        if prior != "none" and ego is not None:
            wp = wp + kinematic_prior(prior, ego, self.waypoint_t_s)
        return wp

    def ego_features(self, ego: torch.Tensor) -> torch.Tensor:
        """The ego vector (B, EGO_DIM) as the layers reading it take it: scaled to O(1), the command age zeroed
        without ``world_model.command_age``."""
        return ego.float() / self.ego_scale * self.ego_keep

    def ego_branch_correction(self, ego: torch.Tensor) -> torch.Tensor:
        """The ego branch's correction to the prior, (B, EGO_DIM) -> (B, K, 3) in metres and radians (fp32)."""
        assert self.ego_branch is not None
        out = self.ego_branch(self.ego_features(ego)).float()
        return self.select_branch(out.view(-1, self.num_waypoints, self.branches, 3), ego) * self.waypoint_scale

    def select_branch(self, out: torch.Tensor, ego: torch.Tensor | None) -> torch.Tensor:
        """(B, K, branches, 3) -> (B, K, 3): with ``world_model.command_branches`` the output of the ego vector's
        route command (its one-hot weights the branches; an all-zero command, as without ego labels, takes the
        straight branch), else the only one."""
        if self.branches == 1:
            return out[:, :, 0]
        if ego is None:
            return out[:, :, COMMAND_STRAIGHT]
        weights = ego[:, COMMAND_SLICE].float()  # (B, 3) one-hot
        straight = torch.zeros_like(weights)
        straight[:, COMMAND_STRAIGHT] = 1.0
        weights = weights + (1.0 - weights.sum(dim=1, keepdim=True)).clamp_min(0.0) * straight
        return (out * weights[:, None, :, None]).sum(dim=2)

    # ------------------------------------------------------------------------------------------------
    # training

    def forward(self, batch: dict[str, torch.Tensor], *, with_video: bool = True, with_plan: bool = True,
                plan_future: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Teacher-forced losses.

        batch: ``ctx_tokens`` (B, Lc), ``dyn_tokens`` (B, H + F_data, Ld) codes of frames t-H+1 .. t+F_data,
        ``ego`` (B, 5), ``ego_valid`` (B,) bool, ``waypoints`` (B, K, 3), ``waypoints_valid`` (B, K) bool.
        ``plan_future`` (B, F-1, Ld): future frames the planning pass reads instead of the true ones (e.g. the
        model's own detached rollout, against exposure bias); both run in one pass (``dual_sequence_layout``).

        Returns ``video_loss``, ``token_acc`` (and ``logits`` (B, F, Ld, C), ``targets`` (B, F, Ld)) when the video
        loss is computed, ``traj_loss`` and ``waypoints`` (B, K, 3) when planning is.
        """
        h_frames, f = self.history_frames, self.forecast_frames
        ctx, dyn = batch["ctx_tokens"], batch["dyn_tokens"]
        b, ld, c = ctx.shape[0], self.dyn_tokens, self.codebook_size
        need = h_frames + f
        if dyn.shape[1] < need or dyn.shape[2] != ld or ctx.shape[1] != self.ctx_tokens:
            raise ValueError(f"batch has dyn_tokens {tuple(dyn.shape)} / ctx_tokens {tuple(ctx.shape)}; the model "
                             f"needs (B, >={need}, {ld}) / (B, {self.ctx_tokens})")
        with_video = with_video and f > 0
        fed_future = max(f - 1, 0)
        fed = dyn[:, : h_frames + fed_future]  # (B, H + F - 1, Ld)
        ego, ego_valid = batch.get("ego"), batch.get("ego_valid")
        wm = self.cfg.world_model
        if with_plan and not wm.plan_reads_forecast and fed_future > 0:  # the plan reads the history only
            out = self.forward(batch, with_video=with_video, with_plan=False) if with_video else {}
            ids = torch.cat([self._prefix_ids(ctx, dyn[:, :h_frames]), self._plan_ids(b, ctx.device)], dim=1)
            layout = self._layout("seq+plan", 0)
            hidden, _ = self.transformer(self.embed(ids, layout, ego, ego_valid), layout.mask())
            return self._plan_out(out, hidden, batch)
        dual = with_plan and plan_future is not None and fed_future > 0
        if dual and tuple(plan_future.shape[1:]) != (fed_future, ld):
            raise ValueError(f"plan_future must be (B, {fed_future}, {ld}), got {tuple(plan_future.shape)}")
        ids = self._prefix_ids(ctx, fed)
        if dual:
            ids = torch.cat([ids, plan_future.long().flatten(1) + c], dim=1)
        if with_plan:
            ids = torch.cat([ids, self._plan_ids(b, ids.device)], dim=1)
        layout = self._layout("dual" if dual else ("seq+plan" if with_plan else "seq"), fed_future)
        hidden, _ = self.transformer(self.embed(ids, layout, ego, ego_valid), layout.mask())
        out: dict[str, torch.Tensor] = {}
        if with_video:
            start = 1 + self.ctx_tokens + (h_frames - 1) * ld  # first slot of frame t
            logits = self.frame_head(hidden[:, start: start + f * ld]).view(b, f, ld, c)  # (B, F, Ld, C)
            targets = dyn[:, h_frames: h_frames + f].long()  # (B, F, Ld) frames t+1 .. t+F
            prev = dyn[:, h_frames - 1: h_frames - 1 + f].long()  # (B, F, Ld) frames t .. t+F-1
            out["video_loss"] = dynamic_focal_loss(logits, targets, prev, focal=wm.focal, alpha=wm.focal_alpha,
                                                   beta=wm.focal_beta, gamma=wm.focal_gamma,
                                                   adaptive=wm.focal_adaptive)
            out["token_acc"] = (logits.argmax(-1) == targets).float().mean().detach()
            out["logits"], out["targets"] = logits, targets
        return self._plan_out(out, hidden, batch) if with_plan else out

    def _plan_out(self, out: dict[str, torch.Tensor], hidden: torch.Tensor, batch: dict[str, torch.Tensor]
                  ) -> dict[str, torch.Tensor]:
        """Add ``waypoints`` and ``traj_loss`` from the hidden states of a pass that ends with the K queries."""
        wp = self.waypoints_from_hidden(hidden[:, -self.num_waypoints:], batch.get("ego"), batch.get("ego_valid"))
        scale = self.waypoint_scale if self.cfg.world_model.traj_loss_per_horizon else None
        out["waypoints"] = wp
        out["traj_loss"] = masked_l1(wp, batch["waypoints"], batch.get("waypoints_valid"), scale)
        return out

    # ------------------------------------------------------------------------------------------------
    # inference with the KV cache (prefill -> frame steps -> plan step)

    def prefill(self, ctx_tokens: torch.Tensor, dyn_history: torch.Tensor, ego: torch.Tensor | None = None,
                ego_valid: torch.Tensor | None = None, *, last_rows: int | None = None,
                matmul_attention: bool = False, stack_cache: bool = True) -> tuple[torch.Tensor, KVCache]:
        """[EGO][ctx t][dyn t-H+1 .. t] -> (logits of the last ``last_rows`` positions (B, rows, C), kv (layers, 2, B,
        h, P, hd), or per layer without ``stack_cache``).

        ``last_rows`` defaults to Ld: frame t's dyn slots, whose logits are frame t+1's; 1 for token-level decoding,
        0 for the cache only. The last layer computes only those rows. ``matmul_attention``: the export form of the
        attention (``Transformer.forward``).
        """
        ids = self._prefix_ids(ctx_tokens, dyn_history)
        layout = self._layout("prefix")
        rows = self.dyn_tokens if last_rows is None else last_rows
        hidden, kv = self.transformer(self.embed(ids, layout, ego, ego_valid), layout.mask(), use_cache=True,
                                      last_rows=rows, matmul_attention=matmul_attention, stack_cache=stack_cache)
        return self.frame_head(hidden), kv

    def frame_step(self, frame_tokens: torch.Tensor, frame_index: int | torch.Tensor, kv: KVCache, *,
                   matmul_attention: bool = False) -> tuple[torch.Tensor, KVCache]:
        """Feed one dyn frame (B, Ld) at ``frame_index`` (H = frame t+1; an int, or a (1,) int64 tensor that the
        frame embedding broadcasts over the slots) after the cache -> (logits of the next frame (B, Ld, C),
        kv (layers, 2, B, h, P + Ld, hd), or per layer as given).

        The frame is one block: it sees the whole cache and all of itself, so the pass needs no mask.
        """
        if isinstance(frame_index, torch.Tensor):
            layout = replace(self._layout("frame", self.history_frames), frames=frame_index)
        else:
            layout = self._layout("frame", frame_index)
        x = self.embed(frame_tokens.long() + self.codebook_size, layout)
        hidden, kv = self.transformer(x, None, kv, use_cache=True, matmul_attention=matmul_attention,
                                      stack_cache=isinstance(kv, torch.Tensor))
        return self.frame_head(hidden), kv

    def plan_step(self, kv: KVCache, ego: torch.Tensor | None = None, ego_valid: torch.Tensor | None = None,
                  *, matmul_attention: bool = False) -> torch.Tensor:
        """Feed [ACT][Q_1 .. Q_K] after the cached history + forecast -> waypoints (B, K, 3).

        With ``world_model.plan_reads_forecast`` false the queries read the history's part of the cache only.
        """
        if not self.cfg.world_model.plan_reads_forecast:
            kv = truncate_cache(kv, 1 + self.ctx_tokens + self.history_frames * self.dyn_tokens)
        layout = self._layout("plan")
        ids = self._plan_ids(cache_batch(kv), self.tok_emb.weight.device)
        hidden, _ = self.transformer(self.embed(ids, layout), step_mask(cache_positions(kv), layout.blocks), kv,
                                     matmul_attention=matmul_attention)
        return self.waypoints_from_hidden(hidden[:, 1:], ego, ego_valid)

    @staticmethod
    def next_tokens(logits: torch.Tensor, temperature: float = 0.0, generator: torch.Generator | None = None
                    ) -> torch.Tensor:
        """The next frame's codes (B, n) int64 from its logits (B, n, C): greedy (temperature 0) or sampled."""
        return _pick(logits, temperature, generator)

    def _check_rollout(self, ctx_tokens: torch.Tensor, dyn_history: torch.Tensor, forecast_frames: int) -> None:
        h = self.history_frames
        if tuple(dyn_history.shape[1:]) != (h, self.dyn_tokens) or ctx_tokens.shape[1] != self.ctx_tokens:
            raise ValueError(f"rollout needs ctx_tokens (B, {self.ctx_tokens}) and dyn_history (B, {h}, "
                             f"{self.dyn_tokens}), got {tuple(ctx_tokens.shape)} and {tuple(dyn_history.shape)}")
        if not 0 <= forecast_frames <= self.frame_emb.num_embeddings - h + 1:
            raise ValueError(f"forecast_frames must be in [0, {self.frame_emb.num_embeddings - h + 1}]")

    def decode_frames(self, logits: torch.Tensor, kv: KVCache, forecast_frames: int, temperature: float = 0.0,
                      generator: torch.Generator | None = None, *, matmul_attention: bool = False
                      ) -> tuple[torch.Tensor, KVCache, torch.Tensor]:
        """Parallel next-frame generation after ``prefill``: F frames, one ``frame_step`` per fed-back frame.

        logits (B, Ld, C) of frame t+1 from the prefill. Returns (forecast (B, F, Ld), kv with frames t+1 .. t+F-1
        appended (the last forecast frame is not fed back), logits (B, F, Ld, C) each frame was chosen from).
        """
        frames, all_logits = [], []
        for k in range(forecast_frames):
            frames.append(self.next_tokens(logits, temperature, generator))  # (B, Ld) frame t+k+1
            all_logits.append(logits)
            if k < forecast_frames - 1:
                logits, kv = self.frame_step(frames[-1], self.history_frames + k, kv,
                                             matmul_attention=matmul_attention)
        if not frames:
            b = logits.shape[0]
            return (torch.zeros(b, 0, self.dyn_tokens, dtype=torch.long, device=logits.device), kv,
                    logits.new_zeros(b, 0, self.dyn_tokens, self.codebook_size))
        return torch.stack(frames, 1), kv, torch.stack(all_logits, 1)

    def decode_tokens(self, last_logits: torch.Tensor, kv: torch.Tensor, forecast_frames: int,
                      temperature: float = 0.0, generator: torch.Generator | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token-level autoregressive decoding after ``prefill`` (the speed baseline only).

        The same F x Ld forecast tokens, one forward pass per token: each position predicts the next position's
        token and every fed token is a causal block of its own. The model was trained for next-frame prediction,
        so these tokens differ from ``decode_frames``'; only the cost is comparable. ``last_logits`` (B, C): the
        prefill's last position. Returns (forecast (B, F, Ld), kv with frames t+1 .. t+F-1 appended).
        """
        ld = self.dyn_tokens
        prefix_len = kv.shape[4]
        logits = last_logits[:, None]  # (B, 1, C): the last slot of frame t predicts slot 0 of frame t+1
        tokens = []
        for i in range(forecast_frames * ld):
            tokens.append(_pick(logits, temperature, generator))  # (B, 1)
            if i == forecast_frames * ld - 1:
                break
            frame, slot = self.history_frames + i // ld, i % ld
            lay = self._layout("frame", frame)
            one = Layout(lay.types[slot: slot + 1], lay.frames[slot: slot + 1], lay.slots[slot: slot + 1],
                         lay.blocks[slot: slot + 1])
            x = self.embed(tokens[-1] + self.codebook_size, one)
            hidden, kv = self.transformer(x, step_mask(kv.shape[4], one.blocks), kv, use_cache=True)
            logits = self.frame_head(hidden)
        b = kv.shape[2]
        forecast = torch.cat(tokens, 1).view(b, forecast_frames, ld) if tokens else torch.zeros(
            b, 0, ld, dtype=torch.long, device=kv.device)
        kv = kv[:, :, :, :, : prefix_len + max(forecast_frames - 1, 0) * ld]  # drop the partly fed frame t+F
        return forecast, kv

    def _rollout_args(self, ctx_tokens: torch.Tensor, dyn_history: torch.Tensor, forecast_frames: int | None,
                      temperature: float | None) -> tuple[int, float]:
        f = self.forecast_frames if forecast_frames is None else int(forecast_frames)
        temp = self.cfg.world_model.temperature if temperature is None else float(temperature)
        self._check_rollout(ctx_tokens, dyn_history, f)
        return f, temp

    @torch.no_grad()
    def rollout(self, ctx_tokens: torch.Tensor, dyn_history: torch.Tensor, ego: torch.Tensor | None = None,
                forecast_frames: int | None = None, *, ego_valid: torch.Tensor | None = None,
                temperature: float | None = None, generator: torch.Generator | None = None,
                return_logits: bool = False, matmul_attention: bool = False):
        """Forecast F frames (one pass each, all slots at once), then plan: ``prefill``, ``decode_frames``
        (F-1 ``frame_step``), ``plan_step``.

        ctx_tokens (B, Lc), dyn_history (B, H, Ld) codes of frames t-H+1 .. t, ego (B, 5) or None.
        Returns (forecast_tokens (B, F, Ld) int64 codes in [0, C), waypoints (B, K, 3)); with ``return_logits``
        also the logits (B, F, Ld, C) each frame was chosen from. Greedy unless ``temperature`` > 0.
        ``matmul_attention``: the export form of the attention (``Transformer.forward``).
        """
        f, temp = self._rollout_args(ctx_tokens, dyn_history, forecast_frames, temperature)
        logits, kv = self.prefill(ctx_tokens, dyn_history, ego, ego_valid, last_rows=self.dyn_tokens if f > 0 else 0,
                                  matmul_attention=matmul_attention, stack_cache=False)  # the cache stays here
        forecast, kv, all_logits = self.decode_frames(logits, kv, f, temp, generator,
                                                      matmul_attention=matmul_attention)
        waypoints = self.plan_step(kv, ego, ego_valid, matmul_attention=matmul_attention)
        return (forecast, waypoints, all_logits) if return_logits else (forecast, waypoints)

    @torch.no_grad()
    def plan_with_future(self, ctx_tokens: torch.Tensor, dyn_history: torch.Tensor, future: torch.Tensor,
                         ego: torch.Tensor | None = None, *, ego_valid: torch.Tensor | None = None) -> torch.Tensor:
        """Plan after the history and the given future frames instead of the model's own forecast.

        ``future`` (B, N, Ld) codes of frames t+1 .. t+N fed as the forecast (N <= F - 1, the frames the queries
        read; N = 0 plans from the history alone). The forecast-reliance probes feed true, random or copied frames.
        Returns waypoints (B, K, 3).
        """
        if future.shape[1] > max(self.forecast_frames - 1, 0) or future.shape[2:] != (self.dyn_tokens,):
            raise ValueError(f"future must be (B, <= {max(self.forecast_frames - 1, 0)}, {self.dyn_tokens}), got "
                             f"{tuple(future.shape)}")
        _, kv = self.prefill(ctx_tokens, dyn_history, ego, ego_valid, last_rows=0, stack_cache=False)
        for k in range(future.shape[1]):
            _, kv = self.frame_step(future[:, k], self.history_frames + k, kv)
        return self.plan_step(kv, ego, ego_valid)

    @torch.no_grad()
    def rollout_token_by_token(self, ctx_tokens: torch.Tensor, dyn_history: torch.Tensor,
                               ego: torch.Tensor | None = None, forecast_frames: int | None = None, *,
                               ego_valid: torch.Tensor | None = None, temperature: float | None = None,
                               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``rollout`` with ``decode_tokens`` instead of ``decode_frames``: the speed baseline only."""
        f, temp = self._rollout_args(ctx_tokens, dyn_history, forecast_frames, temperature)
        logits, kv = self.prefill(ctx_tokens, dyn_history, ego, ego_valid, last_rows=1)
        forecast, kv = self.decode_tokens(logits[:, -1], kv, f, temp, generator)
        return forecast, self.plan_step(kv, ego, ego_valid)


def truncate_cache(kv: KVCache, positions: int) -> KVCache:
    """The first ``positions`` positions of a cache (stacked or per layer)."""
    if isinstance(kv, torch.Tensor):
        return kv[:, :, :, :, :positions]
    return [(k[:, :, :positions], v[:, :, :positions]) for k, v in kv]


def masked_l1(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None,
              scale: torch.Tensor | None = None) -> torch.Tensor:
    """Mean |pred - target| over valid waypoints: pred, target (B, K, 3), valid (B, K) bool or None (all).

    ``scale`` (K, 3): each waypoint's error is divided by it first (the per-horizon normalised loss: every horizon
    and axis counts alike, instead of the far waypoints' metres dominating).
    """
    err = (pred - target.to(pred.dtype)).abs()  # (B, K, 3)
    if scale is not None:
        err = err / scale.to(err.dtype)
    if valid is None:
        return err.mean()
    v = valid.to(pred.dtype)[..., None]  # (B, K, 1)
    return (err * v).sum() / (v.sum() * pred.shape[-1]).clamp_min(1.0)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
