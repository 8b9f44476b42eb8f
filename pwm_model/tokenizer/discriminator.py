"""PatchGAN discriminator with spectral normalisation (hinge loss, see losses.py)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class PatchDiscriminator(nn.Module):
    """Strided 4x4 convolutions with spectral norm and LeakyReLU; one real/fake logit per image patch.

    ``layers`` stride-2 convolutions (width doubling up to 8x ``channels``), one stride-1 convolution, then a
    1-channel output map; the receptive field grows with ``layers`` (3 layers: 70 px, as in pix2pix/VQGAN).
    """

    def __init__(self, channels: int = 64, layers: int = 3) -> None:
        super().__init__()
        mods: list[nn.Module] = [spectral_norm(nn.Conv2d(3, channels, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
        ch = channels
        for i in range(1, layers + 1):
            out = channels * min(2**i, 8)
            stride = 2 if i < layers else 1
            mods += [spectral_norm(nn.Conv2d(ch, out, 4, stride=stride, padding=1)), nn.LeakyReLU(0.2)]
            ch = out
        mods.append(spectral_norm(nn.Conv2d(ch, 1, 4, stride=1, padding=1)))
        self.net = nn.Sequential(*mods)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, 1, h, w) logits."""
        return self.net(img)
