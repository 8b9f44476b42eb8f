"""`pwm train` (both stages, ablations) and `pwm eval` end to end on a real clip store of a synthetic drive."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pwm_model.cli import main
from pwm_model.config import CameraConfig, TopicsConfig, apply_overrides, preset

torch.set_num_threads(1)

MICRO = ["camera.width_px=128", "camera.height_px=64", "tokenizer.ctx_height_px=32", "tokenizer.ctx_width_px=64",
         "tokenizer.dyn_height_px=16", "tokenizer.dyn_width_px=32", "tokenizer.base_channels=8",
         "tokenizer.channel_mult=[1,2,2,2]", "tokenizer.codebook_bits=6", "data.shard_clips=8",
         "world_model.layers=1", "world_model.d_model=32", "world_model.heads=2", "world_model.ego_hidden=16",
         "world_model.head_hidden=16", "train.batch_size=4", "train.warmup_steps=1", "train.save_every=2"]


def _sets(extra: list[str] | None = None) -> list[str]:
    out = []
    for s in MICRO + (extra or []):
        out += ["--set", s]
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    from pwm_model.checkpoint import save_checkpoint
    from pwm_model.data.bag_writer import write_drive
    from pwm_model.data.clip_builder import build_clip_store
    from pwm_model.data.synthetic import simulate_drive
    from pwm_model.tokenizer.model import Tokenizer

    root = tmp_path_factory.mktemp("wm_cli")
    cfg = apply_overrides(preset("tiny"), MICRO)
    cam = CameraConfig(width_px=128, height_px=64, frame_rate_hz=cfg.camera.frame_rate_hz)
    for name, seed in (("train", 1000), ("eval", 1)):
        bag = write_drive(root / f"drive_{name}", simulate_drive(seed=seed, seconds=7.0, camera=cam), cam,
                          TopicsConfig())
        build_clip_store([bag], root / f"store_{name}", cfg, progress=False)
    torch.manual_seed(0)
    save_checkpoint(root / "tok", cfg, {"tokenizer": Tokenizer(cfg.tokenizer)})  # a real, untrained tokenizer
    return {"root": root, "train": root / "store_train", "eval": root / "store_eval", "tok": root / "tok"}


def test_token_cache_follows_the_guidance_rule(setup: dict[str, Path]) -> None:
    from pwm_model.data.clips import ClipStore
    from pwm_model.data.contract import resize_rgb
    from pwm_model.data.datasets import to_tensor
    from pwm_model.data.tokens import cache_dir, token_cache
    from pwm_model.io_utils import file_sha256
    from pwm_model.tokenizer.model import load_tokenizer

    cfg, tok = load_tokenizer(str(setup["tok"]))
    cache = token_cache(setup["train"], setup["tok"], cfg, progress=False)
    store = ClipStore(setup["train"])
    h, tk = cfg.data.history_frames, cfg.tokenizer
    assert cache.ctx.shape == (len(store), tk.ctx_tokens)
    assert cache.dyn.shape == (len(store), cfg.data.history_frames + cfg.data.future_frames, tk.dyn_tokens)
    assert cache.path == cache_dir(setup["train"], file_sha256(setup["tok"] / "tokenizer.safetensors"))
    for i in (0, len(store) - 1):
        frames = store[i].frames_rgb
        with torch.no_grad():
            ctx, _ = tok.encode_ctx(to_tensor(frames[h])[None])
            _, guide = tok.encode_ctx(to_tensor(frames[2])[None])  # frame 3 is guided by frame 2
            dyn = tok.encode_dyn(to_tensor(resize_rgb(frames[3], tk.dyn_height_px, tk.dyn_width_px))[None], guide)
        assert np.array_equal(cache.ctx[i], ctx[0].numpy())
        assert np.array_equal(cache.dyn[i, 2], dyn[0].numpy())  # cache row j = clip frame j + 1
    again = token_cache(setup["train"], setup["tok"], cfg, progress=False)  # loaded, not rebuilt
    assert np.array_equal(again.dyn, cache.dyn)


def test_train_stages_ablations_and_eval(setup: dict[str, Path], tmp_path: Path, capsys) -> None:
    train, ev, tok = str(setup["train"]), str(setup["eval"]), str(setup["tok"])
    pre, fine, plan_only = tmp_path / "pre", tmp_path / "fine", tmp_path / "plan_only"
    assert main(["train", "--stage", "pretrain", "--data", train, "--tokenizer", tok, "--out", str(pre),
                 "--steps", "3", "--threads", "1", "--log-every", "1", *_sets()]) == 0
    for name in ("config.yaml", "world_model.safetensors", "tokenizer.safetensors", "metrics.json", "COMMANDS.md",
                 "train_state.pt", "train_log.jsonl"):
        assert (pre / name).is_file(), name
    assert main(["train", "--stage", "finetune", "--data", train, "--init", str(pre), "--out", str(fine),
                 "--steps", "2", "--threads", "1", "--plan-on-rollout", "1"]) == 0
    assert main(["train", "--stage", "finetune", "--data", train, "--init", str(pre), "--out", str(plan_only),
                 "--steps", "2", "--threads", "1", "--set", "world_model.forecast_frames=0"]) == 0
    commands = (fine / "COMMANDS.md").read_text()
    assert "--stage pretrain" in commands and "--stage finetune" in commands  # the history carries over
    metrics = json.loads((fine / "metrics.json").read_text())
    assert metrics["train_finetune"]["steps"] == 2 and metrics["train_pretrain"]["steps"] == 3
    # the camera of the clip stores trained on, per stage, in the checkpoint and in what the export copies
    from pwm_model.export.onnx import source_info

    topics = TopicsConfig()
    for stage in ("train_pretrain", "train_finetune"):
        cam = metrics[stage]["camera"]
        assert (cam["width_px"], cam["height_px"], cam["sizes_px"]) == (128, 64, [[128, 64]]), cam
        assert cam["camera_topic"] == topics.image and cam["camera_info"] is True and cam["stores"] == [train]
        assert cam["topics"]["odometry"] == topics.odometry and cam["topics"]["camera_info"] == topics.camera_info
    assert source_info(fine)["metrics"]["train_finetune"]["camera"] == metrics["train_finetune"]["camera"]
    fit = metrics["train_finetune"]["ego_branch_fit"]  # the tiny preset's ego branch, fitted before the 2 steps
    assert fit["l1_after"] < fit["l1_before"]
    for refit in (False, True):  # from a checkpoint with a fitted branch: kept, or (train.ego_branch_refit) refitted
        out_dir = tmp_path / f"refit_{refit}"
        assert main(["train", "--stage", "finetune", "--data", train, "--init", str(fine), "--out", str(out_dir),
                     "--steps", "1", "--threads", "1", "--set", f"train.ego_branch_refit={str(refit).lower()}"]) == 0
        again = json.loads((out_dir / "metrics.json").read_text())["train_finetune"]
        assert ("ego_branch_fit" in again) == refit
        if refit:  # a fresh branch starts from the prior again, not where the checkpoint's branch was
            assert again["ego_branch_fit"]["l1_before"] > fit["l1_after"]
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(fine), "--data", ev, "--train-data", train, "--compare",
                 str(plan_only), "--image-clips", "4", "--threads", "1", "--quiet", "--save"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(out[-1])
    for key in ("l2_1s", "l2_2s", "l2_3s", "l2_avg", "collision_rate", "psnr_forecast_1s_db", "cv_l2_3s",
                "plan_only_l2_3s", "copy_last_psnr_1s_db", "ego_mlp_l2_3s", "l2_uniad_3s", "token_acc_1s"):
        assert key in summary, key
    assert summary["l2_3s"] is None or summary["l2_3s"] >= 0
    assert 0.0 <= summary["collision_rate"] <= 1.0
    assert summary["collision_rate_ci95_lo"] <= summary["collision_rate"] <= summary["collision_rate_ci95_hi"]
    assert 0.0 <= summary["plan_only_collision_p_value"] <= 1.0
    table = "\n".join(out[:-1])
    assert "constant velocity" in table and "ego-status MLP" in table and "copy-last-frame" in table
    # paired against plan-only, constant velocity, CA, CTRV, CTRA and the ego-status MLP
    assert table.count("  PWM only ") == 6
    assert "CTRA" in table and "PWM - CTRA l2_3s" in table
    assert summary["ctra_l2_3s"] >= 0 and 0.0 <= summary["ctra_collision_rate"] <= 1.0
    diff = (summary["pwm_minus_ctra_l2_3s_ci95_lo"], summary["pwm_minus_ctra_l2_3s"],
            summary["pwm_minus_ctra_l2_3s_ci95_hi"])
    assert diff[0] <= diff[1] <= diff[2] and summary["drives"] >= 1
    hits = (summary["pwm_minus_ctra_collision_rate_ci95_lo"], summary["pwm_minus_ctra_collision_rate"],
            summary["pwm_minus_ctra_collision_rate_ci95_hi"])  # the clips-hit difference, by drive
    assert hits[0] <= hits[1] <= hits[2] and hits[1] == pytest.approx(
        summary["collision_rate"] - summary["ctra_collision_rate"], abs=1e-9)
    assert "PWM - CTRA clips hit" in table
    mlp = (summary["pwm_minus_ego_mlp_l2_3s_ci95_lo"], summary["pwm_minus_ego_mlp_l2_3s"],
           summary["pwm_minus_ego_mlp_l2_3s_ci95_hi"])
    assert mlp[0] <= mlp[1] <= mlp[2] and "PWM - ego-status MLP l2_3s" in table
    for probe in ("oracle", "random", "copy_last", "none"):
        key = f"reliance_{probe}_l2_3s"
        assert summary[f"{key}_ci95_lo"] <= summary[key] <= summary[f"{key}_ci95_hi"], key
    assert "command_flip_lateral_3s_m" in summary and summary["command_clips"] >= 0
    # PWM and PWM fed the true future, each paired by clip against the compared run (the oracle gate)
    for stem in (f"pwm_minus_{plan_only.name}", f"pwm_oracle_minus_{plan_only.name}"):
        lo, mean, hi = (summary[f"{stem}_l2_3s_ci95_lo"], summary[f"{stem}_l2_3s"], summary[f"{stem}_l2_3s_ci95_hi"])
        assert lo <= mean <= hi, stem
    assert f"PWM fed the true future - {plan_only.name} l2_3s" in table
    assert "Forecast reliance" in table and "true future tokens" in table and "By scenario family" in table
    assert summary["collision_lateral_rate"] + summary["collision_longitudinal_rate"] == pytest.approx(
        summary["collision_rate"], abs=1e-3)
    saved = json.loads((fine / "metrics.json").read_text())
    assert saved[f"eval_{Path(ev).name}"]["clips"] == summary["clips"]
    # resume continues the run from its train_state.pt
    assert main(["train", "--stage", "finetune", "--data", train, "--out", str(fine), "--resume", "--steps", "4",
                 "--threads", "1"]) == 0
    assert json.loads((fine / "metrics.json").read_text())["train_finetune"]["steps"] == 4


def test_cli_errors_are_one_sentence(setup: dict[str, Path], tmp_path: Path, capsys) -> None:
    assert main(["train", "--stage", "pretrain", "--data", str(setup["train"]), "--out", str(tmp_path / "x"),
                 *_sets()]) == 2
    assert "--tokenizer" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(tmp_path / "missing"), "--data", str(setup["eval"])]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", "--stage", "pretrain", "--data", str(tmp_path / "nostore"), "--tokenizer",
                 str(setup["tok"]), "--out", str(tmp_path / "y"), *_sets()]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_store_without_odometry_pretrains_and_fine_tuning_and_eval_refuse_it(tmp_path: Path, capsys) -> None:
    """docs/TRAINING.md's promise, end to end: drives without odometry -> `pwm index` -> `pwm train --stage
    pretrain`; fine-tuning and `pwm eval` on that store stop with one sentence saying why."""
    from pwm_model.checkpoint import save_checkpoint
    from pwm_model.tokenizer.model import Tokenizer

    from .test_clips import _camera_only_bag

    bag = _camera_only_bag(tmp_path / "cam_only", 60)
    store, tok, pre = tmp_path / "store", tmp_path / "tok", tmp_path / "pre"
    assert main(["index", str(bag), "--out", str(store), "--quiet", *_sets()]) == 0
    cfg = apply_overrides(preset("tiny"), MICRO)
    torch.manual_seed(0)
    save_checkpoint(tok, cfg, {"tokenizer": Tokenizer(cfg.tokenizer)})
    assert main(["train", "--stage", "pretrain", "--data", str(store), "--tokenizer", str(tok), "--out", str(pre),
                 "--steps", "2", "--threads", "1", "--no-tensorboard", *_sets()]) == 0
    assert (pre / "world_model.safetensors").is_file()
    for argv in (["train", "--stage", "finetune", "--data", str(store), "--init", str(pre), "--out",
                  str(tmp_path / "fine"), "--steps", "1", "--threads", "1"],
                 ["eval", "--checkpoint", str(pre), "--data", str(store), "--threads", "1", "--quiet"]):
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error: clip store") and "without odometry" in err[-1], err
    assert not (tmp_path / "fine").exists()
