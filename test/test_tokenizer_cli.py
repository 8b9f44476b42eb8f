"""`pwm train-tokenizer` and `pwm eval-tokenizer` end to end on a real clip store of a synthetic drive."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pwm_model.cli import main
from pwm_model.config import CameraConfig, TopicsConfig, apply_overrides, preset

torch.set_num_threads(1)

MICRO = ["camera.width_px=128", "camera.height_px=64", "tokenizer.ctx_height_px=32", "tokenizer.ctx_width_px=64",
         "tokenizer.dyn_height_px=16", "tokenizer.dyn_width_px=32", "tokenizer.base_channels=8",
         "tokenizer.channel_mult=[1,2,2,2]", "tokenizer.codebook_bits=6", "data.shard_clips=8",
         "train.tokenizer_batch_size=2", "train.tokenizer_ctx_steps=3", "train.tokenizer_dyn_steps=3",
         "train.tokenizer_decoder_steps=2", "train.warmup_steps=1", "tokenizer.gan_start_step=1"]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    from pwm_model.data.bag_writer import write_drive
    from pwm_model.data.clip_builder import build_clip_store
    from pwm_model.data.synthetic import simulate_drive

    root = tmp_path_factory.mktemp("tok_cli")
    cfg = apply_overrides(preset("tiny"), MICRO)
    cam = CameraConfig(width_px=128, height_px=64, frame_rate_hz=cfg.camera.frame_rate_hz)
    bag = write_drive(root / "drive", simulate_drive(seed=1000, seconds=7.0, camera=cam), cam, TopicsConfig())
    build_clip_store([bag], root / "store", cfg, progress=False)
    return root / "store"


def _sets() -> list[str]:
    out = []
    for s in MICRO:
        out += ["--set", s]
    return out


def test_train_then_eval(store: Path, tmp_path: Path, capsys) -> None:
    ckpt = tmp_path / "tok"
    assert main(["train-tokenizer", "--preset", "tiny", "--data", str(store), "--out", str(ckpt), "--threads", "1",
                 "--no-progress", *_sets()]) == 0
    for name in ("config.yaml", "tokenizer.safetensors", "metrics.json", "recon_ctx.png", "recon_dyn.png",
                 "train_log.jsonl"):
        assert (ckpt / name).is_file(), name
    train = json.loads((ckpt / "metrics.json").read_text())["tokenizer_train"]
    assert train["ctx"]["steps"] == 3 and train["dyn"]["steps"] == 3 and train["pairs"] > 0
    assert train["ctx_decoder"]["steps"] == 2 and train["dyn_decoder"]["steps"] == 2
    capsys.readouterr()
    grid = tmp_path / "grid.png"
    assert main(["eval-tokenizer", "--checkpoint", str(ckpt), "--data", str(store), "--max-pairs", "8",
                 "--threads", "1", "--grid", str(grid), "--write-metrics"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    for key in ("psnr_ctx_db", "psnr_dyn_db", "ssim_dyn", "code_usage_ctx", "code_usage_dyn", "tokens_ctx",
                "tokens_dyn"):
        assert key in result, key
    assert (result["tokens_ctx"], result["tokens_dyn"]) == (4 * 8, 2 * 2)  # dyn: a 2x4 grid, patchified 1x2
    assert 0 < result["psnr_dyn_db"] < 100 and 0 < result["code_usage_ctx"] <= 1 and result["pairs"] == 8
    assert "psnr_ctx_db" in lines[0] or "metric" in lines[0]
    assert grid.stat().st_size > 0
    assert json.loads((ckpt / "metrics.json").read_text())["tokenizer_eval"]["psnr_dyn_db"] == result["psnr_dyn_db"]

    # the guidance ablation: dyn branch only, from the trained ctx branch, guidance off
    abl = tmp_path / "noguide"
    assert main(["train-tokenizer", "--init", str(ckpt), "--branch", "dyn", "--data", str(store), "--out", str(abl),
                 "--threads", "1", "--no-progress", "--set", "tokenizer.guidance=false"]) == 0
    from pwm_model.tokenizer.model import load_tokenizer

    cfg_a, tok_a = load_tokenizer(str(abl))
    _, tok = load_tokenizer(str(ckpt))
    assert not cfg_a.tokenizer.guidance and cfg_a.tokenizer.dyn_tokens == tok.cfg.dyn_tokens
    assert torch.equal(tok_a.ctx.encoder.conv_in.weight, tok.ctx.encoder.conv_in.weight)  # ctx kept frozen

    # the decoder stage alone, on the whole trained tokenizer: metrics keep the earlier stages' records
    dec = tmp_path / "dec"
    assert main(["train-tokenizer", "--init", str(ckpt), "--branch", "decoders", "--data", str(store), "--out",
                 str(dec), "--threads", "1", "--no-progress", "--set", "train.tokenizer_decoder_steps=4"]) == 0
    train_d = json.loads((dec / "metrics.json").read_text())["tokenizer_train"]
    assert train_d["ctx"] == train["ctx"] and train_d["ctx_decoder"]["steps"] == 4
    _, tok_d = load_tokenizer(str(dec))
    assert torch.equal(tok_d.dyn.encoder.conv_in.weight, tok.dyn.encoder.conv_in.weight)
    assert not torch.equal(tok_d.dyn.decoder.conv_out.weight, tok.dyn.decoder.conv_out.weight)


def test_bad_inputs_exit_2(store: Path, tmp_path: Path, capsys) -> None:
    assert main(["eval-tokenizer", "--checkpoint", str(tmp_path / "none"), "--data", str(store)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train-tokenizer", "--branch", "dyn", "--data", str(store), "--out", str(tmp_path / "x")]) == 2
    assert "--init" in capsys.readouterr().err
    assert main(["train-tokenizer", "--branch", "decoders", "--data", str(store), "--out", str(tmp_path / "z")]) == 2
    assert "--init" in capsys.readouterr().err
    assert main(["train-tokenizer", "--data", str(tmp_path / "nostore"), "--out", str(tmp_path / "y"),
                 *_sets()]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.yaml").write_text("preset: tiny\n")
    (bad / "tokenizer.safetensors").write_bytes(b"garbage")
    assert main(["eval-tokenizer", "--checkpoint", str(bad), "--data", str(store)]) == 2
    err = capsys.readouterr().err
    assert "corrupt" in err and err.count("\n") == 1
