"""The context-guided tokenizer: a ctx branch (current frame, full resolution) and a dyn branch (every other frame,
half resolution) whose encoder and decoder cross-attend to the ctx branch's feature maps.

Both branches share one backbone design (VQGAN/MAGVIT-v2 style, GroupNorm + SiLU ResBlocks, a middle
self-attention block, stride ``downsample``) and quantize with LFQ. The dyn branch starts from the ctx weights
(``init_dyn_from_ctx``) and may compress with a patchify (``dyn_patch``, 2x2 as the paper) + token-wise MLP
before quantization.
Two additions make the small CPU-trained models learn much faster (measured: about +1.2 dB held-out PSNR after 300
steps): parameter-free shortcuts across every down/upsampling (blocks.py, residual autoencoding as in DC-AE), and a
linear colour path in each encoder (block-average colours -> latent) and decoder (codes -> bilinearly upsampled
colours) that the deep path refines.

Guide maps (the guidance rule, docs/ARCHITECTURE.md: the dyn tokens of model frame f use the maps of frame f-1):

- ``guide_enc`` (from ``encode_ctx``): the ctx encoder maps after the lowest ``tokenizer.guided_levels`` levels,
  then after the middle block; the dyn encoder cross-attends at the same places of its own network.
- ``guide_dec`` (from ``ctx_guide_dec``, computed from the ctx *tokens*): the ctx decoder maps after the middle block,
  then after each of the first ``guided_levels`` upsamplings; the dyn decoder cross-attends at the same places.

The ctx maps have twice the dyn maps' resolution (the ctx frame is twice the size); attention needs no resizing.
Images are (B, 3, H, W) float in [-1, 1]; tokens are (B, L) int64, row-major over the token grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pwm_model.config import PwmConfig, TokenizerConfig
from pwm_model.tokenizer.blocks import CrossAttention, Downsample, ResBlock, SelfAttention, Upsample, norm
from pwm_model.tokenizer.lfq import LFQ, LfqOutput


@dataclass(frozen=True)
class MapSpec:
    """Shape of one guide feature map (per sample)."""

    channels: int
    height: int
    width: int


def _channels(cfg: TokenizerConfig) -> list[int]:
    return [cfg.base_channels * m for m in cfg.channel_mult]


def encoder_map_specs(cfg: TokenizerConfig, hw: tuple[int, int]) -> list[MapSpec]:
    """Shapes of the encoder guide maps of a ``hw`` image (network order)."""
    ch = _channels(cfg)
    levels = len(ch)
    specs = [MapSpec(ch[i], hw[0] >> i, hw[1] >> i) for i in range(levels - cfg.guided_levels, levels)]
    return specs + [MapSpec(ch[-1], hw[0] >> (levels - 1), hw[1] >> (levels - 1))]


def decoder_map_specs(cfg: TokenizerConfig, hw: tuple[int, int]) -> list[MapSpec]:
    """Shapes of the decoder guide maps of a ``hw`` image (network order: middle block, then each upsampling)."""
    ch = _channels(cfg)
    levels = len(ch)
    low = levels - 1
    return [MapSpec(ch[-1], hw[0] >> low, hw[1] >> low)] + [
        MapSpec(ch[low - j - 1], hw[0] >> (low - j - 1), hw[1] >> (low - j - 1)) for j in range(cfg.guided_levels)]


class Encoder(nn.Module):
    """Image -> latent (B, bits, H/ds, W/ds); optionally cross-attends to guide maps; returns its own guide maps."""

    def __init__(self, cfg: TokenizerConfig, hw: tuple[int, int], guide: list[MapSpec] | None = None) -> None:
        super().__init__()
        ch = _channels(cfg)
        self.levels = len(ch)
        self.guided_levels = cfg.guided_levels
        self.conv_in = nn.Conv2d(3, ch[0], 3, padding=1)
        self.blocks = nn.ModuleList()
        self.down = nn.ModuleList()
        prev = ch[0]
        for i, c in enumerate(ch):
            self.blocks.append(nn.ModuleList([ResBlock(prev if r == 0 else c, c) for r in range(cfg.num_res_blocks)]))
            prev = c
            self.down.append(Downsample(c) if i < self.levels - 1 else nn.Identity())
        self.mid_res1 = ResBlock(ch[-1], ch[-1])
        self.mid_attn = SelfAttention(ch[-1], cfg.attention_heads)
        self.mid_res2 = ResBlock(ch[-1], ch[-1])
        self.norm_out = norm(ch[-1])
        self.conv_out = nn.Conv2d(ch[-1], cfg.codebook_bits, 3, padding=1)
        self.downsample = cfg.downsample
        self.thumb = nn.Conv2d(3, cfg.codebook_bits, 1)  # linear path from the block-average colours
        own = encoder_map_specs(cfg, hw)
        self.cross = nn.ModuleList()
        if guide is not None:
            self.cross = nn.ModuleList([
                CrossAttention(o.channels, g.channels, (o.height, o.width), (g.height, g.width), cfg.attention_heads)
                for o, g in zip(own, guide)])

    def forward(self, x: torch.Tensor, guide: list[torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = self.conv_in(x)
        maps: list[torch.Tensor] = []
        for i in range(self.levels):
            for block in self.blocks[i]:
                h = block(h)
            if i >= self.levels - self.guided_levels:
                h = self._guide(h, len(maps), guide)
                maps.append(h)
            h = self.down[i](h)
        h = self.mid_res2(self.mid_attn(self.mid_res1(h)))
        h = self._guide(h, len(maps), guide)
        maps.append(h)
        z = self.conv_out(F.silu(self.norm_out(h))) + self.thumb(F.avg_pool2d(x, self.downsample))
        return z, maps

    def _guide(self, h: torch.Tensor, k: int, guide: list[torch.Tensor] | None) -> torch.Tensor:
        return self.cross[k](h, guide[k]) if len(self.cross) and guide is not None else h


class Decoder(nn.Module):
    """Codes (B, bits, h, w) -> image; optionally cross-attends to guide maps; can stop early to return its maps.

    Each level runs its ResBlocks, then (but the last) upsamples with a convolution to the next level's width, so
    the costly full-resolution levels stay narrow.
    """

    def __init__(self, cfg: TokenizerConfig, hw: tuple[int, int], guide: list[MapSpec] | None = None) -> None:
        super().__init__()
        ch = _channels(cfg)
        self.levels = len(ch)
        self.guided_levels = cfg.guided_levels
        self.conv_in = nn.Conv2d(cfg.codebook_bits, ch[-1], 3, padding=1)
        self.mid_res1 = ResBlock(ch[-1], ch[-1])
        self.mid_attn = SelfAttention(ch[-1], cfg.attention_heads)
        self.mid_res2 = ResBlock(ch[-1], ch[-1])
        self.blocks = nn.ModuleList()
        self.up = nn.ModuleList()
        for i in reversed(range(self.levels)):  # stored from the lowest resolution up
            self.blocks.append(nn.ModuleList([ResBlock(ch[i], ch[i]) for _ in range(cfg.num_res_blocks)]))
            self.up.append(Upsample(ch[i], ch[i - 1]) if i > 0 else nn.Identity())
        self.norm_out = norm(ch[0])
        self.conv_out = nn.Conv2d(ch[0], 3, 3, padding=1)
        self.upsample = float(cfg.downsample)
        self.thumb = nn.Conv2d(cfg.codebook_bits, 3, 1)  # linear path to a bilinearly upsampled colour image
        own = decoder_map_specs(cfg, hw)
        self.cross = nn.ModuleList()
        if guide is not None:
            self.cross = nn.ModuleList([
                CrossAttention(o.channels, g.channels, (o.height, o.width), (g.height, g.width), cfg.attention_heads)
                for o, g in zip(own, guide)])

    def forward(self, codes: torch.Tensor, guide: list[torch.Tensor] | None = None, *, maps_only: bool = False
                ) -> torch.Tensor | list[torch.Tensor]:
        """The image, or with ``maps_only`` the guide maps (running only as far as the last of them)."""
        h = self.mid_res2(self.mid_attn(self.mid_res1(self.conv_in(codes))))
        h = self._guide(h, 0, guide)
        maps = [h]
        if maps_only and self.guided_levels == 0:
            return maps
        for j in range(self.levels):
            for block in self.blocks[j]:
                h = block(h)
            h = self.up[j](h)
            if j < self.guided_levels:
                h = self._guide(h, j + 1, guide)
                maps.append(h)
                if maps_only and j == self.guided_levels - 1:
                    return maps
        base = F.interpolate(self.thumb(codes), scale_factor=self.upsample, mode="bilinear", align_corners=False)
        return self.conv_out(F.silu(self.norm_out(h))) + base

    def _guide(self, h: torch.Tensor, k: int, guide: list[torch.Tensor] | None) -> torch.Tensor:
        return self.cross[k](h, guide[k]) if len(self.cross) and guide is not None else h


def patchify(x: torch.Tensor, ph: int = 2, pw: int = 2) -> torch.Tensor:
    """(B, C, H, W) -> (B, ph*pw*C, H/ph, W/pw) with Reshape/Transpose only (channel = (c*ph + dy)*pw + dx)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // ph, ph, w // pw, pw).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, c * ph * pw, h // ph, w // pw)


