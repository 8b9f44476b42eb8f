"""The tiny tokenizer's graphs (``build_graphs``, written by the project's exporter ``export/export_onnx.py``) have
fixed names, static shapes and TensorRT-parsable operators, and run in ONNX Runtime with the same tokens, guide maps
and images as PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from pwm_model.config import apply_overrides, preset
from pwm_model.export.graphs import build_graphs
from pwm_model.export.onnx import DEFAULT_OPSET, export_graph
from pwm_model.runtime.onnx_check import check_graph
from pwm_model.tokenizer.model import Tokenizer
from test.model_utils import random_world_model

torch.set_num_threads(1)

# graph -> (input names, output names): what the runtime feeds and reads (the tiny preset has two guide maps a side)
NAMES = {
    "ctx_encoder": (["image_rgb"], ["ctx_tokens", "guide_enc_0", "guide_enc_1"]),
    "dyn_encoder": (["image_rgb", "guide_enc_0", "guide_enc_1"], ["dyn_tokens"]),
    "ctx_guide_decoder": (["ctx_tokens"], ["guide_dec_0", "guide_dec_1"]),
    "dyn_decoder": (["dyn_tokens", "guide_dec_0", "guide_dec_1"], ["image_rgb"]),
}
ATOL = 1e-4  # feature maps and decoded images in model units ([-1, 1] for images)
WM_OVERRIDES = ["world_model.layers=1", "world_model.d_model=32", "world_model.heads=2", "world_model.ego_hidden=16",
                "world_model.head_hidden=16"]  # build_graphs needs a world model; its size does not matter here


def _trained_looking(cfg) -> Tokenizer:
    """A tiny tokenizer whose cross-attention is not the identity (as after training)."""
    torch.manual_seed(0)
    tok = Tokenizer(cfg.tokenizer).eval()
    for m in tok.dyn.modules():
        if hasattr(m, "pos_q"):
            for p in (m.proj.weight, m.pos_q, m.pos_k):
                torch.nn.init.normal_(p, std=0.2)
    return tok


def _run(path: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, feed)


@pytest.mark.parametrize("guidance", [True, False])
def test_tiny_graphs_export_and_match_pytorch(tmp_path: Path, guidance: bool) -> None:
    cfg = apply_overrides(preset("tiny"), [f"tokenizer.guidance={str(guidance).lower()}", *WM_OVERRIDES])
    tok = _trained_looking(cfg)
    c = cfg.tokenizer
    graphs = build_graphs(tok, random_world_model(cfg), cfg, (c.ctx_height_px, c.ctx_width_px), preview=True)
    paths = {}
    for g, (inputs, outputs) in NAMES.items():
        paths[g] = tmp_path / f"{g}.onnx"
        entry = export_graph(graphs[g], paths[g], DEFAULT_OPSET)
        assert [t["name"] for t in entry["inputs"]] == inputs and [t["name"] for t in entry["outputs"]] == outputs
        model = onnx.load(str(paths[g]))
        assert model.opset_import[0].version == DEFAULT_OPSET
        for v in list(model.graph.input) + list(model.graph.output):
            dims = v.type.tensor_type.shape.dim
            assert all(d.HasField("dim_value") and d.dim_value > 0 for d in dims), f"{g}: {v.name} is not static"
        report = check_graph(paths[g])
        assert report.ok, f"{g}: {report.problems}"

    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (c.ctx_height_px, c.ctx_width_px, 3), dtype=np.uint8)
    prev = np.clip(rgb.astype(np.int32) + rng.integers(-12, 13, rgb.shape), 0, 255).astype(np.uint8)
    with torch.no_grad():
        img_ctx = graphs["ctx_encoder"].module.prep(torch.from_numpy(rgb))  # (1, 3, Hc, Wc) in [-1, 1]
        img_dyn = graphs["dyn_encoder"].module.prep(torch.from_numpy(rgb))  # (1, 3, Hd, Wd)
        ctx_tokens, enc = tok.encode_ctx(img_ctx)
        prev_tokens, prev_enc = tok.encode_ctx(graphs["ctx_encoder"].module.prep(torch.from_numpy(prev)))
        dec = tok.ctx_guide_dec(prev_tokens)
        dyn_tokens = tok.encode_dyn(img_dyn, prev_enc)
        rec_dyn = tok.decode_dyn(dyn_tokens, dec)  # (1, 3, Hd, Wd) in [-1, 1]
    enc_in = {n: t.numpy() for n, t in zip(NAMES["dyn_encoder"][0][1:], prev_enc)}
    dec_in = {n: t.numpy() for n, t in zip(NAMES["dyn_decoder"][0][1:], dec)}

    out = _run(paths["ctx_encoder"], {"image_rgb": rgb})
    assert out[0].dtype == np.int64 and np.array_equal(out[0], ctx_tokens.numpy())
    for a, b in zip(out[1:], enc, strict=True):
        np.testing.assert_allclose(a, b.numpy(), atol=ATOL)
    out = _run(paths["dyn_encoder"], {"image_rgb": rgb, **enc_in})
    assert out[0].dtype == np.int64 and np.array_equal(out[0], dyn_tokens.numpy())
    out = _run(paths["ctx_guide_decoder"], {"ctx_tokens": prev_tokens.numpy()})
    for a, b in zip(out, dec, strict=True):
        np.testing.assert_allclose(a, b.numpy(), atol=ATOL)
    image = _run(paths["dyn_decoder"], {"dyn_tokens": dyn_tokens.numpy(), **dec_in})[0]  # (Hd, Wd, 3) uint8
    grey = ((rec_dyn[0].permute(1, 2, 0) + 1.0) * 127.5).numpy()  # PyTorch's image in grey levels, unrounded
    assert image.dtype == np.uint8 and image.shape == grey.shape
    # within ATOL before the graph rounds to whole grey levels
    assert np.abs(image.astype(np.float64) - grey).max() <= 0.5 + ATOL * 127.5
    if guidance:  # the decoder really reads its guide inputs
        zeroed = {n: np.zeros_like(v) for n, v in dec_in.items()}
        other = _run(paths["dyn_decoder"], {"dyn_tokens": dyn_tokens.numpy(), **zeroed})[0]
        assert np.abs(other.astype(np.int32) - image.astype(np.int32)).max() > 0
