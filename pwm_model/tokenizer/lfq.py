"""Lookup-free quantization (LFQ): each latent channel becomes one bit, ``sign(z)`` in {-1, +1}.

A token is ``bits`` channels at one grid cell; its index reads the bits most significant first
(channel 0 is the MSB), so the codebook has ``2**bits`` entries and needs no lookup table.
Gradients pass straight through the sign. Losses (MAGVIT-v2 style):

- commitment: ``mean((z - sg(q))**2)`` pulls the latents towards the codes;
- entropy: ``mean_n H(p(code | z_n)) - H(mean_n p(code | z_n))`` makes each token confident and the batch
  use the codebook evenly. ``p(code | z) ~ exp(-||z - code||**2)`` factorises over bits, so each bit is
  ``sigmoid(4 z)``; the codebook entropy is computed exactly over all ``2**bits`` codes (in chunks).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

ENTROPY_CHUNK_ROWS = 4096  # latents per chunk when averaging code probabilities (bounds memory at 2**13 codes)


@dataclass
class LfqOutput:
    """What the quantizer returns in training."""

    codes: torch.Tensor  # (B, bits, h, w) in {-1, +1}, straight-through gradients to z
    indices: torch.Tensor  # (B, h, w) int64
    commit_loss: torch.Tensor  # scalar
    entropy_loss: torch.Tensor  # scalar: per-sample entropy - codebook entropy (nats)
    usage: torch.Tensor  # scalar: fraction of the codebook used in this batch


def bit_weights(bits: int, *, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``2**(bits-1) .. 1`` as a (bits,) tensor: channel 0 is the most significant bit."""
    return torch.tensor([2.0**k for k in range(bits - 1, -1, -1)], device=device, dtype=dtype)


def codes_to_indices(codes: torch.Tensor) -> torch.Tensor:
    """(B, bits, h, w) latents -> (B, h, w) int64 indices (a channel > 0 is bit 1).

    Written as Greater, Cast, Mul and ReduceSum so the ONNX graph stays simple (float32 is exact up to 2**24).
    """
    bits = codes.shape[1]
    ones = (codes > 0).to(torch.float32)
    w = bit_weights(bits, device=codes.device).view(1, bits, 1, 1)
    return (ones * w).sum(dim=1).to(torch.int64)


def indices_to_codes(indices: torch.Tensor, bits: int) -> torch.Tensor:
    """(B, h, w) integer indices -> (B, bits, h, w) codes in {-1, +1} (float32).

    Uses Cast, Mul, Floor and Sub only (no integer Mod / bit shifts), exact for indices below 2**24.
    """
    t = indices.to(torch.float32).unsqueeze(1)  # (B, 1, h, w)
    shift = torch.tensor([2.0**-k for k in range(bits - 1, -1, -1)], device=indices.device, dtype=torch.float32)
    q = torch.floor(t * shift.view(1, bits, 1, 1))  # index >> (bits-1-k)
    bit = q - 2.0 * torch.floor(q * 0.5)  # ... & 1
    return bit * 2.0 - 1.0


