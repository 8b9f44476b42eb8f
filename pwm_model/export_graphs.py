"""The PyTorch modules behind every exported graph, with their input/output names, meanings and example inputs.

It lives outside ``pwm_model.runtime`` because it imports torch: ``export/export_onnx.py`` exports these modules and
the runtime's torch backend imports them lazily, so the reference backend and the ONNX graphs compute the same thing.

Graphs (static shapes, batch 1; token codes in ``[0, C)``):

    ctx_encoder        image_rgb (H, W, 3) uint8                 -> ctx_tokens (1, Lc) int64, guide_enc_*
    dyn_encoder        image_rgb (H, W, 3) uint8, guide_enc_*    -> dyn_tokens (1, Ld) int64
    rollout            ctx_tokens, dyn_history (1, H, Ld), ego (1, 5) -> forecast_tokens (1, F, Ld), waypoints (1, K, 3)
    ctx_guide_decoder  ctx_tokens                                 -> guide_dec_*
    dyn_decoder        dyn_tokens (1, Ld), guide_dec_*            -> image_rgb (Hd, Wd, 3) uint8

``(H, W)`` is the camera size when exported with ``--camera-size`` (the resize runs in the graph), else the ctx size
(the runner resizes on the CPU). The stepwise rollout replaces ``rollout`` by ``wm_prefill`` / ``wm_step`` /
``wm_plan`` with the KV cache ``(layers, 2, 1, heads, P, head_dim)`` as an input and output.

The world-model graphs re-state ``PolicyWorldModel.rollout`` (prefill, F-1 cached frame passes, plan pass) with the
model's own weights and layout (``world_model/mask.py``) in an export-friendly form: additive float masks instead of
boolean ``scaled_dot_product_attention`` masks, per-layer key/value tensors instead of a re-stacked cache, and a
last prefill layer that computes only the rows the frame head reads. ``test/test_export.py`` checks it against
``PolicyWorldModel.rollout``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from pwm_model.config import PwmConfig
from pwm_model.runtime.preprocess import integer_factor, resize_chain, resize_interpolation, resize_matrix
from pwm_model.tokenizer import export as tok_export
from pwm_model.tokenizer.model import Tokenizer
from pwm_model.world_model.mask import (
    block_causal_mask,
    dyn_frame_layout,
    plan_layout,
    prefix_layout,
    step_mask,
)
from pwm_model.world_model.model import PolicyWorldModel

ROLLOUT_MODES = ("unrolled", "stepwise")


@dataclass
class GraphModule:
    """One graph: the module, its named inputs/outputs, example inputs and what each tensor means."""

    module: nn.Module
    inputs: list[str]
    outputs: list[str]
    example: tuple[torch.Tensor, ...]
    meaning: dict[str, str] = field(default_factory=dict)
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)
    role: str = ""


# ----------------------------------------------------------------------------------------------------
# image input

class Resize(nn.Module):
    """(1, 3, H, W) -> (1, 3, h, w) as cv2.resize (pwm_model/runtime/preprocess.py): a box average for whole shrink
    factors, else two matrix products with OpenCV's own weights."""

    def __init__(self, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> None:
        super().__init__()
        interp = resize_interpolation(in_hw, out_hw)
        self.factor = integer_factor(in_hw, out_hw) if out_hw[0] <= in_hw[0] else None
        if self.factor is None:
            self.register_buffer("ry", torch.from_numpy(resize_matrix(in_hw[0], out_hw[0], interp)))  # (h, H)
            rx = resize_matrix(in_hw[1], out_hw[1], interp)  # (w, W)
            self.register_buffer("rx_t", torch.from_numpy(rx.T.copy()))  # (W, w)
            (h, w), (big_h, big_w) = out_hw, in_hw
            self.rows_first = h * big_h * big_w + h * big_w * w <= big_h * big_w * w + h * big_h * w  # fewer MACs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.factor is not None:
            return nn.functional.avg_pool2d(x, self.factor)  # (1, 3, h, w)
        if self.rows_first:
            return torch.matmul(torch.matmul(self.ry, x), self.rx_t)  # (1, 3, h, W) -> (1, 3, h, w)
        return torch.matmul(self.ry, torch.matmul(x, self.rx_t))  # (1, 3, H, w) -> (1, 3, h, w)


class ImageInput(nn.Module):
    """(H, W, 3) uint8 RGB -> (1, 3, h, w) float32 in [-1, 1], resized through ``stages`` like the training data
    (each resize rounds to whole grey levels, as cv2 does on uint8 images)."""

    def __init__(self, in_hw: tuple[int, int], stages: list[tuple[int, int]]) -> None:
        super().__init__()
        self.steps = nn.ModuleList([Resize(a, b) for a, b in resize_chain(in_hw, stages)])

    def forward(self, image_rgb: torch.Tensor) -> torch.Tensor:
        x = image_rgb.to(torch.float32).permute(2, 0, 1).unsqueeze(0)  # (1, 3, H, W)
        return to_model_range(self.steps, x)


def to_model_range(steps: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    """Grey levels (1, 3, H, W) through the resizes, rounded after each, then scaled to [-1, 1]."""
    for step in steps:
        x = torch.floor(step(x) + 0.5)  # (1, 3, h, w) whole grey levels
    return x / 127.5 - 1.0


class CtxEncoderGraph(nn.Module):
    def __init__(self, tok: Tokenizer, in_hw: tuple[int, int]) -> None:
        super().__init__()
        c = tok.cfg
        self.prep = ImageInput(in_hw, [(c.ctx_height_px, c.ctx_width_px)])
        self.enc = tok_export.CtxEncoder(tok)

    def forward(self, image_rgb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.enc(self.prep(image_rgb))  # ctx_tokens (1, Lc), guide_enc_*


class DynEncoderGraph(nn.Module):
    def __init__(self, tok: Tokenizer, in_hw: tuple[int, int]) -> None:
        super().__init__()
        c = tok.cfg
        self.prep = ImageInput(in_hw, [(c.ctx_height_px, c.ctx_width_px), (c.dyn_height_px, c.dyn_width_px)])
        self.enc = tok_export.DynEncoder(tok)

    def forward(self, image_rgb: torch.Tensor, *guide_enc: torch.Tensor) -> torch.Tensor:
        return self.enc(self.prep(image_rgb), *guide_enc)  # (1, Ld)


class DynDecoderGraph(nn.Module):
    """Decode one forecast frame against the guide maps of frame t to RGB uint8 (ARCHITECTURE.md: every forecast
    frame is decoded against the ctx decoder maps of frame t)."""

    def __init__(self, tok: Tokenizer) -> None:
        super().__init__()
        self.dec = tok_export.DynDecoder(tok)

    def forward(self, dyn_tokens: torch.Tensor, *guide_dec: torch.Tensor) -> torch.Tensor:
        img = self.dec(dyn_tokens, *guide_dec)  # (1, 3, Hd, Wd) in [-1, 1]
        grey = torch.round((img.clamp(-1.0, 1.0) + 1.0) * 127.5)  # (1, 3, Hd, Wd) whole grey levels
        return grey[0].permute(1, 2, 0).to(torch.uint8)  # (Hd, Wd, 3)


# ----------------------------------------------------------------------------------------------------
# world model

def _additive(mask: torch.Tensor) -> torch.Tensor:
    """Boolean attention mask (True = attend) -> additive float mask (0 / -inf)."""
    return torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))


class WorldModelGraph(nn.Module):
    """Shared pieces of the rollout graphs: embeddings, the layer loop with a KV cache, heads."""

    def __init__(self, wm: PolicyWorldModel) -> None:
        super().__init__()
        self.wm = wm
        self.h, self.f, self.ld = wm.history_frames, wm.forecast_frames, wm.dyn_tokens
        self.c, self.k = wm.codebook_size, wm.num_waypoints
        tr = wm.transformer
        self.heads, self.head_dim = tr.heads, tr.head_dim
        self.scale = 1.0 / math.sqrt(tr.head_dim)
        pre = prefix_layout(wm.slots, self.h)
        plan = plan_layout(wm.slots, self.h)
        frame = dyn_frame_layout(wm.slots, self.h)
        for name, lay in (("pre", pre), ("plan", plan), ("frame", frame)):
            self.register_buffer(f"{name}_types", lay.types, persistent=False)
            self.register_buffer(f"{name}_frames", lay.frames, persistent=False)
            self.register_buffer(f"{name}_slots", lay.slots, persistent=False)
        self.register_buffer("pre_mask", _additive(block_causal_mask(pre.blocks)), persistent=False)  # (S0, S0)
        self.prefix_len = len(pre)
        self.plan_past = self.prefix_len + max(self.f - 1, 0) * self.ld  # cached positions the plan pass sees
        self.register_buffer("plan_mask", _additive(step_mask(self.plan_past, plan.blocks)), persistent=False)
        self.register_buffer("plan_ids", torch.tensor([[wm.act_id] + [wm.query_id] * self.k]), persistent=False)

    def _pos(self, types: torch.Tensor, frames: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        wm = self.wm
        return wm.type_emb(types) + wm.frame_emb(frames) + wm.slot_emb(slots)  # (S, D)

    def prefix_embed(self, ctx_tokens: torch.Tensor, dyn_history: torch.Tensor, ego: torch.Tensor) -> torch.Tensor:
        """[EGO][ctx t][dyn t-H+1 .. t] -> (1, S0, D); the EGO position carries the ego MLP (PolicyWorldModel.embed)."""
        wm = self.wm
        ids = torch.cat([ctx_tokens.long(), dyn_history.long().flatten(1) + self.c], dim=1)  # (1, S0 - 1)
        e = wm.ego_mlp(ego.float() / wm.ego_scale)  # (1, D)
        tok = torch.cat([e[:, None, :], wm.tok_emb(ids)], dim=1)  # (1, S0, D)
        return tok + self._pos(self.pre_types, self.pre_frames, self.pre_slots)[None]

    def frame_embed(self, frame_tokens: torch.Tensor, frame_index: torch.Tensor) -> torch.Tensor:
        """One dyn frame (1, Ld) at frame index ``frame_index`` ((1,) int64; H = frame t+1) -> (1, Ld, D)."""
        wm = self.wm
        pos = wm.type_emb(self.frame_types) + wm.frame_emb(frame_index) + wm.slot_emb(self.frame_slots)  # (Ld, D)
        return wm.tok_emb(frame_tokens.long() + self.c) + pos[None]

    def plan_embed(self) -> torch.Tensor:
        return self.wm.tok_emb(self.plan_ids) + self._pos(self.plan_types, self.plan_frames, self.plan_slots)[None]

    def layers(self, x: torch.Tensor, mask: torch.Tensor | None, past: list[tuple[torch.Tensor, torch.Tensor]] | None,
               last_rows: int | None = None) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """x (1, n, D) through every block; ``past`` per-layer keys/values (1, h, P, hd). ``last_rows``: the last
        block computes its attention output and MLP for the last rows only (0: none). Returns (ln_f(x), kv)."""
        blocks = self.wm.transformer.blocks
        kv = []
        for i, blk in enumerate(blocks):
            rows = last_rows if i == len(blocks) - 1 else None
            x, k, v = self._block(blk, x, mask, None if past is None else past[i], rows)
            kv.append((k, v))
        return self.wm.transformer.ln_f(x), kv

    def _block(self, blk: nn.Module, x: torch.Tensor, mask: torch.Tensor | None,
               past: tuple[torch.Tensor, torch.Tensor] | None, rows: int | None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n, d = x.shape[1], x.shape[2]
        qkv = blk.attn.qkv(blk.ln1(x)).view(1, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3,1,h,n,hd)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if past is not None:
            k = torch.cat([past[0], k], dim=2)  # (1, h, P + n, hd)
            v = torch.cat([past[1], v], dim=2)
        if rows is not None:
            if rows == 0:
                return x, k, v
            q, x = q[:, :, -rows:], x[:, -rows:]
            mask = None if mask is None else mask[-rows:]
        att = torch.matmul(q * self.scale, k.transpose(-1, -2))  # (1, h, nq, P + n)
        if mask is not None:
            att = att + mask
        y = torch.matmul(torch.softmax(att, dim=-1), v).transpose(1, 2).reshape(1, -1, d)  # (1, nq, D)
        x = x + blk.attn.proj(y)
        x = x + blk.mlp(blk.ln2(x))
        return x, k, v

    def next_frame(self, hidden: torch.Tensor) -> torch.Tensor:
        """Hidden states of a dyn frame (1, Ld, D) -> the next frame's codes (1, Ld) (greedy)."""
        return self.wm.frame_head(hidden).argmax(-1)

    def prefill(self, ctx_tokens: torch.Tensor, dyn_history: torch.Tensor, ego: torch.Tensor
                ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """The prefix pass: hidden states of frame t's dyn slots (none when F = 0) and the KV cache."""
        x = self.prefix_embed(ctx_tokens, dyn_history, ego)
        return self.layers(x, self.pre_mask, None, last_rows=self.ld if self.f > 0 else 0)

    def plan(self, kv: list[tuple[torch.Tensor, torch.Tensor]], ego: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.layers(self.plan_embed(), self.plan_mask, kv)
        return self.wm.waypoints_from_hidden(hidden[:, 1:], ego)  # (1, K, 3)


class RolloutGraph(WorldModelGraph):
    """The whole rollout in one graph: prefill, F-1 cached frame passes, the plan pass (greedy)."""

    def forward(self, ctx_tokens: torch.Tensor, dyn_history: torch.Tensor, ego: torch.Tensor
                ) -> tuple[torch.Tensor, ...]:
        hidden, kv = self.prefill(ctx_tokens, dyn_history, ego)
        if self.f == 0:
            return (self.plan(kv, ego),)
        frames = [self.next_frame(hidden)]  # frame t+1 (1, Ld)
        for k in range(self.f - 1):
            idx = torch.full((1,), self.h + k, dtype=torch.long)
            hidden, kv = self.layers(self.frame_embed(frames[-1], idx), None, kv)
            frames.append(self.next_frame(hidden))
        return torch.stack(frames, dim=1), self.plan(kv, ego)  # (1, F, Ld), (1, K, 3)


def _stack_kv(kv: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    return torch.stack([torch.stack(pair) for pair in kv])  # (layers, 2, 1, h, P, hd)


def _unstack_kv(kv: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(kv[i, 0], kv[i, 1]) for i in range(kv.shape[0])]


class PrefillGraph(WorldModelGraph):
    def forward(self, ctx_tokens: torch.Tensor, dyn_history: torch.Tensor, ego: torch.Tensor
                ) -> tuple[torch.Tensor, ...]:
        hidden, kv = self.prefill(ctx_tokens, dyn_history, ego)
        if self.f == 0:
            return (_stack_kv(kv),)
        return self.next_frame(hidden), _stack_kv(kv)


class StepGraph(WorldModelGraph):
    def forward(self, frame_tokens: torch.Tensor, frame_offset: torch.Tensor, kv: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.frame_embed(frame_tokens, frame_offset + self.h)
        hidden, new = self.layers(x, None, _unstack_kv(kv))
        return self.next_frame(hidden), _stack_kv(new)


class PlanGraph(WorldModelGraph):
    def forward(self, kv: torch.Tensor, ego: torch.Tensor) -> torch.Tensor:
        return self.plan(_unstack_kv(kv), ego)


# ----------------------------------------------------------------------------------------------------
# the set of graphs

IMAGE_MEANING = "camera frame, RGB, uint8, rows x cols x 3; normalised (x / 127.5 - 1) and resized inside the graph"


def build_graphs(tok: Tokenizer, wm: PolicyWorldModel, cfg: PwmConfig, image_hw: tuple[int, int],
                 rollout: str = "unrolled", *, preview: bool = True) -> dict[str, GraphModule]:
    """Every graph of a model directory (modules in eval mode) for images of ``image_hw`` = (rows, cols)."""
    if rollout not in ROLLOUT_MODES:
        raise ValueError(f"rollout must be one of {ROLLOUT_MODES}, got {rollout!r}")
    tok, wm = tok.eval(), wm.eval()
    tk, h = cfg.tokenizer, cfg.data.history_frames
    f, lc, ld = cfg.world_model.forecast_frames, tk.ctx_tokens, tk.dyn_tokens
    names = tok_export.io_names(tok)
    enc, dec = names["dyn_encoder"][0][1:], names["dyn_decoder"][0][1:]
    enc_x = tok_export.example_inputs(tok)["dyn_encoder"][1:]
    dec_x = tok_export.example_inputs(tok)["dyn_decoder"][1:]
    image = torch.zeros(*image_hw, 3, dtype=torch.uint8)
    ctx = torch.zeros(1, lc, dtype=torch.long)
    dyn = torch.zeros(1, ld, dtype=torch.long)
    hist = torch.zeros(1, h, ld, dtype=torch.long)
    ego = torch.zeros(1, 5)
    guide_enc = {n: "ctx encoder feature map of the frame one model frame earlier (guidance)" for n in enc}
    out: dict[str, GraphModule] = {
        "ctx_encoder": GraphModule(
            CtxEncoderGraph(tok, image_hw).eval(), ["image_rgb"], ["ctx_tokens", *enc], (image,),
            {"image_rgb": IMAGE_MEANING, "ctx_tokens": "ctx codes of this frame, row-major over the token grid",
             **{n: "ctx encoder feature map of this frame (guides the next model frame's dyn encoding)" for n in enc}},
            role="ctx branch: the current frame -> ctx tokens and guide maps"),
        "dyn_encoder": GraphModule(
            DynEncoderGraph(tok, image_hw).eval(), ["image_rgb", *enc], ["dyn_tokens"], (image, *enc_x),
            {"image_rgb": IMAGE_MEANING, **guide_enc, "dyn_tokens": "dyn codes of this frame"},
            role="dyn branch: a frame + the guide maps of its predecessor -> dyn tokens"),
    }
    hist_meaning = "dyn codes of model frames t-H+1 .. t (oldest first)"
    ego_meaning = "[speed_mps, accel_mps2, one_hot(command: left, straight, right)]"
    wp_meaning = "K waypoints (x_m, y_m, yaw_rad) in base_link at t, k * waypoint_dt_s ahead"
    kv_meaning = "KV cache (layers, 2 = keys/values, 1, heads, positions, head_dim)"
    if rollout == "unrolled":
        outs = ["forecast_tokens", "waypoints"] if f > 0 else ["waypoints"]
        out["rollout"] = GraphModule(
            RolloutGraph(wm).eval(), ["ctx_tokens", "dyn_history", "ego"], outs, (ctx, hist, ego),
            {"ctx_tokens": "ctx codes of frame t", "dyn_history": hist_meaning, "ego": ego_meaning,
             "forecast_tokens": "greedy dyn codes of frames t+1 .. t+F", "waypoints": wp_meaning},
            role="world model: prefill, F-1 cached frame passes and the plan pass in one graph")
    else:
        prefill = PrefillGraph(wm).eval()
        p0 = prefill.prefix_len
        kv0 = torch.zeros(wm.transformer.layers, 2, 1, wm.transformer.heads, p0, wm.transformer.head_dim)
        out["wm_prefill"] = GraphModule(
            prefill, ["ctx_tokens", "dyn_history", "ego"], (["next_tokens", "kv"] if f > 0 else ["kv"]),
            (ctx, hist, ego), {"ctx_tokens": "ctx codes of frame t", "dyn_history": hist_meaning, "ego": ego_meaning,
                               "next_tokens": "greedy dyn codes of frame t+1", "kv": kv_meaning},
            role="world model: prefill over [EGO][ctx t][dyn t-H+1 .. t]")
        if f > 1:
            out["wm_step"] = GraphModule(
                StepGraph(wm).eval(), ["frame_tokens", "frame_offset", "kv"], ["next_tokens", "kv_out"],
                (dyn, torch.zeros(1, dtype=torch.long), kv0),
                {"frame_tokens": "dyn codes of the frame t+k+1 being fed back", "frame_offset": "k (0 .. F-2)",
                 "kv": kv_meaning, "next_tokens": "greedy dyn codes of frame t+k+2", "kv_out": kv_meaning},
                dynamic_axes={"kv": {4: "past_positions"}, "kv_out": {4: "positions"}},
                role="world model: one cached pass per fed-back forecast frame")
        kv_plan = torch.zeros(wm.transformer.layers, 2, 1, wm.transformer.heads, prefill.plan_past,
                              wm.transformer.head_dim)
        out["wm_plan"] = GraphModule(
            PlanGraph(wm).eval(), ["kv", "ego"], ["waypoints"], (kv_plan, ego),
            {"kv": kv_meaning, "ego": ego_meaning, "waypoints": wp_meaning},
            role="world model: [ACT][Q_1 .. Q_K] after history + forecast -> waypoints")
    if preview:
        out["ctx_guide_decoder"] = GraphModule(
            tok_export.CtxGuideDecoder(tok).eval(), ["ctx_tokens"], list(dec), (ctx,),
            {"ctx_tokens": "ctx codes of frame t", **{n: "ctx decoder feature map (guides the dyn decoder)"
                                                     for n in dec}},
            role="preview: ctx decoder guide maps of frame t")
        out["dyn_decoder"] = GraphModule(
            DynDecoderGraph(tok).eval(), ["dyn_tokens", *dec], ["image_rgb"], (dyn, *dec_x),
            {"dyn_tokens": "dyn codes of one forecast frame", **{n: "guide maps of frame t" for n in dec},
             "image_rgb": "the decoded frame, RGB uint8 at the dyn resolution"},
            role="preview: decode one forecast frame against frame t's guide maps")
    return out
