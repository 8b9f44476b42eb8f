"""The PyTorch modules behind every exported graph, with their input/output names, meanings and example inputs.

It lives outside ``pwm_model.runtime`` because it imports torch: ``onnx.py`` exports these modules and
the torch backend (``torch_backend.py``) runs them, so the reference backend and the ONNX graphs compute the
same thing.

Graphs (static shapes, batch 1; token codes in ``[0, C)``):

    ctx_encoder        image_rgb (H, W, 3) uint8                 -> ctx_tokens (1, Lc) int64, guide_enc_*
    dyn_encoder        image_rgb (H, W, 3) uint8, guide_enc_*    -> dyn_tokens (1, Ld) int64
    rollout            ctx_tokens, dyn_history (1, H, Ld), ego (1, 6) -> forecast_tokens (1, F, Ld), waypoints (1, K, 3)
    ctx_guide_decoder  ctx_tokens                                 -> guide_dec_*
    dyn_decoder        dyn_tokens (1, Ld), guide_dec_*            -> image_rgb (Hd, Wd, 3) uint8
    ctx_decoder        ctx_tokens                                 -> image_rgb (Hc, Wc, 3) uint8

``(H, W)`` is the camera size when exported with ``--camera-size`` (the resize runs in the graph), else the ctx size
(the runner resizes on the CPU). The stepwise rollout replaces ``rollout`` by ``wm_prefill`` / ``wm_step`` /
``wm_plan`` with the KV cache ``(layers, 2, 1, heads, P, head_dim)`` as an input and output.

The world-model graphs are thin adapters over ``PolicyWorldModel``'s own ``rollout`` / ``prefill`` / ``frame_step`` /
``plan_step``, greedy and with the export form of the attention (explicit matmul with an additive float mask,
``Transformer.forward``); ``test/test_export.py`` checks them against ``PolicyWorldModel.rollout``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from pwm_model.config import PwmConfig
from pwm_model.data.contract import (
    EGO_DIM,
    integer_factor,
    model_window,
    resize_chain,
    resize_interpolation,
    resize_matrix,
)
from pwm_model.tokenizer.lfq import code_bit_log_probs
from pwm_model.tokenizer.model import Tokenizer
from pwm_model.world_model.mask import prefix_layout
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
    """(1, 3, H, W) -> (1, 3, h, w) as cv2.resize (pwm_model/data/contract.py): a box average for whole shrink
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
    """(H, W, 3) uint8 RGB -> (1, 3, h, w) float32 in [-1, 1] like the training data: centre-cropped to the first
    stage's aspect ratio where the contract's aspect rule says so (``model_window``, a static slice), then resized
    through ``stages`` (each resize rounds to whole grey levels, as cv2 does on uint8 images)."""

    def __init__(self, in_hw: tuple[int, int], stages: list[tuple[int, int]]) -> None:
        super().__init__()
        top, left, rows, cols = model_window(in_hw, stages[0])
        self.window = None if (rows, cols) == tuple(in_hw) else (top, left, rows, cols)
        self.steps = nn.ModuleList([Resize(a, b) for a, b in resize_chain((rows, cols), stages)])

    def forward(self, image_rgb: torch.Tensor) -> torch.Tensor:
        if self.window is not None:
            top, left, rows, cols = self.window
            image_rgb = image_rgb[top:top + rows, left:left + cols]
        x = image_rgb.to(torch.float32).permute(2, 0, 1).unsqueeze(0)  # (1, 3, H, W)
        return to_model_range(self.steps, x)