def _bit_log_probs(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(bit=1), log p(bit=0) per latent channel; each (N, bits)."""
    logit = 4.0 * z  # -(z-1)^2 + (z+1)^2
    return F.logsigmoid(logit), F.logsigmoid(-logit)


def entropy_terms(z_flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean per-sample entropy, codebook entropy) in nats for (N, bits) latents."""
    n, bits = z_flat.shape
    lp1, lp0 = _bit_log_probs(z_flat.float())
    per_sample = -(lp1.exp() * lp1 + lp0.exp() * lp0).sum(dim=1).mean()
    # log p(code | z_n) = sum_k lp0_nk + sum_k c_k (lp1_nk - lp0_nk), with c the binary code table (2**bits, bits)
    table = ((torch.arange(2**bits, device=z_flat.device).unsqueeze(1)
              >> torch.arange(bits - 1, -1, -1, device=z_flat.device)) & 1).float()
    mean_p = torch.zeros(2**bits, device=z_flat.device)
    for start in range(0, n, ENTROPY_CHUNK_ROWS):
        a = lp0[start:start + ENTROPY_CHUNK_ROWS]
        d = lp1[start:start + ENTROPY_CHUNK_ROWS] - a
        mean_p = mean_p + (a.sum(dim=1, keepdim=True) + d @ table.t()).exp().sum(dim=0)
    mean_p = mean_p / n
    codebook = -(mean_p * torch.log(mean_p.clamp_min(1e-12))).sum()
    return per_sample, codebook


class LFQ(nn.Module):
    """Sign quantizer with straight-through gradients, commitment and entropy losses and usage statistics."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits

    @property
    def codebook_size(self) -> int:
        return 2**self.bits

    def forward(self, z: torch.Tensor) -> LfqOutput:
        """z (B, bits, h, w) -> codes (straight-through), indices and losses."""
        hard = torch.where(z > 0, torch.ones_like(z), -torch.ones_like(z))
        codes = z + (hard - z).detach()
        indices = codes_to_indices(hard)
        commit = F.mse_loss(z, hard.detach())
        if self.training:
            z_flat = z.permute(0, 2, 3, 1).reshape(-1, self.bits)
            per_sample, codebook = entropy_terms(z_flat)
            entropy = per_sample - codebook
        else:
            entropy = z.new_zeros(())
        usage = code_usage(indices, self.codebook_size)
        return LfqOutput(codes, indices, commit, entropy, usage)

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, bits, h, w) -> (B, h, w) int64 indices (inference)."""
        return codes_to_indices(z)

    def dequantize(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, h, w) indices -> (B, bits, h, w) codes in {-1, +1}."""
        return indices_to_codes(indices, self.bits)


def code_usage(indices: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Fraction of the codebook that occurs in ``indices`` (a scalar tensor)."""
    counts = torch.bincount(indices.reshape(-1).detach().to(torch.int64), minlength=codebook_size)
    return (counts > 0).float().mean()


def code_histogram(indices: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Counts per code (codebook_size,) int64, for usage and perplexity over many batches."""
    return torch.bincount(indices.reshape(-1).to(torch.int64), minlength=codebook_size)


def perplexity(counts: torch.Tensor) -> float:
    """exp(entropy) of a code histogram: the effective number of codes in use."""
    p = counts.double() / counts.sum().clamp_min(1)
    return float(torch.exp(-(p * torch.log(p.clamp_min(1e-300))).sum()))


BIT_PROB_FLOOR = 1e-6  # bit probabilities are clamped here before the log: surprise stays finite (<= 13.8 nats/bit)


def code_bit_log_probs(logits: torch.Tensor, bits: int) -> torch.Tensor:
    """(..., C = 2**bits) code logits -> (..., bits, 2): log P(bit b of the code is 0, is 1), bit 0 the most
    significant (the LFQ index order).

    The forecast distribution's marginal of each bit, summed exactly over the codes that set it: one pair per bit and
    slot instead of 2**bits log-probabilities. Exp, ReduceSum and Log only (nothing INT8 quantization touches), every
    exponent <= 0 (fp16-safe); the surprise of an observed code is the sum over its bits (runtime/surprise.py).
    """
    z = logits.float()
    e = (z - z.amax(-1, keepdim=True)).exp()  # the largest is 1: the total never underflows
    total = e.sum(-1, keepdim=True).unsqueeze(-1)  # (..., 1, 1)
    lead = tuple(e.shape[:-1])
    per_bit = [e.reshape(*lead, 2 ** b, 2, 2 ** (bits - 1 - b)).sum((-3, -1)) for b in range(bits)]
    return (torch.stack(per_bit, -2) / total).clamp_min(BIT_PROB_FLOOR).log()
