"""The world-model training loop: deterministic by seed, exact resume, stage losses, optimiser groups."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pwm_model.config import apply_overrides, preset
from pwm_model.errors import ConfigError
from pwm_model.train.wm_data import WorldModelData
from pwm_model.train.wm_trainer import Trainer, cosine_factor, param_groups
from pwm_model.world_model.checkpoint import init_from, load_world_model, save_world_model
from pwm_model.world_model.model import PolicyWorldModel

from .test_world_model import SMALL

torch.set_num_threads(1)


def _cfg(*extra: str):
    return apply_overrides(preset("tiny"), SMALL + ["train.batch_size=4", "train.grad_accum=2", "train.lr=0.001",
                                                    "train.warmup_steps=3", "train.seed=5", "train.clip_stride=1",
                                                    *extra])


def _data(cfg, n: int = 24) -> WorldModelData:
    g = torch.Generator().manual_seed(0)
    c, tk, d = cfg.tokenizer.codebook_size, cfg.tokenizer, cfg.data
    # frames that drift slowly: most slots keep their code from one frame to the next
    first = torch.randint(0, c, (n, 1, tk.dyn_tokens), generator=g)
    frames = [first]
    for _ in range(d.history_frames + d.future_frames - 1):
        prev = frames[-1]
        change = torch.rand(prev.shape, generator=g) < 0.3
        frames.append(torch.where(change, torch.randint(0, c, prev.shape, generator=g), prev))
    ego = torch.cat([torch.rand(n, 2, generator=g) * 10, torch.nn.functional.one_hot(torch.arange(n) % 3, 3),
                     torch.rand(n, 1, generator=g) - 0.5, torch.rand(n, 1, generator=g) * 5], 1)
    wp = torch.cumsum(torch.rand(n, d.num_waypoints, 3, generator=g), 1)
    return WorldModelData(torch.randint(0, c, (n, tk.ctx_tokens), generator=g), torch.cat(frames, 1), ego.float(),
                          torch.ones(n, dtype=torch.bool), wp, torch.ones(n, d.num_waypoints, dtype=torch.bool))


def _run(cfg, stage: str, steps: int, plan_on_rollout: float = 0.0) -> list[float]:
    torch.manual_seed(cfg.train.seed)
    model = PolicyWorldModel(cfg)
    trainer = Trainer(cfg, model, _data(cfg), stage, steps, plan_on_rollout=plan_on_rollout, log=lambda s: None)
    return [trainer.train_step()["loss"] for _ in range(steps)]


def test_twenty_cpu_steps_repeat_exactly() -> None:
    # random waypoints: a speed prior would start the loss near its floor; metres: 20 steps show the loss falling
    cfg = _cfg("world_model.prior=none", "world_model.traj_loss_per_horizon=false")
    a = _run(cfg, "finetune", 20, plan_on_rollout=0.5)
    b = _run(cfg, "finetune", 20, plan_on_rollout=0.5)
    assert a == b
    assert a[-1] < a[0]  # and it learns
    c = _run(_cfg("world_model.prior=none", "world_model.traj_loss_per_horizon=false", "train.seed=6"), "finetune", 20,
             plan_on_rollout=0.5)
    assert c != a


def test_the_overlap_penalty_joins_the_fine_tuning_loss() -> None:
    """train.collision_weight w: the step's loss is the plain one plus w times the overlap penalty of its plan."""
    losses = {}
    for weight in (0.0, 5.0):
        cfg = _cfg("world_model.prior=none", f"train.collision_weight={weight}")
        data = _data(cfg)
        n, k = data.waypoints.shape[:2]
        data.boxes = torch.tensor([10.0, 0.0, 0.8, 60.0, 60.0, 1.5, 0.0]).repeat(n, k, 1, 1)  # covers every plan
        data.boxes_valid = torch.ones(n, k, 1, dtype=torch.bool)
        torch.manual_seed(cfg.train.seed)
        trainer = Trainer(cfg, PolicyWorldModel(cfg), data, "finetune", 1, log=lambda s: None)
        with torch.no_grad():
            losses[weight] = trainer.losses(data.batch(torch.arange(4)))
    assert "collision_loss" not in losses[0.0]
    pen = losses[5.0]["collision_loss"]
    assert float(pen) > 1.0  # every waypoint deep inside the box
    torch.testing.assert_close(losses[5.0]["loss"], losses[0.0]["loss"] + 5.0 * pen)


