"""The tiny tokenizer's graphs export to ONNX (opset 17, static shapes, TensorRT-parsable operators) and run in
ONNX Runtime with the same tokens and images as PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from pwm_model.config import apply_overrides, preset
from pwm_model.tokenizer.export import GRAPHS, OPSET, export_onnx, io_names
from pwm_model.tokenizer.model import Tokenizer

torch.set_num_threads(1)

# Operators TensorRT's ONNX parser supports that these graphs may use (GroupNorm arrives as InstanceNormalization
# plus reshapes at opset 17).
TRT_OPS = {"Add", "Cast", "Clip", "Constant", "Conv", "Div", "Floor", "Gather", "Greater", "Identity",
           "InstanceNormalization", "GroupNormalization", "MatMul", "Mul", "ReduceSum", "Reshape", "Resize", "Shape",
           "Sigmoid", "Softmax", "Split", "Squeeze", "Sub", "Transpose", "Unsqueeze", "Concat", "Slice", "Sign",
           "AveragePool", "Expand", "ReduceMean"}


def _trained_looking(cfg) -> Tokenizer:
    """A tiny tokenizer whose cross-attention is not the identity (as after training)."""
    torch.manual_seed(0)
    tok = Tokenizer(cfg.tokenizer).eval()
    for m in tok.dyn.modules():
        if hasattr(m, "pos_q"):
            for p in (m.proj.weight, m.pos_q, m.pos_k):
                torch.nn.init.normal_(p, std=0.2)
    return tok


def _run(path: Path, names: list[str], inputs: list[torch.Tensor]) -> list[np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {n: t.numpy() for n, t in zip(names, inputs)})


@pytest.mark.parametrize("guidance", [True, False])
def test_tiny_graphs_export_and_match_pytorch(tmp_path: Path, guidance: bool) -> None:
    cfg = apply_overrides(preset("tiny"), [f"tokenizer.guidance={str(guidance).lower()}"])
    tok = _trained_looking(cfg)
    paths = export_onnx(tok, tmp_path)
    assert sorted(paths) == sorted(GRAPHS)
    names = io_names(tok)
    for g, p in paths.items():
        model = onnx.load(str(p))
        onnx.checker.check_model(model)
        assert model.opset_import[0].version == OPSET
        ops = {n.op_type for n in model.graph.node}
        assert ops <= TRT_OPS, f"{g} uses {sorted(ops - TRT_OPS)}"
        for v in list(model.graph.input) + list(model.graph.output):
            dims = v.type.tensor_type.shape.dim
            assert all(d.HasField("dim_value") and d.dim_value > 0 for d in dims), f"{g}: {v.name} is not static"
        assert [i.name for i in model.graph.input] == names[g][0]

    c = cfg.tokenizer
    g = torch.Generator().manual_seed(1)
    img = torch.rand(1, 3, c.ctx_height_px, c.ctx_width_px, generator=g) * 2 - 1
    prev = (img + 0.1 * torch.randn(img.shape, generator=g)).clamp(-1, 1)
    img_dyn = torch.nn.functional.interpolate(img, size=(c.dyn_height_px, c.dyn_width_px), mode="area")
    with torch.no_grad():
        ctx_tokens, enc = tok.encode_ctx(img)
        prev_tokens, prev_enc = tok.encode_ctx(prev)
        dec = tok.ctx_guide_dec(prev_tokens)
        dyn_tokens = tok.encode_dyn(img_dyn, prev_enc)
        rec_ctx = tok.decode_ctx(ctx_tokens)
        rec_dyn = tok.decode_dyn(dyn_tokens, dec)

    out = _run(paths["ctx_encoder"], names["ctx_encoder"][0], [img])
    assert out[0].dtype == np.int64 and np.array_equal(out[0], ctx_tokens.numpy())
    for a, b in zip(out[1:], enc):
        np.testing.assert_allclose(a, b.numpy(), atol=1e-4)
    out = _run(paths["dyn_encoder"], names["dyn_encoder"][0], [img_dyn, *prev_enc])
    assert np.array_equal(out[0], dyn_tokens.numpy())
    out = _run(paths["ctx_guide_decoder"], names["ctx_guide_decoder"][0], [prev_tokens])
    for a, b in zip(out, dec):
        np.testing.assert_allclose(a, b.numpy(), atol=1e-4)
    out = _run(paths["ctx_decoder"], names["ctx_decoder"][0], [ctx_tokens])
    np.testing.assert_allclose(out[0], rec_ctx.numpy(), atol=1e-4)
    out = _run(paths["dyn_decoder"], names["dyn_decoder"][0], [dyn_tokens, *dec])
    np.testing.assert_allclose(out[0], rec_dyn.numpy(), atol=1e-4)
    if guidance:  # the decoder really reads its guide inputs
        other = _run(paths["dyn_decoder"], names["dyn_decoder"][0], [dyn_tokens, *[d * 0 for d in dec]])
        assert np.abs(other[0] - rec_dyn.numpy()).max() > 1e-3
