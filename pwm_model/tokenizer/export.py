"""Export wrappers: each tokenizer graph as a small module with plain tensor inputs and outputs (static shapes).

    ctx_encoder        img_ctx (1, 3, Hc, Wc) float32         -> ctx_tokens (1, Lc) int64, guide_enc_0..n
    dyn_encoder        img_dyn (1, 3, Hd, Wd), guide_enc_0..n  -> dyn_tokens (1, Ld) int64
    ctx_guide_decoder  ctx_tokens (1, Lc) int64                -> guide_dec_0..m
    ctx_decoder        ctx_tokens (1, Lc) int64                -> img_ctx (1, 3, Hc, Wc) in [-1, 1]
    dyn_decoder        dyn_tokens (1, Ld), guide_dec_0..m      -> img_dyn (1, 3, Hd, Wd) in [-1, 1]

``export_onnx(tok, out_dir)`` writes them with ``torch.onnx.export`` (opset 17, the TorchScript exporter).
With ``tokenizer.guidance=false`` the dyn graphs still take the guide inputs (so the runtime wiring is the same) but
ignore them.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from pwm_model.tokenizer.model import Tokenizer

OPSET = 17
GRAPHS = ("ctx_encoder", "dyn_encoder", "ctx_guide_decoder", "ctx_decoder", "dyn_decoder")


class CtxEncoder(nn.Module):
    def __init__(self, tok: Tokenizer) -> None:
        super().__init__()
        self.tok = tok

    def forward(self, img_ctx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        tokens, guide = self.tok.encode_ctx(img_ctx)
        return (tokens, *guide)


class DynEncoder(nn.Module):
    def __init__(self, tok: Tokenizer) -> None:
        super().__init__()
        self.tok = tok

    def forward(self, img_dyn: torch.Tensor, *guide_enc: torch.Tensor) -> torch.Tensor:
        tokens = self.tok.encode_dyn(img_dyn, list(guide_enc))
        if not self.tok.guidance:  # keep the (unused) inputs in the graph so every variant has the same signature
            tokens = tokens + sum((g.flatten()[:1] * 0).to(torch.int64) for g in guide_enc)
        return tokens


class CtxGuideDecoder(nn.Module):
    def __init__(self, tok: Tokenizer) -> None:
        super().__init__()
        self.tok = tok

    def forward(self, ctx_tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.tok.ctx_guide_dec(ctx_tokens))


class CtxDecoder(nn.Module):
    def __init__(self, tok: Tokenizer) -> None:
        super().__init__()
        self.tok = tok

    def forward(self, ctx_tokens: torch.Tensor) -> torch.Tensor:
        return self.tok.decode_ctx(ctx_tokens)


class DynDecoder(nn.Module):
    def __init__(self, tok: Tokenizer) -> None:
        super().__init__()
        self.tok = tok

    def forward(self, dyn_tokens: torch.Tensor, *guide_dec: torch.Tensor) -> torch.Tensor:
        img = self.tok.decode_dyn(dyn_tokens, list(guide_dec))
        if not self.tok.guidance:
            img = img + sum(g.flatten()[:1] * 0 for g in guide_dec)
        return img


def example_inputs(tok: Tokenizer, batch: int = 1) -> dict[str, tuple[torch.Tensor, ...]]:
    """Zero-valued inputs of each graph (their shapes are the graph's static input shapes)."""
    c = tok.cfg
    enc = tuple(torch.zeros(batch, s.channels, s.height, s.width) for s in tok.guide_enc_specs())
    dec = tuple(torch.zeros(batch, s.channels, s.height, s.width) for s in tok.guide_dec_specs())
    ctx_tokens = torch.zeros(batch, c.ctx_tokens, dtype=torch.int64)
    dyn_tokens = torch.zeros(batch, c.dyn_tokens, dtype=torch.int64)
    return {
        "ctx_encoder": (torch.zeros(batch, 3, c.ctx_height_px, c.ctx_width_px),),
        "dyn_encoder": (torch.zeros(batch, 3, c.dyn_height_px, c.dyn_width_px), *enc),
        "ctx_guide_decoder": (ctx_tokens,),
        "ctx_decoder": (ctx_tokens,),
        "dyn_decoder": (dyn_tokens, *dec),
    }


def io_names(tok: Tokenizer) -> dict[str, tuple[list[str], list[str]]]:
    """(input names, output names) of each graph."""
    enc = [f"guide_enc_{i}" for i in range(len(tok.guide_enc_specs()))]
    dec = [f"guide_dec_{i}" for i in range(len(tok.guide_dec_specs()))]
    return {
        "ctx_encoder": (["img_ctx"], ["ctx_tokens", *enc]),
        "dyn_encoder": (["img_dyn", *enc], ["dyn_tokens"]),
        "ctx_guide_decoder": (["ctx_tokens"], dec),
        "ctx_decoder": (["ctx_tokens"], ["img_ctx"]),
        "dyn_decoder": (["dyn_tokens", *dec], ["img_dyn"]),
    }


def wrappers(tok: Tokenizer) -> dict[str, nn.Module]:
    return {"ctx_encoder": CtxEncoder(tok), "dyn_encoder": DynEncoder(tok), "ctx_guide_decoder": CtxGuideDecoder(tok),
            "ctx_decoder": CtxDecoder(tok), "dyn_decoder": DynDecoder(tok)}


def export_onnx(tok: Tokenizer, out_dir: str | os.PathLike[str], graphs: tuple[str, ...] = GRAPHS,
                batch: int = 1) -> dict[str, Path]:
    """Write ``<graph>.onnx`` for each named graph (static shapes, opset 17); returns their paths."""
    from pwm_model.io_utils import atomic_path

    tok = tok.eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    inputs, names, mods = example_inputs(tok, batch), io_names(tok), wrappers(tok)
    paths = {}
    for g in graphs:
        with atomic_path(out / f"{g}.onnx") as tmp, torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shapes are static by design
            torch.onnx.export(mods[g], inputs[g], str(tmp), input_names=names[g][0], output_names=names[g][1],
                              opset_version=OPSET, dynamo=False, do_constant_folding=True)
        paths[g] = out / f"{g}.onnx"
    return paths