def test_resume_continues_exactly(tmp_path: Path) -> None:
    cfg = _cfg()
    straight = _run(cfg, "pretrain", 8)
    torch.manual_seed(cfg.train.seed)
    model = PolicyWorldModel(cfg)
    first = Trainer(cfg, model, _data(cfg), "pretrain", 8, log=lambda s: None)
    losses = [first.train_step()["loss"] for _ in range(4)]
    save_world_model(tmp_path, cfg, model)
    first.save_state(tmp_path)
    model2 = PolicyWorldModel(cfg)
    init_from(model2, tmp_path)
    second = Trainer(cfg, model2, _data(cfg), "pretrain", 8, log=lambda s: None)
    second.load_state(tmp_path)
    assert second.step == 4
    losses += [second.train_step()["loss"] for _ in range(4)]
    assert losses == pytest.approx(straight, rel=1e-6, abs=1e-7)


def test_stage_losses_and_run_logging(tmp_path: Path) -> None:
    cfg = _cfg("train.save_every=3")
    torch.manual_seed(0)
    model = PolicyWorldModel(cfg)
    data = _data(cfg)
    lines: list[str] = []
    saves: list[int] = []
    trainer = Trainer(cfg, model, data, "pretrain", 6, out_dir=tmp_path, log_every=2, log=lines.append)
    batch = data.batch(trainer.batch_indices(0, 0))
    out = trainer.losses(batch)
    assert "traj_loss" not in out and torch.equal(out["loss"], out["video_loss"])  # action-free
    trainer.run(on_save=lambda t: saves.append(t.step))
    assert saves == [3, 6] and len(lines) == 3 and "ETA" in lines[-1]
    assert (tmp_path / "train_log.jsonl").read_text().count("\n") == 3
    ft = Trainer(cfg, model, data, "finetune", 2, log=lambda s: None)
    out = ft.losses(batch)
    wm = cfg.world_model
    torch.testing.assert_close(out["loss"], wm.video_weight * out["video_loss"] + wm.traj_weight * out["traj_loss"])
    plan_only = PolicyWorldModel(_cfg("world_model.forecast_frames=0"))
    out = Trainer(_cfg("world_model.forecast_frames=0"), plan_only, data, "finetune", 2).losses(batch)
    assert "video_loss" not in out and torch.equal(out["loss"], cfg.world_model.traj_weight * out["traj_loss"])
    with pytest.raises(ConfigError, match="forecast_frames"):
        Trainer(_cfg("world_model.forecast_frames=0"), plan_only, data, "pretrain", 2)


def test_batches_are_a_pure_function_of_the_step_and_cover_the_data() -> None:
    cfg = _cfg()
    data = _data(cfg, n=10)
    t = Trainer(cfg, PolicyWorldModel(cfg), data, "pretrain", 5)
    seen = torch.cat([t.batch_indices(0, 0), t.batch_indices(0, 1), t.batch_indices(1, 0)])[:10]
    assert sorted(seen.tolist()) == list(range(10))  # one epoch is a permutation
    assert torch.equal(t.batch_indices(3, 1), t.batch_indices(3, 1))
    ranks = [Trainer(cfg, PolicyWorldModel(cfg), data, "pretrain", 5, rank=r, world_size=2).batch_indices(2, 0)
             for r in range(2)]
    assert len(set(ranks[0].tolist()) & set(ranks[1].tolist())) == 0  # ranks split the global batch


def test_optimiser_groups_and_schedule() -> None:
    model = PolicyWorldModel(_cfg())
    groups = param_groups(model, 0.01, lr=1e-3, trunk_lr_scale=0.2)
    ids = {id(p): g for g in groups for p in g["params"]}
    assert len(ids) == len(list(model.parameters()))  # every parameter in exactly one group
    for p in (model.tok_emb.weight, model.transformer.blocks[0].ln1.weight, model.transformer.blocks[0].attn.qkv.bias):
        assert ids[id(p)]["weight_decay"] == 0.0 and ids[id(p)]["lr"] == pytest.approx(2e-4)  # trunk, no decay
    assert ids[id(model.transformer.blocks[0].attn.qkv.weight)]["weight_decay"] == 0.01
    for p in (model.waypoint_head[0].weight, model.plan_ego.weight, model.ego_mlp[0].weight):
        assert ids[id(p)]["lr"] == pytest.approx(1e-3) and ids[id(p)]["weight_decay"] == 0.01  # heads at lr
    assert ids[id(model.waypoint_head[0].bias)]["weight_decay"] == 0.0
    ft = Trainer(_cfg("train.trunk_lr_scale=0.2"), model, _data(_cfg()), "finetune", 5)
    assert sorted({g["initial_lr"] for g in ft.optimizer.param_groups}) == pytest.approx(
        [ft.cfg.train.lr * 0.2, ft.cfg.train.lr])
    pre = Trainer(_cfg("train.trunk_lr_scale=0.2"), model, _data(_cfg()), "pretrain", 5)
    assert {g["initial_lr"] for g in pre.optimizer.param_groups} == {pre.cfg.train.lr}  # pretraining: one rate
    assert cosine_factor(0, 10, 100) == pytest.approx(0.1) and cosine_factor(9, 10, 100) == pytest.approx(1.0)
    assert cosine_factor(55, 10, 100) == pytest.approx(0.5) and cosine_factor(100, 10, 100) == pytest.approx(0.0)