def unpatchify(x: torch.Tensor, ph: int = 2, pw: int = 2) -> torch.Tensor:
    """Inverse of ``patchify``."""
    b, cp, h, w = x.shape
    c = cp // (ph * pw)
    x = x.reshape(b, c, ph, pw, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c, h * ph, w * pw)


class TokenMLP(nn.Module):
    """Token-wise MLP as 1x1 convolutions: in -> hidden -> hidden -> out (SiLU)."""

    def __init__(self, in_ch: int, hidden: int, out_ch: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(in_ch, hidden, 1), nn.SiLU(), nn.Conv2d(hidden, hidden, 1), nn.SiLU(),
                                 nn.Conv2d(hidden, out_ch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Branch(nn.Module):
    """Encoder + LFQ + decoder for one image size, optionally guided and optionally patchify-compressed."""

    def __init__(self, cfg: TokenizerConfig, hw: tuple[int, int], guide_hw: tuple[int, int] | None = None,
                 compress: bool = False) -> None:
        super().__init__()
        self.hw = hw
        self.bits = cfg.codebook_bits
        enc_guide = encoder_map_specs(cfg, guide_hw) if guide_hw is not None else None
        dec_guide = decoder_map_specs(cfg, guide_hw) if guide_hw is not None else None
        self.encoder = Encoder(cfg, hw, enc_guide)
        self.decoder = Decoder(cfg, hw, dec_guide)
        self.quantizer = LFQ(cfg.codebook_bits)
        self.patch = (int(cfg.dyn_patch[0]), int(cfg.dyn_patch[1])) if compress else (1, 1)
        area = self.patch[0] * self.patch[1]
        self.compress = TokenMLP(area * self.bits, cfg.dyn_mlp_hidden, self.bits) if compress else None
        self.expand = TokenMLP(self.bits, cfg.dyn_mlp_hidden, area * self.bits) if compress else None
        self.grid = (hw[0] // cfg.downsample // self.patch[0], hw[1] // cfg.downsample // self.patch[1])

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def latent(self, img: torch.Tensor, guide_enc: list[torch.Tensor] | None = None
               ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Pre-quantization latent (B, bits, gh, gw) and the encoder's guide maps."""
        z, maps = self.encoder(img, guide_enc)
        if self.compress is not None:
            z = self.compress(patchify(z, *self.patch))
        return z, maps

    def decode_codes(self, codes: torch.Tensor, guide_dec: list[torch.Tensor] | None = None) -> torch.Tensor:
        if self.expand is not None:
            codes = unpatchify(self.expand(codes), *self.patch)
        return self.decoder(codes, guide_dec)

    def tokens_to_codes(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.quantizer.dequantize(tokens.reshape(tokens.shape[0], *self.grid))

    def forward(self, img: torch.Tensor, guide_enc: list[torch.Tensor] | None = None,
                guide_dec: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, LfqOutput]:
        """Training pass: reconstruction (unclamped) and the quantizer's output (losses, indices)."""
        z, _ = self.latent(img, guide_enc)
        q = self.quantizer(z)
        return self.decode_codes(q.codes, guide_dec), q


class Tokenizer(nn.Module):
    """ctx + dyn branches with the API of docs/ARCHITECTURE.md."""

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ctx_hw = (cfg.ctx_height_px, cfg.ctx_width_px)
        dyn_hw = (cfg.dyn_height_px, cfg.dyn_width_px)
        self.ctx = Branch(cfg, ctx_hw)
        self.dyn = Branch(cfg, dyn_hw, guide_hw=ctx_hw if cfg.guidance else None, compress=cfg.dyn_patchify)

    @property
    def guidance(self) -> bool:
        return self.cfg.guidance

    def guide_enc_specs(self) -> list[MapSpec]:
        return encoder_map_specs(self.cfg, (self.cfg.ctx_height_px, self.cfg.ctx_width_px))

    def guide_dec_specs(self) -> list[MapSpec]:
        return decoder_map_specs(self.cfg, (self.cfg.ctx_height_px, self.cfg.ctx_width_px))

    @torch.no_grad()
    def init_dyn_from_ctx(self) -> int:
        """Copy every ctx tensor whose name and shape the dyn branch shares; returns how many were copied."""
        own = self.dyn.state_dict()
        shared = {k: v for k, v in self.ctx.state_dict().items() if k in own and own[k].shape == v.shape}
        self.dyn.load_state_dict(shared, strict=False)
        return len(shared)

    # -- the inference API ------------------------------------------------------------------------------
    def encode_ctx(self, img_ctx: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, 3, Hc, Wc) -> ctx tokens (B, Lc) int64 and the encoder guide maps."""
        z, maps = self.ctx.latent(img_ctx)
        return self.ctx.quantizer.quantize(z).reshape(z.shape[0], -1), maps

    def ctx_guide_dec(self, ctx_tokens: torch.Tensor) -> list[torch.Tensor]:
        """ctx tokens (B, Lc) -> the ctx decoder's guide maps."""
        maps = self.ctx.decoder(self.ctx.tokens_to_codes(ctx_tokens), maps_only=True)
        assert isinstance(maps, list)
        return maps

    def decode_ctx(self, ctx_tokens: torch.Tensor) -> torch.Tensor:
        """ctx tokens (B, Lc) -> image (B, 3, Hc, Wc) in [-1, 1]."""
        return self.ctx.decode_codes(self.ctx.tokens_to_codes(ctx_tokens)).clamp(-1.0, 1.0)

    def encode_dyn(self, img_dyn: torch.Tensor, guide_enc: list[torch.Tensor] | None = None) -> torch.Tensor:
        """(B, 3, Hd, Wd) + guide maps of the previous model frame -> dyn tokens (B, Ld) int64."""
        z, _ = self.dyn.latent(img_dyn, guide_enc if self.guidance else None)
        return self.dyn.quantizer.quantize(z).reshape(z.shape[0], -1)

    def decode_dyn(self, dyn_tokens: torch.Tensor, guide_dec: list[torch.Tensor] | None = None) -> torch.Tensor:
        """dyn tokens (B, Ld) + ctx decoder maps of the previous model frame -> image (B, 3, Hd, Wd) in [-1, 1]."""
        codes = self.dyn.tokens_to_codes(dyn_tokens)
        return self.dyn.decode_codes(codes, guide_dec if self.guidance else None).clamp(-1.0, 1.0)

    # -- training passes ---------------------------------------------------------------------------------
    def forward_ctx(self, img_ctx: torch.Tensor) -> tuple[torch.Tensor, LfqOutput]:
        return self.ctx(img_ctx)

    @torch.no_grad()
    def guides(self, guide_img_ctx: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Both guide map lists of a ctx-resolution guide frame (no gradients: the ctx branch is frozen)."""
        tokens, enc = self.encode_ctx(guide_img_ctx)
        return enc, self.ctx_guide_dec(tokens)

    def forward_dyn(self, img_dyn: torch.Tensor, guide_enc: list[torch.Tensor] | None,
                    guide_dec: list[torch.Tensor] | None) -> tuple[torch.Tensor, LfqOutput]:
        if not self.guidance:
            guide_enc = guide_dec = None
        return self.dyn(img_dyn, guide_enc, guide_dec)


def compression_ratio(cfg: TokenizerConfig) -> float:
    """How many times fewer tokens a dyn frame costs than a ctx frame."""
    return cfg.ctx_tokens / cfg.dyn_tokens


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def bits_per_pixel(cfg: TokenizerConfig, branch: str) -> float:
    """Code bits per image pixel of one branch (a size-free measure of compression)."""
    if branch == "ctx":
        return cfg.ctx_tokens * cfg.codebook_bits / (cfg.ctx_height_px * cfg.ctx_width_px)
    return cfg.dyn_tokens * cfg.codebook_bits / (cfg.dyn_height_px * cfg.dyn_width_px)





def load_tokenizer(directory: str, *, device: str = "cpu") -> tuple[PwmConfig, Tokenizer]:
    """Build a ``Tokenizer`` from a checkpoint directory (config.yaml + tokenizer.safetensors), checked and in eval
    mode; raises ModelError with one sentence for a missing, corrupt or mismatched file."""
    from pwm_model.checkpoint import load_modules

    cfg, mods = load_modules(directory, {"tokenizer": lambda c: Tokenizer(c.tokenizer)})
    tok = mods["tokenizer"].to(device).eval()
    assert isinstance(tok, Tokenizer)
    return cfg, tok
