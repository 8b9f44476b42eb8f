"""Building blocks of the tokenizer: ResBlock, up/down-sampling, self-attention and guided cross-attention.

Every block exports to ONNX with static shapes using Conv, MatMul, Softmax, InstanceNormalization (the GroupNorm
decomposition), Resize and elementwise ops. Feature maps are (B, C, H, W).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

GROUPS = 8  # GroupNorm groups; every channel count is a multiple of 8 (TokenizerConfig.validate)


def norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(GROUPS, channels), channels, eps=1e-6)


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> Conv3x3, twice, plus a (1x1-projected) skip."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.norm1 = norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = norm(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Downsample(nn.Module):
    """Stride-2 3x3 convolution (halves H and W)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest 2x upsampling (ONNX Resize) followed by a 3x3 convolution (``in_ch`` -> ``out_ch``)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, head_dim: int) -> torch.Tensor:
    """Multi-head attention over flattened maps: q (B, C, Nq), k/v (B, C, Nk) -> (B, C, Nq)."""
    b, c, nq = q.shape
    nk = k.shape[2]
    q = q.reshape(b * heads, head_dim, nq).transpose(1, 2)  # (B*nh, Nq, hd)
    k = k.reshape(b * heads, head_dim, nk)  # (B*nh, hd, Nk)
    v = v.reshape(b * heads, head_dim, nk).transpose(1, 2)  # (B*nh, Nk, hd)
    w = torch.softmax(torch.bmm(q, k) * (1.0 / math.sqrt(head_dim)), dim=-1)  # (B*nh, Nq, Nk)
    return torch.bmm(w, v).transpose(1, 2).reshape(b, c, nq)


class SelfAttention(nn.Module):
    """Residual spatial self-attention (GroupNorm, 1x1 q/k/v, softmax, 1x1 projection)."""

    def __init__(self, ch: int, heads: int = 1) -> None:
        super().__init__()
        if ch % heads:
            raise ValueError(f"{heads} attention heads do not divide {ch} channels")
        self.heads, self.head_dim = heads, ch // heads
        self.norm = norm(ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)
        return x + self.proj(_attend(q, k, v, self.heads, self.head_dim).reshape(b, c, h, w))


class CrossAttention(nn.Module):
    """Residual cross-attention from a feature map (queries) to a guide map (keys and values).

    Learned positional embeddings are added to the queries and the keys (so the attention can use where things
    are, not only what they look like). The output projection and the embeddings start at zero: a freshly built
    block is the identity, so a dyn branch initialised from the ctx weights starts as the unguided network.
    """

    def __init__(self, ch: int, guide_ch: int, query_hw: tuple[int, int], guide_hw: tuple[int, int],
                 heads: int = 1) -> None:
        super().__init__()
        if ch % heads:
            raise ValueError(f"{heads} attention heads do not divide {ch} channels")
        self.heads, self.head_dim = heads, ch // heads
        self.norm_q = norm(ch)
        self.norm_kv = norm(guide_ch)
        self.q = nn.Conv2d(ch, ch, 1)
        self.kv = nn.Conv2d(guide_ch, 2 * ch, 1)
        self.pos_q = nn.Parameter(torch.zeros(1, ch, *query_hw))
        self.pos_k = nn.Parameter(torch.zeros(1, ch, *guide_hw))
        self.proj = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = (self.q(self.norm_q(x)) + self.pos_q).reshape(b, c, h * w)
        k, v = self.kv(self.norm_kv(guide)).reshape(b, 2, c, -1).unbind(1)
        k = k + self.pos_k.reshape(1, c, -1)
        return x + self.proj(_attend(q, k, v, self.heads, self.head_dim).reshape(b, c, h, w))
