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
    """Stride-2 3x3 convolution plus a parameter-free 2x2 average-pooling shortcut (halves H and W).

    The shortcuts of Downsample / Upsample (residual autoencoding, as in DC-AE) give the network an identity-like
    path across resolutions from the first step, which makes a small autoencoder learn much faster.
    """

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + F.avg_pool2d(x, 2)


class Upsample(nn.Module):
    """Nearest 2x upsampling (ONNX Resize) and a 3x3 convolution (``in_ch`` -> ``out_ch``), plus a parameter-free
    shortcut: channels repeated to ``4 * out_ch`` (or averaged in groups) and moved to space (depth-to-space)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        if (4 * out_ch) % in_ch and in_ch % (4 * out_ch):
            raise ValueError(f"Upsample needs 4*out_ch and in_ch to divide one another, got {in_ch} -> {out_ch}")
        self.in_ch, self.out_ch = in_ch, out_ch
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n = 4 * self.out_ch
        if n >= c:  # repeat each channel n/c times: (B, C, H, W) -> (B, C, n/c, H, W) -> (B, n, H, W)
            s = torch.cat([x.unsqueeze(2)] * (n // c), dim=2).reshape(b, n, h, w)
        else:  # average groups of c/n channels
            s = x.reshape(b, n, c // n, h, w).mean(dim=2)
        s = s.reshape(b, self.out_ch, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, self.out_ch, 2 * h, 2 * w)
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest")) + s


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


def sincos_2d(channels: int, heads: int, height: int, width: int, max_cycles: tuple[float, float]) -> torch.Tensor:
    """(1, channels, height, width) sinusoids of the normalised cell centres, per attention head.

    Each head gets ``head_dim / 4`` frequencies per axis (sin and cos of y, sin and cos of x), linearly spaced up to
    ``max_cycles`` (cycles per image height / width). Queries and keys built with the same frequencies have a dot
    product that peaks where their normalised positions agree (logit ``POS_PEAK_LOGIT`` after the 1/sqrt(d) scale),
    so maps of different sizes attend to aligned places.
    """
    hd = channels // heads
    nf = hd // 4
    y = (torch.arange(height, dtype=torch.float32) + 0.5) / height
    x = (torch.arange(width, dtype=torch.float32) + 0.5) / width
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    fy = 2 * math.pi * torch.linspace(0.25, max(0.25, max_cycles[0]), nf).view(-1, 1, 1)
    fx = 2 * math.pi * torch.linspace(0.25, max(0.25, max_cycles[1]), nf).view(-1, 1, 1)
    amp = math.sqrt(POS_PEAK_LOGIT * math.sqrt(hd) / 2) / math.sqrt(nf)
    head = torch.cat([torch.sin(fy * yy), torch.cos(fy * yy), torch.sin(fx * xx), torch.cos(fx * xx)], 0) * amp
    head = torch.cat([head, torch.zeros(hd - 4 * nf, height, width)], 0)  # head_dim not a multiple of 4
    return head.repeat(heads, 1, 1).unsqueeze(0)


POS_PEAK_LOGIT = 16.0  # initial attention logit between aligned positions (about 1 key cell of spread)


class CrossAttention(nn.Module):
    """Residual cross-attention from a feature map (queries) to a guide map (keys and values).

    Learned positional embeddings are added to the queries and the keys. They start as matched 2-D sinusoids of the
    normalised positions (``sincos_2d``), so from the first step each query reads the guide around the same place of
    the image (consecutive frames are nearly aligned); training can move or replace that. The output projection starts
    at zero: a freshly built block is the identity, so a dyn branch initialised from the ctx weights starts as the
    unguided network.
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
        cycles = (query_hw[0] / 2, query_hw[1] / 2)  # up to the query grid's Nyquist frequency
        self.pos_q = nn.Parameter(sincos_2d(ch, heads, *query_hw, cycles))
        self.pos_k = nn.Parameter(sincos_2d(ch, heads, *guide_hw, cycles))
        self.proj = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = (self.q(self.norm_q(x)) + self.pos_q).reshape(b, c, h * w)
        k, v = self.kv(self.norm_kv(guide)).reshape(b, 2, c, -1).unbind(1)
        k = k + self.pos_k.reshape(1, c, -1)
        return x + self.proj(_attend(q, k, v, self.heads, self.head_dim).reshape(b, c, h, w))