def to_model_range(steps: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    """Grey levels (1, 3, H, W) through the resizes, rounded after each, then scaled to [-1, 1]."""
    for step in steps:
        x = torch.floor(step(x) + 0.5)  # (1, 3, h, w) whole grey levels
    return x / 127.5 - 1.0


# ----------------------------------------------------------------------------------------------------
# tokenizer

def guide_names(tok: Tokenizer) -> tuple[list[str], list[str]]:
    """Graph tensor names of the guide maps: (ctx encoder maps ``guide_enc_*``, ctx decoder maps ``guide_dec_*``)."""
    return ([f"guide_enc_{i}" for i in range(len(tok.guide_enc_specs()))],
            [f"guide_dec_{i}" for i in range(len(tok.guide_dec_specs()))])


def guide_examples(tok: Tokenizer) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """Zero guide maps (1, channels, rows, cols) of the static graph shapes: (encoder maps, decoder maps)."""
    return (tuple(torch.zeros(1, s.channels, s.height, s.width) for s in tok.guide_enc_specs()),
            tuple(torch.zeros(1, s.channels, s.height, s.width) for s in tok.guide_dec_specs()))


class CtxEncoder(nn.Module):
    """img_ctx (1, 3, Hc, Wc) in [-1, 1] -> (ctx_tokens (1, Lc) int64, *guide_enc)."""

    def __init__(self, tok: Tokenizer) -> None:
        super().__init__()
        self.tok = tok

    def forward(self, img_ctx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        tokens, guide = self.tok.encode_ctx(img_ctx)
        return (tokens, *guide)


class DynEncoder(nn.Module):
    """img_dyn (1, 3, Hd, Wd) in [-1, 1], guide_enc -> dyn_tokens (1, Ld) int64. Without guidance the guide inputs
    stay in the graph (unused), so every variant has the same inputs."""

    def __init__(self, tok: Tokenizer) -> None:
        super().__init__()
        self.tok = tok

    def forward(self, img_dyn: torch.Tensor, *guide_enc: torch.Tensor) -> torch.Tensor:
        tokens = self.tok.encode_dyn(img_dyn, list(guide_enc))
        if not self.tok.guidance:
            tokens = tokens + sum((g.flatten()[:1] * 0).to(torch.int64) for g in guide_enc)
        return tokens


class CtxGuideDecoder(nn.Module):
    """ctx_tokens (1, Lc) int64 -> guide_dec (the ctx decoder maps that guide the dyn decoder)."""

    def __init__(self, tok: Tokenizer) -> None:
        super().__init__()
        self.tok = tok

    def forward(self, ctx_tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.tok.ctx_guide_dec(ctx_tokens))


class CtxDecoderGraph(nn.Module):
    """ctx_tokens (1, Lc) int64 -> the frame they encode, RGB uint8 (Hc, Wc, 3): the scene novelty's reconstruction
    (runtime/novelty.py)."""

    def __init__(self, tok: Tokenizer) -> None:
        super().__init__()
        self.tok = tok

    def forward(self, ctx_tokens: torch.Tensor) -> torch.Tensor:
        img = self.tok.decode_ctx(ctx_tokens)  # (1, 3, Hc, Wc) in [-1, 1]
        grey = torch.round((img.clamp(-1.0, 1.0) + 1.0) * 127.5)
        return grey[0].permute(1, 2, 0).to(torch.uint8)


class DynDecoder(nn.Module):
    """dyn_tokens (1, Ld) int64, guide_dec -> img_dyn (1, 3, Hd, Wd) in [-1, 1]; unused guide inputs kept as in
    ``DynEncoder``."""

    def __init__(self, tok: Tokenizer) -> None:
        super().__init__()
        self.tok = tok

    def forward(self, dyn_tokens: torch.Tensor, *guide_dec: torch.Tensor) -> torch.Tensor:
        img = self.tok.decode_dyn(dyn_tokens, list(guide_dec))
        if not self.tok.guidance:
            img = img + sum(g.flatten()[:1] * 0 for g in guide_dec)
        return img


class CtxEncoderGraph(nn.Module):
    def __init__(self, tok: Tokenizer, in_hw: tuple[int, int]) -> None:
        super().__init__()
        c = tok.cfg
        self.prep = ImageInput(in_hw, [(c.ctx_height_px, c.ctx_width_px)])
        self.enc = CtxEncoder(tok)

    def forward(self, image_rgb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.enc(self.prep(image_rgb))  # ctx_tokens (1, Lc), guide_enc_*


class DynEncoderGraph(nn.Module):
    def __init__(self, tok: Tokenizer, in_hw: tuple[int, int]) -> None:
        super().__init__()
        c = tok.cfg
        self.prep = ImageInput(in_hw, [(c.ctx_height_px, c.ctx_width_px), (c.dyn_height_px, c.dyn_width_px)])
        self.enc = DynEncoder(tok)

    def forward(self, image_rgb: torch.Tensor, *guide_enc: torch.Tensor) -> torch.Tensor:
        return self.enc(self.prep(image_rgb), *guide_enc)  # (1, Ld)


class DynDecoderGraph(nn.Module):
    """Decode one forecast frame against the guide maps of frame t to RGB uint8 (ARCHITECTURE.md: every forecast
    frame is decoded against the ctx decoder maps of frame t)."""

    def __init__(self, tok: Tokenizer) -> None:
        super().__init__()
        self.dec = DynDecoder(tok)

    def forward(self, dyn_tokens: torch.Tensor, *guide_dec: torch.Tensor) -> torch.Tensor:
        img = self.dec(dyn_tokens, *guide_dec)  # (1, 3, Hd, Wd) in [-1, 1]
        grey = torch.round((img.clamp(-1.0, 1.0) + 1.0) * 127.5)  # (1, 3, Hd, Wd) whole grey levels
        return grey[0].permute(1, 2, 0).to(torch.uint8)  # (Hd, Wd, 3)


# ----------------------------------------------------------------------------------------------------
# world model

class WorldModelGraph(nn.Module):
    """Base of the world-model graphs: the model and the sizes of its KV cache."""

    def __init__(self, wm: PolicyWorldModel) -> None:
        super().__init__()
        self.wm = wm
        self.h, self.f, self.ld = wm.history_frames, wm.forecast_frames, wm.dyn_tokens
        self.bits = int(wm.codebook_size).bit_length() - 1  # LFQ bits per code
        self.prefix_len = len(prefix_layout(wm.slots, self.h))  # positions the prefill caches
        self.plan_past = self.prefix_len + max(self.f - 1, 0) * self.ld  # cached positions the plan pass sees


class RolloutGraph(WorldModelGraph):
    """The whole rollout in one graph (``PolicyWorldModel.rollout``, greedy): prefill, F-1 cached frame passes, the
    plan pass."""

    def forward(self, ctx_tokens: torch.Tensor, dyn_history: torch.Tensor, ego: torch.Tensor
                ) -> tuple[torch.Tensor, ...]:
        if self.f == 0:
            return (self.wm.rollout(ctx_tokens, dyn_history, ego, temperature=0.0, matmul_attention=True)[1],)
        forecast, waypoints, logits = self.wm.rollout(ctx_tokens, dyn_history, ego, temperature=0.0,
                                                      return_logits=True, matmul_attention=True)
        return forecast, code_bit_log_probs(logits, self.bits), waypoints  # (1, F, Ld), (1, F, Ld, B, 2), (1, K, 3)


class PrefillGraph(WorldModelGraph):
    def forward(self, ctx_tokens: torch.Tensor, dyn_history: torch.Tensor, ego: torch.Tensor
                ) -> tuple[torch.Tensor, ...]:
        if self.f == 0:  # the cache only
            return (self.wm.prefill(ctx_tokens, dyn_history, ego, last_rows=0, matmul_attention=True)[1],)
        logits, kv = self.wm.prefill(ctx_tokens, dyn_history, ego, matmul_attention=True)  # frame t+1's logits
        return self.wm.next_tokens(logits), code_bit_log_probs(logits, self.bits), kv


class StepGraph(WorldModelGraph):
    def forward(self, frame_tokens: torch.Tensor, frame_offset: torch.Tensor, kv: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        logits, kv = self.wm.frame_step(frame_tokens, frame_offset + self.h, kv, matmul_attention=True)
        return self.wm.next_tokens(logits), code_bit_log_probs(logits, self.bits), kv


class PlanGraph(WorldModelGraph):
    def forward(self, kv: torch.Tensor, ego: torch.Tensor) -> torch.Tensor:
        return self.wm.plan_step(kv, ego, matmul_attention=True)


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
    enc, dec = guide_names(tok)
    enc_x, dec_x = guide_examples(tok)
    image = torch.zeros(*image_hw, 3, dtype=torch.uint8)
    ctx = torch.zeros(1, lc, dtype=torch.long)
    dyn = torch.zeros(1, ld, dtype=torch.long)
    hist = torch.zeros(1, h, ld, dtype=torch.long)
    ego = torch.zeros(1, EGO_DIM)
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
    ego_meaning = ("[speed_mps, accel_mps2, one_hot(command: left, straight, right), yaw_rate_radps, command_age_s "
                   "(seconds the command has had its value, capped at 5)]")
    wp_meaning = "K waypoints (x_m, y_m, yaw_rad) in base_link at t, k * waypoint_dt_s ahead"
    kv_meaning = "KV cache (layers, 2 = keys/values, 1, heads, positions, head_dim)"
    bit_meaning = ("forecast distribution per code bit (most significant first): log P(bit = 0), log P(bit = 1), "
                   "for the forecast surprise")
    if rollout == "unrolled":
        outs = ["forecast_tokens", "forecast_bit_logp", "waypoints"] if f > 0 else ["waypoints"]
        out["rollout"] = GraphModule(
            RolloutGraph(wm).eval(), ["ctx_tokens", "dyn_history", "ego"], outs, (ctx, hist, ego),
            {"ctx_tokens": "ctx codes of frame t", "dyn_history": hist_meaning, "ego": ego_meaning,
             "forecast_tokens": "greedy dyn codes of frames t+1 .. t+F", "forecast_bit_logp": bit_meaning,
             "waypoints": wp_meaning},
            role="world model: prefill, F-1 cached frame passes and the plan pass in one graph")
    else:
        prefill = PrefillGraph(wm).eval()
        p0 = prefill.prefix_len
        kv0 = torch.zeros(wm.transformer.layers, 2, 1, wm.transformer.heads, p0, wm.transformer.head_dim)
        out["wm_prefill"] = GraphModule(
            prefill, ["ctx_tokens", "dyn_history", "ego"],
            (["next_tokens", "next_bit_logp", "kv"] if f > 0 else ["kv"]),
            (ctx, hist, ego), {"ctx_tokens": "ctx codes of frame t", "dyn_history": hist_meaning, "ego": ego_meaning,
                               "next_tokens": "greedy dyn codes of frame t+1", "next_bit_logp": bit_meaning,
                               "kv": kv_meaning},
            role="world model: prefill over [EGO][ctx t][dyn t-H+1 .. t]")
        if f > 1:
            out["wm_step"] = GraphModule(
                StepGraph(wm).eval(), ["frame_tokens", "frame_offset", "kv"],
                ["next_tokens", "next_bit_logp", "kv_out"],
                (dyn, torch.zeros(1, dtype=torch.long), kv0),
                {"frame_tokens": "dyn codes of the frame t+k+1 being fed back", "frame_offset": "k (0 .. F-2)",
                 "kv": kv_meaning, "next_tokens": "greedy dyn codes of frame t+k+2", "next_bit_logp": bit_meaning,
                 "kv_out": kv_meaning},
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
            CtxGuideDecoder(tok).eval(), ["ctx_tokens"], list(dec), (ctx,),
            {"ctx_tokens": "ctx codes of frame t", **{n: "ctx decoder feature map (guides the dyn decoder)"
                                                     for n in dec}},
            role="preview: ctx decoder guide maps of frame t")
        out["dyn_decoder"] = GraphModule(
            DynDecoderGraph(tok).eval(), ["dyn_tokens", *dec], ["image_rgb"], (dyn, *dec_x),
            {"dyn_tokens": "dyn codes of one forecast frame", **{n: "guide maps of frame t" for n in dec},
             "image_rgb": "the decoded frame, RGB uint8 at the dyn resolution"},
            role="preview: decode one forecast frame against frame t's guide maps")
    out["ctx_decoder"] = GraphModule(
        CtxDecoderGraph(tok).eval(), ["ctx_tokens"], ["image_rgb"], (ctx,),
        {"ctx_tokens": "ctx codes of frame t", "image_rgb": "the frame the codes encode, RGB uint8 at the ctx "
                                                           "resolution"},
        role="monitor: the ctx reconstruction of frame t (the scene novelty's reconstruction error)")
    return out
