"""Checkpoint directories: round trip, and one clear ModelError for missing, corrupt or mismatched files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pwm_model.checkpoint import load_checkpoint, load_metrics, load_modules, save_checkpoint
from pwm_model.config import apply_overrides, preset, save_yaml
from pwm_model.errors import ModelError
from pwm_model.tokenizer.model import Tokenizer, load_tokenizer

torch.set_num_threads(1)


def _cfg(*overrides: str):
    return apply_overrides(preset("tiny"), ["tokenizer.ctx_height_px=32", "tokenizer.ctx_width_px=64",
                                            "tokenizer.dyn_height_px=16", "tokenizer.dyn_width_px=32",
                                            "tokenizer.base_channels=8", "tokenizer.channel_mult=[1,2,2,2]",
                                            "tokenizer.codebook_bits=6", *overrides])


def _saved(tmp_path: Path, **kw) -> tuple[Path, Tokenizer]:
    torch.manual_seed(0)
    cfg = _cfg()
    tok = Tokenizer(cfg.tokenizer)
    out = tmp_path / "ckpt"
    save_checkpoint(out, cfg, {"tokenizer": tok}, {"tokenizer_train": {"steps": 3}}, **kw)
    return out, tok


def test_round_trip(tmp_path: Path) -> None:
    out, tok = _saved(tmp_path)
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "metrics.json", "tokenizer.safetensors"]
    cfg, tok2 = load_tokenizer(str(out))
    assert cfg.tokenizer == tok.cfg
    for (k, v), (k2, v2) in zip(tok.state_dict().items(), tok2.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    cfg, states = load_checkpoint(out)
    assert list(states) == ["tokenizer"] and len(states["tokenizer"]) == len(tok.state_dict())
    # metrics merge, other files stay
    (out / "COMMANDS.md").write_text("x\n")
    save_checkpoint(out, cfg, {"tokenizer": tok}, {"tokenizer_eval": {"psnr_ctx_db": 30.0}})
    assert load_metrics(out) == {"tokenizer_train": {"steps": 3}, "tokenizer_eval": {"psnr_ctx_db": 30.0}}
    assert (out / "COMMANDS.md").exists()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_half_precision_weights_load_as_float32(tmp_path: Path) -> None:
    out, tok = _saved(tmp_path, dtype=torch.float16)
    _, tok2 = load_tokenizer(str(out))
    w, w2 = tok.ctx.encoder.conv_in.weight, tok2.ctx.encoder.conv_in.weight
    assert w2.dtype == torch.float32 and torch.allclose(w, w2, atol=1e-3)


def test_safetensors_metadata_carries_the_config(tmp_path: Path) -> None:
    from safetensors import safe_open

    out, _ = _saved(tmp_path)
    with safe_open(str(out / "tokenizer.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["format"] == "pwm-checkpoint" and meta["module"] == "tokenizer"
    assert "codebook_bits: 6" in meta["config"]


def test_missing_directory_config_or_module(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load_tokenizer(str(tmp_path / "nope"))
    out, _ = _saved(tmp_path)
    (out / "tokenizer.safetensors").unlink()
    with pytest.raises(ModelError, match="has no tokenizer.safetensors"):
        load_tokenizer(str(out))
    (out / "config.yaml").unlink()
    with pytest.raises(ModelError, match="not a checkpoint"):
        load_tokenizer(str(out))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_weights(tmp_path: Path, damage: str) -> None:
    out, _ = _saved(tmp_path)
    f = out / "tokenizer.safetensors"
    data = f.read_bytes()
    f.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x00not a safetensors file" * 10,
                   "empty": b""}[damage])
    with pytest.raises(ModelError, match="corrupt or truncated") as exc:
        load_tokenizer(str(out))
    assert "\n" not in str(exc.value)


def test_corrupt_config_and_metrics(tmp_path: Path) -> None:
    out, _ = _saved(tmp_path)
    (out / "metrics.json").write_text("{not json")
    with pytest.raises(ModelError, match="metrics file .* is corrupt"):
        load_metrics(out)
    (out / "config.yaml").write_text("tokenizer: [unclosed\n")
    with pytest.raises(ModelError, match="config .* is unusable"):
        load_tokenizer(str(out))


def test_config_mismatch(tmp_path: Path) -> None:
    out, _ = _saved(tmp_path)
    save_yaml(_cfg("tokenizer.codebook_bits=7"), out / "config.yaml")
    with pytest.raises(ModelError, match="does not match its config: tensor .* has shape"):
        load_tokenizer(str(out))
    save_yaml(_cfg("tokenizer.guidance=false"), out / "config.yaml")
    with pytest.raises(ModelError, match="unexpected tensor"):
        load_tokenizer(str(out))


def test_missing_tensor_and_nan_tensor(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    out, tok = _saved(tmp_path)
    state = {k: v.clone() for k, v in tok.state_dict().items()}
    first = next(iter(state))
    save_file({k: v for k, v in state.items() if k != first}, str(out / "tokenizer.safetensors"))
    with pytest.raises(ModelError, match="missing"):
        load_tokenizer(str(out))
    state[first][...] = float("nan")
    save_file(state, str(out / "tokenizer.safetensors"))
    with pytest.raises(ModelError, match="NaN"):
        load_tokenizer(str(out))


def test_generic_modules(tmp_path: Path) -> None:
    cfg = _cfg()
    lin = torch.nn.Linear(3, 2)
    save_checkpoint(tmp_path, cfg, {"head": lin}, {"a": 1})
    _, mods = load_modules(tmp_path, {"head": lambda c: torch.nn.Linear(3, 2)})
    assert torch.equal(mods["head"].weight, lin.weight)
    with pytest.raises(ModelError, match="shape"):
        load_modules(tmp_path, {"head": lambda c: torch.nn.Linear(4, 2)})
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"a": 1}


def test_world_model_checkpoint_of_the_earlier_layout_loads_and_plans_as_before(tmp_path: Path) -> None:
    """A world model saved before the yaw rate and the command age (5-wide ego MLP), plan_ego and world_model.prior:
    it loads with zeros there, its cv_prior config key becomes prior cv, and it plans exactly as the same weights
    did."""
    import yaml

    from pwm_model.checkpoint import load_config
    from pwm_model.world_model.checkpoint import init_from, load_world_model
    from pwm_model.world_model.model import PolicyWorldModel

    cfg = apply_overrides(preset("tiny"), ["world_model.layers=1", "world_model.d_model=32", "world_model.heads=2",
                                           "world_model.ego_hidden=16", "world_model.head_hidden=16",
                                           "world_model.prior=cv"])
    torch.manual_seed(0)
    model = PolicyWorldModel(cfg).eval()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("plan_ego")}
    state["ego_mlp.0.weight"] = state["ego_mlp.0.weight"][:, :5].clone()  # the 5-wide ego vector
    save_checkpoint(tmp_path, cfg, {"world_model": state})
    raw = yaml.safe_load((tmp_path / "config.yaml").read_text())
    raw["world_model"].pop("prior")
    raw["world_model"].pop("traj_loss_per_horizon")
    raw["world_model"]["cv_prior"] = True
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    assert load_config(tmp_path).world_model.prior == "cv"
    old, _ = load_world_model(tmp_path)
    torch.nn.init.zeros_(model.ego_mlp[0].weight[:, 5:])
    g = torch.Generator().manual_seed(1)
    ctx = torch.randint(0, model.codebook_size, (2, model.ctx_tokens), generator=g)
    hist = torch.randint(0, model.codebook_size, (2, model.history_frames, model.dyn_tokens), generator=g)
    ego = torch.tensor([[8.0, 0.5, 0, 1, 0, 0.3, 1.5], [3.0, -1.0, 1, 0, 0, -0.2, 5.0]])
    torch.testing.assert_close(old.rollout(ctx, hist, ego)[1], model.rollout(ctx, hist, ego)[1])
    fresh = PolicyWorldModel(cfg)
    init_from(fresh, tmp_path)  # fine-tuning from it starts from the same weights
    assert torch.all(fresh.plan_ego.weight == 0) and torch.all(fresh.ego_mlp[0].weight[:, 5:] == 0)


def test_world_model_checkpoint_from_before_the_command_age_plans_as_before(tmp_path: Path) -> None:
    """A world model saved with the 6-wide ego vector (before the command age): every layer reading the ego vector
    (the ego MLP, plan_ego, the ego branch) loads with a zero column for the age, so the age changes nothing."""
    from pwm_model.world_model.checkpoint import load_world_model
    from pwm_model.world_model.model import PolicyWorldModel

    cfg = apply_overrides(preset("tiny"), ["world_model.layers=1", "world_model.d_model=32", "world_model.heads=2",
                                           "world_model.ego_hidden=16", "world_model.head_hidden=16",
                                           "world_model.ego_branch=true", "world_model.ego_branch_hidden=16"])
    torch.manual_seed(0)
    model = PolicyWorldModel(cfg).eval()
    for layer in (model.ego_mlp[0], model.plan_ego, model.ego_branch[0], model.ego_branch[-1]):
        torch.nn.init.normal_(layer.weight, std=0.3)  # nothing zero, so a lost column would show
    state = dict(model.state_dict())
    for key in ("ego_mlp.0.weight", "plan_ego.weight", "ego_branch.0.weight"):
        state[key] = state[key][:, :6].clone()
    save_checkpoint(tmp_path, cfg, {"world_model": state})
    old, _ = load_world_model(tmp_path)
    for key in ("ego_mlp.0.weight", "plan_ego.weight", "ego_branch.0.weight"):
        assert torch.all(old.state_dict()[key][:, 6] == 0) and torch.equal(old.state_dict()[key][:, :6], state[key])
    g = torch.Generator().manual_seed(1)
    ctx = torch.randint(0, model.codebook_size, (2, model.ctx_tokens), generator=g)
    hist = torch.randint(0, model.codebook_size, (2, model.history_frames, model.dyn_tokens), generator=g)
    ego = torch.tensor([[8.0, 0.5, 0, 1, 0, 0.3, 0.0], [3.0, -1.0, 1, 0, 0, -0.2, 0.0]])
    aged = ego.clone()
    aged[:, 6] = torch.tensor([0.4, 5.0])
    torch.testing.assert_close(old.rollout(ctx, hist, ego)[1], old.rollout(ctx, hist, aged)[1])
    with torch.no_grad():
        for layer in (model.ego_mlp[0], model.plan_ego, model.ego_branch[0]):
            layer.weight[:, 6] = 0.0
    torch.testing.assert_close(old.rollout(ctx, hist, ego)[1], model.rollout(ctx, hist, ego)[1])


def test_float_keys_take_exponents_without_a_dot() -> None:
    """YAML 1.1 reads 3e-3 as a string; a float key still takes it (``--set train.lr=3e-3``)."""
    from pwm_model.errors import ConfigError

    assert apply_overrides(preset("tiny"), ["train.lr=3e-3"]).train.lr == pytest.approx(0.003)
    with pytest.raises(ConfigError, match="train.lr must be a number"):
        apply_overrides(preset("tiny"), ["train.lr=fast"])
