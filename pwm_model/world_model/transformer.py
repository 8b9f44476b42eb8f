"""Decoder-only pre-norm transformer with an explicit attention mask and a tensor KV cache.

The KV cache is one plain tensor ``(layers, 2, B, heads, P, head_dim)`` (2 = keys, values; P cached positions):
``forward`` takes the past cache and returns the present one (past + the new positions), so a prefill graph and a
per-frame step graph can be exported to ONNX with the cache as ordinary inputs and outputs. A loop that keeps the
cache to itself (``PolicyWorldModel.rollout``, the unrolled graph) passes it per layer instead, a list of
``(keys, values)`` each ``(B, heads, P, head_dim)``, and so never re-stacks it between passes.

Attention runs through ``scaled_dot_product_attention`` (training, PyTorch inference) or, with
``matmul_attention``, as explicit matrix products with an additive float mask (0 / -inf): the form the exported
graphs use (plain MatMul / Add / Softmax nodes). Both compute softmax(q k^T / sqrt(head_dim) + mask) v.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from torch import nn

KVCache = torch.Tensor | list[tuple[torch.Tensor, torch.Tensor]]  # stacked, or per layer (see above)


def cache_positions(kv: KVCache) -> int:
    """P: the positions a cache holds."""
    return int(kv.shape[4]) if isinstance(kv, torch.Tensor) else int(kv[0][0].shape[2])


def cache_batch(kv: KVCache) -> int:
    """B: the batch size of a cache."""
    return int(kv.shape[2]) if isinstance(kv, torch.Tensor) else int(kv[0][0].shape[0])


def additive_mask(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Boolean attention mask (True = attend) -> additive float mask (0 where True, -inf where False)."""
    return torch.zeros(mask.shape, device=mask.device, dtype=dtype).masked_fill(~mask, float("-inf"))


class Attention(nn.Module):
    """Multi-head self-attention over the cached and the new positions."""

    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = d_model // heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None,
                past_kv: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None, last_rows: int | None = None,
                matmul_attention: bool = False) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x (B, n, D); mask (n, P + n) or (B, 1, n, P + n), boolean (True = attend) or additive float, None: attend
        to every position; past_kv: keys, values (each (B, h, P, hd)) or None; ``last_rows``: queries of the last
        rows only.

        Returns (y (B, last_rows or n, D), present (keys, values) each (B, h, P + n, hd)).
        """
        b, n, d = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, h, n, hd)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if past_kv is not None:
            k = torch.cat([past_kv[0], k], dim=2)  # (B, h, P + n, hd)
            v = torch.cat([past_kv[1], v], dim=2)
        present = (k, v)
        if last_rows is not None:
            if last_rows == 0:
                return x[:, :0], present
            q = q[:, :, n - last_rows:]  # (B, h, rows, hd)
            mask = None if mask is None else mask[..., n - last_rows:, :]
        dropout_p = self.dropout if self.training else 0.0
        if matmul_attention:
            att = torch.matmul(q * (1.0 / math.sqrt(self.head_dim)), k.transpose(-1, -2))  # (B, h, rows, P + n)
            if mask is not None:
                att = att + (additive_mask(mask, att.dtype) if mask.dtype == torch.bool else mask)
            y = torch.matmul(F.dropout(torch.softmax(att, dim=-1), dropout_p, self.training), v)  # (B, h, rows, hd)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)  # (B, h, rows, hd)
        y = y.transpose(1, 2).reshape(b, -1, d)  # (B, rows, D)
        return self.proj(y), present


class Block(nn.Module):
    """Pre-norm block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, d_model: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        hidden = int(round(d_model * mlp_ratio))
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = Attention(d_model, heads, dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, d_model))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None,
                past_kv: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None, last_rows: int | None = None,
                matmul_attention: bool = False) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """As ``Attention.forward``; with ``last_rows`` the residual and the MLP cover the last rows only."""
        a, present = self.attn(self.ln1(x), mask, past_kv, last_rows, matmul_attention)
        if last_rows is not None:
            x = x[:, x.shape[1] - last_rows:]  # (B, rows, D)
            if last_rows == 0:
                return x, present
        x = x + self.drop(a)
        x = x + self.drop(self.mlp(self.ln2(x)))
        return x, present  # (B, rows, D), (keys, values)


class Transformer(nn.Module):
    """A stack of pre-norm blocks and a final LayerNorm."""

    def __init__(self, layers: int, d_model: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.layers = layers
        self.heads = heads
        self.head_dim = d_model // heads
        self.blocks = nn.ModuleList(Block(d_model, heads, mlp_ratio, dropout) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d_model)
        self._init_weights()

    def _init_weights(self) -> None:
        # GPT-2 style: N(0, 0.02), residual projections scaled by 1/sqrt(2 * layers)
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * self.layers) if name.endswith(("proj.weight", "mlp.2.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def empty_cache(self, batch: int, device: torch.device | str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """A cache with no positions: (layers, 2, B, heads, 0, head_dim)."""
        return torch.zeros(self.layers, 2, batch, self.heads, 0, self.head_dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, past_kv: KVCache | None = None,
                use_cache: bool = False, *, last_rows: int | None = None, matmul_attention: bool = False,
                stack_cache: bool = True) -> tuple[torch.Tensor, KVCache | None]:
        """x (B, n, D); mask (n, P + n), boolean (True = attend) or additive float, None: every position attends to
        every position; past_kv: stacked (layers, 2, B, h, P, hd) or per layer, or None.

        ``last_rows``: the last block computes its attention output and MLP for the last rows only (0: it stops
        after its keys and values). ``matmul_attention``: explicit matmul attention with an additive mask (the export
        form) instead of ``scaled_dot_product_attention``. ``stack_cache``: the present cache stacked
        (layers, 2, B, h, P + n, hd), else per layer.

        Returns (hidden (B, last_rows or n, D) after the final LayerNorm, present cache or None).
        """
        if matmul_attention and mask is not None and mask.dtype == torch.bool:
            mask = additive_mask(mask, x.dtype)  # once for every block
        presents = []
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x, present = block(x, mask, None if past_kv is None else past_kv[i], last_rows if i == last else None,
                               matmul_attention)
            if use_cache:
                presents.append(present)
        if not use_cache:
            return self.ln_f(x), None
        return self.ln_f(x), (torch.stack([torch.stack(p) for p in presents]) if stack_cache else presents)
