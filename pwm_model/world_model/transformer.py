"""Decoder-only pre-norm transformer with an explicit boolean attention mask and a tensor KV cache.

The KV cache is one plain tensor ``(layers, 2, B, heads, P, head_dim)`` (2 = keys, values; P cached positions):
``forward`` takes the past cache and returns the present one (past + the new positions), so a prefill graph and a
per-frame step graph can be exported to ONNX with the cache as ordinary inputs and outputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention`` with a boolean mask (True = attend)."""

    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = d_model // heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor, past_kv: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, n, D), mask (n, P + n) or (B, 1, n, P + n), past_kv (2, B, h, P, hd) or None.

        Returns (y (B, n, D), present_kv (2, B, h, P + n, hd)).
        """
        b, n, d = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, h, n, hd)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if past_kv is not None:
            k = torch.cat([past_kv[0], k], dim=2)  # (B, h, P + n, hd)
            v = torch.cat([past_kv[1], v], dim=2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.dropout if self.training else 0.0)  # (B, h, n, hd)
        y = y.transpose(1, 2).reshape(b, n, d)  # (B, n, D)
        return self.proj(y), torch.stack([k, v])


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

    def forward(self, x: torch.Tensor, mask: torch.Tensor, past_kv: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        a, present = self.attn(self.ln1(x), mask, past_kv)
        x = x + self.drop(a)
        x = x + self.drop(self.mlp(self.ln2(x)))
        return x, present  # (B, n, D), (2, B, h, P + n, hd)


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

    def forward(self, x: torch.Tensor, mask: torch.Tensor, past_kv: torch.Tensor | None = None,
                use_cache: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, n, D), mask (n, P + n) bool, past_kv (layers, 2, B, h, P, hd) or None.

        Returns (hidden (B, n, D) after the final LayerNorm, present_kv (layers, 2, B, h, P + n, hd) or None).
        """
        presents = []
        for i, block in enumerate(self.blocks):
            x, present = block(x, mask, None if past_kv is None else past_kv[i])
            if use_cache:
                presents.append(present)
        return self.ln_f(x), (torch.stack(presents) if use_cache else None)
