"""The tokenizer: LFQ, the ctx/dyn branches and their guidance, shapes of every preset, a short training run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pwm_model.config import apply_overrides, preset
from pwm_model.data.datasets import FrameBank, consecutive_pairs
from pwm_model.errors import ConfigError
from pwm_model.tokenizer.lfq import LFQ, codes_to_indices, entropy_terms, indices_to_codes
from pwm_model.tokenizer.model import Tokenizer, patchify, unpatchify

torch.set_num_threads(1)


def micro_cfg(*overrides: str):
    """The tiny preset at 32x64 / 16x32 with narrow channels (fast on a CPU)."""
    return apply_overrides(preset("tiny"), [
        "tokenizer.ctx_height_px=32", "tokenizer.ctx_width_px=64", "tokenizer.dyn_height_px=16",
        "tokenizer.dyn_width_px=32", "tokenizer.base_channels=8", "tokenizer.channel_mult=[1,2,2,2]",
        "tokenizer.codebook_bits=6", *overrides])


# ----------------------------------------------------------------------------------------------------
# LFQ

@pytest.mark.parametrize("bits", [1, 6, 10, 13])
def test_lfq_index_bit_round_trip(bits: int) -> None:
    g = torch.Generator().manual_seed(bits)
    idx = torch.randint(0, 2**bits, (3, 4, 5), generator=g)
    codes = indices_to_codes(idx, bits)
    assert codes.shape == (3, bits, 4, 5)
    assert set(codes.unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(codes_to_indices(codes), idx)
    # the MSB is channel 0
    top = indices_to_codes(torch.tensor([[[2 ** (bits - 1)]]]), bits)[0, :, 0, 0]
    assert top[0] == 1 and (top[1:] == -1).all()
    # latents: the index reads sign(z)
    z = torch.randn(2, bits, 3, 3, generator=g)
    assert torch.equal(indices_to_codes(codes_to_indices(z), bits), torch.where(z > 0, 1.0, -1.0))


def test_lfq_straight_through_gradients() -> None:
    lfq = LFQ(4).train()
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = lfq(z)
    assert set(out.codes.detach().unique().tolist()) <= {-1.0, 1.0}
    w = torch.randn_like(z)
    (out.codes * w).sum().backward()
    assert torch.allclose(z.grad, w)  # the sign passes the gradient straight through
    z.grad = None
    out = lfq(z)
    (out.commit_loss + out.entropy_loss).backward()
    assert z.grad.abs().sum() > 0
    assert out.indices.shape == (2, 3, 3) and 0 < float(out.usage) <= 1


def test_lfq_entropy_matches_brute_force() -> None:
    bits = 3
    z = torch.randn(50, bits, generator=torch.Generator().manual_seed(1))
    codes = indices_to_codes(torch.arange(2**bits).view(-1, 1, 1), bits)[:, :, 0, 0]  # (8, 3)
    p = torch.softmax(-((z[:, None, :] - codes[None]) ** 2).sum(-1), dim=1)  # (50, 8)
    per_sample = -(p * p.log()).sum(1).mean()
    mean_p = p.mean(0)
    codebook = -(mean_p * mean_p.log()).sum()
    got = entropy_terms(z)
    assert math.isclose(float(got[0]), float(per_sample), rel_tol=1e-4)
    assert math.isclose(float(got[1]), float(codebook), rel_tol=1e-4)


@pytest.mark.parametrize(("ph", "pw"), [(2, 2), (1, 2), (2, 1)])
def test_patchify_round_trip(ph: int, pw: int) -> None:
    x = torch.randn(2, 5, 4, 6)
    y = patchify(x, ph, pw)
    assert y.shape == (2, 5 * ph * pw, 4 // ph, 6 // pw)
    assert torch.equal(y[:, ph * pw - 1, 0, 0], x[:, 0, ph - 1, pw - 1])  # channel (c*ph + dy)*pw + dx
    assert torch.equal(unpatchify(y, ph, pw), x)


def test_dyn_patch_sets_the_token_grid() -> None:
    cfg = micro_cfg("tokenizer.dyn_patch=[2,1]").tokenizer  # dyn 16x32 px, stride 8: 2x4 latents -> 1x4 tokens
    assert cfg.dyn_grid == (1, 4) and Tokenizer(cfg).dyn.grid == (1, 4)
    with pytest.raises(ConfigError, match="dyn_patch"):
        micro_cfg("tokenizer.dyn_patch=[1,2,3]")


# ----------------------------------------------------------------------------------------------------
# Shapes of every preset

def _check_shapes(tok: Tokenizer, device: str) -> None:
    c = tok.cfg
    img = torch.zeros(2, 3, c.ctx_height_px, c.ctx_width_px, device=device)
    img_dyn = torch.zeros(2, 3, c.dyn_height_px, c.dyn_width_px, device=device)
    with torch.no_grad():
        ctx_tokens, guide_enc = tok.encode_ctx(img)
        assert ctx_tokens.shape == (2, c.ctx_tokens) and ctx_tokens.dtype == torch.int64
        assert [tuple(g.shape[1:]) for g in guide_enc] == [(s.channels, s.height, s.width)
                                                          for s in tok.guide_enc_specs()]
        guide_dec = tok.ctx_guide_dec(ctx_tokens)
        assert [tuple(g.shape[1:]) for g in guide_dec] == [(s.channels, s.height, s.width)
                                                          for s in tok.guide_dec_specs()]
        assert tok.decode_ctx(ctx_tokens).shape == img.shape
        dyn_tokens = tok.encode_dyn(img_dyn, guide_enc)
        assert dyn_tokens.shape == (2, c.dyn_tokens) and dyn_tokens.dtype == torch.int64
        assert tok.decode_dyn(dyn_tokens, guide_dec).shape == img_dyn.shape


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_shapes_tiny_and_small(name: str) -> None:
    tok = Tokenizer(preset(name).tokenizer).eval()
    _check_shapes(tok, "cpu")


def test_shapes_paper_on_meta_device() -> None:
    cfg = preset("paper").tokenizer
    assert (cfg.ctx_tokens, cfg.dyn_tokens, cfg.codebook_size) == (448, 28, 8192)
    with torch.device("meta"):
        tok = Tokenizer(cfg).eval()
    assert all(p.is_meta for p in tok.parameters())  # nothing allocated
    assert tok.dyn.compress is not None and tok.dyn.grid == (4, 7) and tok.ctx.grid == (16, 28)
    _check_shapes(tok, "meta")


def test_token_counts_of_the_presets() -> None:
    t = preset("tiny").tokenizer
    assert (t.ctx_tokens, t.dyn_tokens) == (128, 16)  # 8x fewer dyn tokens (the paper: 448 vs 28)
    assert 2**10 <= t.codebook_size <= 2**12


# ----------------------------------------------------------------------------------------------------
# The dyn branch: initialisation from ctx, guidance and its ablation

def test_dyn_branch_starts_as_the_ctx_branch() -> None:
    torch.manual_seed(0)
    tok = Tokenizer(micro_cfg("tokenizer.dyn_patchify=false").tokenizer).eval()
    assert tok.init_dyn_from_ctx() > 0
    c = tok.cfg
    img = torch.rand(2, 3, c.dyn_height_px, c.dyn_width_px) * 2 - 1
    guide = torch.rand(2, 3, c.ctx_height_px, c.ctx_width_px) * 2 - 1
    with torch.no_grad():
        _, guide_enc = tok.encode_ctx(guide)
        z_dyn, _ = tok.dyn.latent(img, guide_enc)
        z_ctx, _ = tok.ctx.latent(img)
    # zero-initialised cross-attention: a fresh dyn branch (before any patchify) is the ctx network at the dyn size
    assert torch.allclose(z_dyn, z_ctx, atol=1e-5)


def test_guidance_changes_the_dyn_codes_and_ablation_ignores_the_guide() -> None:
    torch.manual_seed(0)
    tok = Tokenizer(micro_cfg().tokenizer).eval()
    for m in tok.dyn.modules():  # a trained-looking cross-attention
        if hasattr(m, "pos_q"):
            torch.nn.init.normal_(m.proj.weight, std=0.5)
    c = tok.cfg
    img = torch.rand(1, 3, c.dyn_height_px, c.dyn_width_px) * 2 - 1
    g1 = torch.rand(1, 3, c.ctx_height_px, c.ctx_width_px) * 2 - 1
    with torch.no_grad():
        t1, e1 = tok.encode_ctx(g1)
        t2, e2 = tok.encode_ctx(-g1)
        assert not torch.equal(tok.dyn.latent(img, e1)[0], tok.dyn.latent(img, e2)[0])
        d = tok.encode_dyn(img, e1)
        assert not torch.allclose(tok.decode_dyn(d, tok.ctx_guide_dec(t1)), tok.decode_dyn(d, tok.ctx_guide_dec(t2)))
    ablation = Tokenizer(micro_cfg("tokenizer.guidance=false").tokenizer).eval()
    assert len(ablation.dyn.encoder.cross) == 0 and len(ablation.dyn.decoder.cross) == 0
    assert ablation.cfg.dyn_tokens == tok.cfg.dyn_tokens  # same token count
    with torch.no_grad():
        assert torch.equal(ablation.encode_dyn(img, e1), ablation.encode_dyn(img, None))


# ----------------------------------------------------------------------------------------------------
# Training

def _bank(cfg, n_drives: int = 2, n_frames: int = 12) -> FrameBank:
    """Moving bars and a horizon on a gradient: consecutive frames are related, as in a drive."""
    h, w = cfg.tokenizer.ctx_height_px, cfg.tokenizer.ctx_width_px
    frames, drive, t_ns = [], [], []
    yy, xx = np.mgrid[0:h, 0:w]
    for d in range(n_drives):
        for i in range(n_frames):
            img = np.zeros((h, w, 3), np.uint8)
            img[..., 0] = (xx * 255 // w).astype(np.uint8)
            img[..., 1] = np.where(yy < h // 2, 180, 60)
            img[..., 2] = np.where(((xx + 3 * i + 7 * d) // 6) % 2 == 0, 220, 30)
            frames.append(img)
            drive.append(d)
            t_ns.append(i * round(cfg.model_dt_s * 1e9))
    drive_a, t_a = np.asarray(drive, np.int32), np.asarray(t_ns, np.int64)
    return FrameBank(np.stack(frames), drive_a, t_a, consecutive_pairs(drive_a, t_a, cfg.model_dt_s),
                     [f"d{d}" for d in range(n_drives)])


def test_frame_pairs_follow_the_model_frame_interval() -> None:
    cfg = micro_cfg()
    bank = _bank(cfg, n_drives=2, n_frames=5)
    assert bank.pairs.shape == (8, 2)  # 4 per drive, none across drives
    assert (bank.drive[bank.pairs[:, 0]] == bank.drive[bank.pairs[:, 1]]).all()
    assert (bank.t_ns[bank.pairs[:, 1]] > bank.t_ns[bank.pairs[:, 0]]).all()


@pytest.mark.parametrize("branch", ["ctx", "dyn"])
def test_twenty_training_steps_lower_the_loss(tmp_path, branch: str) -> None:
    from pwm_model.tokenizer.losses import l1_loss
    from pwm_model.train.tokenizer_loop import train_stage

    torch.manual_seed(0)
    cfg = micro_cfg("train.tokenizer_batch_size=4", "train.warmup_steps=2", "train.tokenizer_lr=0.003",
                    "tokenizer.gan_start_step=10", "train.eval_every=10")
    bank = _bank(cfg)
    tok = Tokenizer(cfg.tokenizer)
    guide = torch.from_numpy(bank.frames[bank.pairs[:4, 0]]).permute(0, 3, 1, 2).float() / 127.5 - 1
    x_ctx = torch.from_numpy(bank.frames[bank.pairs[:4, 1]]).permute(0, 3, 1, 2).float() / 127.5 - 1
    x_dyn = torch.nn.functional.interpolate(x_ctx, size=(cfg.tokenizer.dyn_height_px, cfg.tokenizer.dyn_width_px),
                                            mode="area")

    def loss() -> float:
        tok.eval()
        with torch.no_grad():
            if branch == "ctx":
                return float(l1_loss(tok.forward_ctx(x_ctx)[0], x_ctx))
            ge, gd = tok.guides(guide)
            return float(l1_loss(tok.forward_dyn(x_dyn, ge, gd)[0], x_dyn))

    if branch == "dyn":
        tok.init_dyn_from_ctx()
    before = loss()
    stats = train_stage(tok, branch, bank, cfg, tmp_path, steps=20, progress=False)
    after = loss()
    assert stats.steps == 20 and math.isfinite(stats.loss)
    assert after < 0.8 * before, (before, after)
    assert (tmp_path / f"recon_{branch}.png").stat().st_size > 0
    assert (tmp_path / "train_log.jsonl").read_text().count("\n") >= 1


def test_decoder_stage_keeps_every_token_and_lowers_the_loss(tmp_path) -> None:
    from pwm_model.tokenizer.losses import l1_loss
    from pwm_model.train.tokenizer_loop import train_decoder_stage

    torch.manual_seed(0)
    cfg = micro_cfg("train.tokenizer_batch_size=2", "train.warmup_steps=2", "train.tokenizer_decoder_lr=0.003")
    bank = _bank(cfg)
    tok = Tokenizer(cfg.tokenizer)
    tok.init_dyn_from_ctx()
    guide = torch.from_numpy(bank.frames[bank.pairs[:4, 0]]).permute(0, 3, 1, 2).float() / 127.5 - 1
    x_ctx = torch.from_numpy(bank.frames[bank.pairs[:4, 1]]).permute(0, 3, 1, 2).float() / 127.5 - 1
    x_dyn = torch.nn.functional.interpolate(x_ctx, size=(cfg.tokenizer.dyn_height_px, cfg.tokenizer.dyn_width_px),
                                            mode="area")

    @torch.no_grad()
    def snapshot() -> tuple[torch.Tensor, torch.Tensor, float, float]:
        ctx_tokens, ge = tok.encode_ctx(guide)
        dyn_tokens = tok.encode_dyn(x_dyn, ge)
        rec_ctx = tok.decode_ctx(tok.encode_ctx(x_ctx)[0])
        rec_dyn = tok.decode_dyn(dyn_tokens, tok.ctx_guide_dec(ctx_tokens))
        return ctx_tokens, dyn_tokens, float(l1_loss(rec_ctx, x_ctx)), float(l1_loss(rec_dyn, x_dyn))

    encoder_before = {k: v.clone() for k, v in tok.state_dict().items() if ".decoder." not in k and ".expand." not in k}
    ctx0, dyn0, l1_ctx0, l1_dyn0 = snapshot()
    for branch in ("ctx", "dyn"):
        stats = train_decoder_stage(tok, branch, bank, cfg, tmp_path, steps=20, progress=False)
        assert stats.branch == f"{branch}_decoder" and stats.steps == 20 and math.isfinite(stats.loss)
    ctx1, dyn1, l1_ctx1, l1_dyn1 = snapshot()
    assert torch.equal(ctx0, ctx1) and torch.equal(dyn0, dyn1)
    after = tok.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in encoder_before.items())
    assert l1_ctx1 < 0.8 * l1_ctx0 and l1_dyn1 < 0.8 * l1_dyn0, (l1_ctx0, l1_ctx1, l1_dyn0, l1_dyn1)
    assert all(p.requires_grad for p in tok.parameters())  # nothing left frozen behind
    log = (tmp_path / "train_log.jsonl").read_text()
    assert '"ctx_decoder"' in log and '"dyn_decoder"' in log


def test_dyn_pairs_degrade_the_guide_and_shrink_the_target() -> None:
    from pwm_model.data.datasets import DynPairs, degrade_rgb, to_tensor

    cfg = micro_cfg()
    bank = _bank(cfg, n_drives=1, n_frames=4)
    tc = cfg.tokenizer
    guide, target, degraded = DynPairs(bank, tc, degrade_prob=0.0)[0]
    assert guide.shape == (3, tc.ctx_height_px, tc.ctx_width_px) and target.shape == (3, tc.dyn_height_px,
                                                                                        tc.dyn_width_px)
    assert not degraded and torch.equal(guide, to_tensor(bank.frames[bank.pairs[0, 0]]))
    guide, _, degraded = DynPairs(bank, tc, degrade_prob=1.0)[0]
    want = to_tensor(degrade_rgb(bank.frames[bank.pairs[0, 0]], tc.dyn_height_px, tc.dyn_width_px))
    assert degraded and torch.equal(guide, want)
    assert not torch.equal(guide, to_tensor(bank.frames[bank.pairs[0, 0]]))
    assert float(guide.min()) >= -1 and float(guide.max()) <= 1
