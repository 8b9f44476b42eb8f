"""VQGAN-style tokenizer losses: L1 reconstruction, PatchGAN hinge loss with an adaptive weight, an optional
perceptual loss from user-supplied weights, plus the LFQ commitment and entropy terms (lfq.py)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pwm_model.errors import ModelError

ADAPTIVE_WEIGHT_MAX = 1e4  # VQGAN: clamp of ||grad L_rec|| / ||grad L_gan|| at the decoder's last layer


def l1_loss(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (recon - target).abs().mean()


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss: mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Generator side of the hinge loss: -mean(D(fake))."""
    return -logits_fake.mean()


def adaptive_gan_weight(rec_loss: torch.Tensor, gan_loss: torch.Tensor, last_layer: torch.Tensor) -> torch.Tensor:
    """VQGAN's balance: ||dL_rec/dW|| / ||dL_gan/dW|| at the decoder's last weight W (no gradient through it)."""
    g_rec = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_gan = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)[0]
    w = g_rec.norm() / (g_gan.norm() + 1e-4)
    return w.clamp(0.0, ADAPTIVE_WEIGHT_MAX).detach()


def psnr_db(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (B,) in dB of images in [-1, 1] (peak = the [0, 1] range)."""
    mse = (((recon.clamp(-1, 1) - target) * 0.5) ** 2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-10))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (B,) of images in [-1, 1] (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, on [0, 1];
    the window shrinks for images smaller than 11 px; mean over the valid region and the channels)."""
    x = (recon.clamp(-1, 1) + 1) * 0.5
    y = (target + 1) * 0.5
    c = x.shape[1]
    size = min(11, x.shape[2], x.shape[3])
    g = _gaussian_window(size).to(x)
    wh = g.view(1, 1, size, 1).expand(c, 1, size, 1)
    ww = g.view(1, 1, 1, size).expand(c, 1, 1, size)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, wh, groups=c), ww, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(dim=1)


class PerceptualLoss(nn.Module):
    """A perceptual distance loaded from a TorchScript file the user names (nothing is downloaded).

    The scripted module takes two (B, 3, H, W) images in [-1, 1] and returns per-image distances (B,) or
    (B, 1, 1, 1) or one scalar, e.g. an LPIPS network exported with ``torch.jit.script``/``trace``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        p = Path(path)
        if not p.is_file():
            raise ModelError(f"perceptual weights file {p} does not exist (tokenizer.perceptual_weights_path)")
        try:
            self.net = torch.jit.load(str(p), map_location="cpu")
        except Exception as exc:  # noqa: BLE001 - any load failure is the same user-facing problem
            raise ModelError(f"perceptual weights file {p} is not a loadable TorchScript module ({type(exc).__name__})"
                             ) from None
        self.net.eval()
        for q in self.net.parameters():
            q.requires_grad_(False)

    def forward(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        d = self.net(recon, target)
        if not torch.is_tensor(d) or not math.isfinite(float(d.detach().float().mean())):
            raise ModelError("the perceptual network returned no finite tensor")
        return d.float().mean()