def test_strided_epochs_take_one_clip_of_every_window() -> None:
    cfg = _cfg("train.clip_stride=4", "train.batch_size=5")
    data = _data(cfg, n=22)  # 6 windows, the last one short
    t = Trainer(cfg, PolicyWorldModel(cfg), data, "pretrain", 5)
    epoch = torch.cat([t.batch_indices(0, m) for m in range(cfg.train.grad_accum)] +
                      [t.batch_indices(1, 0)])[:6].tolist()
    assert sorted(i // 4 for i in epoch) == list(range(6)) and max(epoch) < 22
    again = Trainer(cfg, PolicyWorldModel(cfg), data, "pretrain", 5)
    assert torch.equal(again.batch_indices(2, 0), t.batch_indices(2, 0))


def test_turn_repeat_draws_left_and_right_clips_that_many_times_per_epoch() -> None:
    cfg = _cfg("train.turn_repeat=3", "train.batch_size=7")
    data = _data(cfg, n=12)  # commands cycle left, straight, right: 8 turning clips, 4 straight
    t = Trainer(cfg, PolicyWorldModel(cfg), data, "pretrain", 5)
    epoch = torch.cat([t.batch_indices(s, m) for s in range(2) for m in range(cfg.train.grad_accum)])[:28].tolist()
    counts = [epoch.count(i) for i in range(12)]
    assert counts == [1 if i % 3 == 1 else 3 for i in range(12)]
    plain = Trainer(_cfg("train.batch_size=7"), PolicyWorldModel(cfg), data, "pretrain", 5)
    assert sorted(torch.cat([plain.batch_indices(0, 0), plain.batch_indices(0, 1)])[:12].tolist()) == list(range(12))
    with pytest.raises(ConfigError, match="turn_repeat"):
        _cfg("train.turn_repeat=0")


def test_ema_weights_are_saved_and_resume_exactly(tmp_path: Path) -> None:
    cfg = _cfg("train.ema_decay=0.9")
    torch.manual_seed(cfg.train.seed)
    straight_model = PolicyWorldModel(cfg)
    straight = Trainer(cfg, straight_model, _data(cfg), "finetune", 6, log=lambda s: None)
    want = [straight.train_step()["loss"] for _ in range(6)]
    torch.manual_seed(cfg.train.seed)
    model = PolicyWorldModel(cfg)
    first = Trainer(cfg, model, _data(cfg), "finetune", 6, log=lambda s: None)
    got = [first.train_step()["loss"] for _ in range(3)]
    raw = {k: p.detach().clone() for k, p in model.named_parameters()}
    with first.averaged_weights():
        w = model.waypoint_head[0].weight.detach().clone()
        assert not torch.equal(w, raw["waypoint_head.0.weight"])  # the average, not the last step
        torch.testing.assert_close(w, first.ema["waypoint_head.0.weight"])
        save_world_model(tmp_path, cfg, model)
    assert all(torch.equal(p, raw[k]) for k, p in model.named_parameters())  # the raw weights come back
    first.save_state(tmp_path)
    model2 = PolicyWorldModel(cfg)
    init_from(model2, tmp_path)  # the EMA weights ...
    second = Trainer(cfg, model2, _data(cfg), "finetune", 6, log=lambda s: None)
    second.load_state(tmp_path)  # ... replaced by the raw ones to go on from
    got += [second.train_step()["loss"] for _ in range(3)]
    assert got == pytest.approx(want, rel=1e-6, abs=1e-7)


def test_bf16_autocast_on_the_cpu_gives_the_fp32_losses_within_two_percent():
    """The loss-parity check behind bench/train_step.py, on the shipped (trained) weights: one forward each way."""
    from test.conftest import REPO_ROOT

    model, cfg = load_world_model(REPO_ROOT / "models" / "pwm-tiny")
    g = torch.Generator().manual_seed(0)
    tk, h, f, k = cfg.tokenizer, cfg.data.history_frames, cfg.data.future_frames, cfg.data.num_waypoints
    batch = {"ctx_tokens": torch.randint(0, tk.codebook_size, (8, tk.ctx_tokens), generator=g),
             "dyn_tokens": torch.randint(0, tk.codebook_size, (8, h + f, tk.dyn_tokens), generator=g),
             "ego": torch.tensor([[8.0, 0.3, 0.0, 1.0, 0.0, 0.05, 1.0]]).repeat(8, 1),
             "ego_valid": torch.ones(8, dtype=torch.bool),
             "waypoints": torch.randn(8, k, 3, generator=g), "waypoints_valid": torch.ones(8, k, dtype=torch.bool)}
    with torch.no_grad():  # eval mode (no dropout): both passes see the same network
        ref = model(batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(batch)
    for key in ("video_loss", "traj_loss"):
        assert abs(float(low[key]) - float(ref[key])) <= 0.02 * abs(float(ref[key])), key
    assert not torch.equal(low["waypoints"], ref["waypoints"])  # bf16 really ran


def test_a_config_file_with_init_or_resume_is_refused_with_the_way_out(tmp_path: Path, capsys) -> None:
    """--config is merged over its preset, not over the checkpoint: with --init or --resume it would reset the
    checkpoint's values, so it is refused in one sentence that names --set (docs/TRAINING.md, the flags table)."""
    from pwm_model.cli import main

    conf = tmp_path / "mine.yaml"
    conf.write_text("preset: tiny\ntrain:\n  lr: 0.0001\n")
    ckpt, store, out = str(tmp_path / "ckpt"), str(tmp_path / "store"), str(tmp_path / "out")
    for argv in (["train", "--stage", "finetune", "--data", store, "--init", ckpt, "--out", out],
                 ["train", "--stage", "finetune", "--data", store, "--out", out, "--resume"],
                 ["train-tokenizer", "--init", ckpt, "--branch", "dyn", "--data", store, "--out", out,
                  "--threads", "1"]):
        capsys.readouterr()
        assert main([*argv, "--config", str(conf)]) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: "), err
        assert "--config" in err[0] and "--set KEY=VALUE" in err[0], err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.yaml"]


def test_the_ego_branch_fits_the_ego_labels_before_fine_tuning(tmp_path: Path) -> None:
    """A fresh branch changes nothing; fitted, the plan follows what the ego vector says (here: the command moves
    the car sideways), and a checkpoint without a branch loads into a model with one and plans as it did."""
    from pwm_model.train.ego_branch import fit_ego_branch
    from pwm_model.world_model.prior import kinematic_prior

    cfg = _cfg("world_model.prior=ctra", "world_model.ego_branch=true")
    data = _data(cfg, n=96)
    prior = kinematic_prior("ctra", data.ego, torch.arange(1, cfg.data.num_waypoints + 1) * cfg.data.waypoint_dt_s)
    side_m = (data.ego[:, 2] - data.ego[:, 4])[:, None] * torch.linspace(0.5, 2.0, cfg.data.num_waypoints)  # left +
    data.waypoints = prior + torch.stack([torch.zeros_like(side_m), side_m, torch.zeros_like(side_m)], -1)
    torch.manual_seed(0)
    model = PolicyWorldModel(cfg).eval()
    b = data.batch(torch.arange(96))
    _, fresh = model.rollout(b["ctx_tokens"], b["dyn_tokens"][:, :cfg.data.history_frames], b["ego"])
    torch.testing.assert_close(fresh, prior)  # zero branch, zero head: the prior
    fit = fit_ego_branch(model, data, 400, log=lambda s: None)
    assert fit["l1_after"] < 0.2 * fit["l1_before"]
    with torch.no_grad():
        _, planned = model.rollout(b["ctx_tokens"], b["dyn_tokens"][:, :cfg.data.history_frames], b["ego"])
    lateral_err = (planned[..., 1] - data.waypoints[..., 1]).abs().mean()
    assert lateral_err < 0.2 * side_m.abs().mean()
    # an earlier checkpoint (no branch) into a model with one: the same plan
    plain_cfg = _cfg("world_model.prior=ctra", "world_model.ego_branch=false")
    torch.manual_seed(1)
    plain = PolicyWorldModel(plain_cfg).eval()
    torch.nn.init.normal_(plain.waypoint_head[-1].weight, 0.0, 0.02)
    save_world_model(tmp_path / "plain", plain_cfg, plain)
    branched = PolicyWorldModel(cfg).eval()
    init_from(branched, tmp_path / "plain")
    x = (b["ctx_tokens"][:4], b["dyn_tokens"][:4, :cfg.data.history_frames], b["ego"][:4])
    torch.testing.assert_close(branched.rollout(*x)[1], plain.rollout(*x)[1])


def test_corrupt_codes_replaces_the_share_asked_for() -> None:
    import torch

    from pwm_model.train.wm_trainer import corrupt_codes

    torch.manual_seed(0)
    codes = torch.randint(0, 1024, (64, 4, 16))
    assert torch.equal(corrupt_codes(codes, 0.0, 1024), codes)
    changed = (corrupt_codes(codes, 0.3, 1024) != codes).float().mean().item()
    assert 0.27 < changed < 0.33  # (a random code equals the old one 1 time in 1024)
    out = corrupt_codes(codes, 1.0, 1024)
    assert out.dtype == codes.dtype and int(out.min()) >= 0 and int(out.max()) < 1024
