"""Multi-process training: 2 gloo processes (DDP and FSDP) end where 1 process with the same global batch ends;
a run stopped with --max-steps and resumed continues the uninterrupted run exactly; bf16 autocast runs a step;
TensorBoard gets scalars and forecast grids; torchrun environments are read with clear errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from pwm_model.cli import main
from pwm_model.config import CameraConfig, TopicsConfig, apply_overrides, preset
from pwm_model.errors import ConfigError, ModelError
from pwm_model.train.distributed import (
    DistEnv,
    all_reduce_mean,
    cpu_has_bf16,
    init_from_env,
    load_optimizer_state,
    select_device,
    wrap_model,
)

from .dist_worker import run_world
from .test_eval_world_model import MICRO
from .test_train_world_model import _cfg, _data

torch.set_num_threads(1)

STEPS = 10
# the micro model of the end-to-end test; 2 accumulation micro-steps (DDP syncs on the second only)
# fp32 and no EMA: the test is about 1 vs 2 processes (bf16 roundings differ with the batch split; FSDP keeps no EMA)
COMMON = [*MICRO, "train.grad_accum=2", "train.lr=0.001", "train.warmup_steps=2", "train.save_every=100",
          "train.precision=fp32", "train.ema_decay=0"]
TOLERANCE = 1e-5  # largest parameter difference allowed between 1 and 2 processes (all-reduce rounding)


def _sets(extra: list[str]) -> list[str]:
    out = []
    for s in COMMON + extra:
        out += ["--set", s]
    return out


def _weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "world_model.safetensors"))


def _max_diff(a: Path, b: Path) -> float:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


def _losses(run: Path) -> list[float]:
    lines = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in lines if not r.get("eval")]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    """A real clip store of a 5 s synthetic drive, its token cache (a real, untrained tokenizer) and the reference:
    one process, global batch 4 x 2, 10 steps."""
    from pwm_model.checkpoint import save_checkpoint
    from pwm_model.data.bag_writer import write_drive
    from pwm_model.data.clip_builder import build_clip_store
    from pwm_model.data.synthetic import simulate_drive
    from pwm_model.data.tokens import token_cache
    from pwm_model.tokenizer.model import Tokenizer

    root = tmp_path_factory.mktemp("dist")
    cfg = apply_overrides(preset("tiny"), MICRO)
    cam = CameraConfig(width_px=128, height_px=64, frame_rate_hz=cfg.camera.frame_rate_hz)
    bag = write_drive(root / "drive", simulate_drive(seed=1000, seconds=5.0, camera=cam), cam, TopicsConfig())
    build_clip_store([bag], root / "store", cfg, progress=False)
    torch.manual_seed(0)
    save_checkpoint(root / "tok", cfg, {"tokenizer": Tokenizer(cfg.tokenizer)})
    token_cache(root / "store", root / "tok", cfg, progress=False)
    one = root / "one"
    assert main(_train_args(root, one, ["--steps", str(STEPS), "--log-every", "1"], ["train.batch_size=4"])) == 0
    return {"root": root, "store": root / "store", "tok": root / "tok", "one": one}


def _train_args(root: Path, out: Path, flags: list[str], sets: list[str], stage: str = "pretrain") -> list[str]:
    return ["train", "--stage", stage, "--data", str(root / "store"), "--tokenizer", str(root / "tok"),
            "--out", str(out), "--threads", "1", *flags, *_sets(sets)]


def test_two_processes_match_one_process_ddp_and_fsdp(setup: dict[str, Path]) -> None:
    root, one = setup["root"], setup["one"]
    ddp, fsdp, fine = root / "ddp", root / "fsdp", root / "fine"
    half = ["train.batch_size=2"]  # per process: 2 processes x 2 = the reference's global batch of 4
    run_world([
        _train_args(root, ddp, ["--steps", str(STEPS), "--log-every", "1", "--no-tensorboard"], half),
        _train_args(root, fsdp, ["--steps", str(STEPS), "--max-steps", "5", "--no-tensorboard"],
                    [*half, "train.strategy=fsdp"]),
        ["train", "--stage", "pretrain", "--data", str(setup["store"]), "--out", str(fsdp), "--resume",
         "--steps", str(STEPS), "--threads", "1", "--no-tensorboard"],
        ["train", "--stage", "finetune", "--data", str(setup["store"]), "--init", str(ddp), "--out", str(fine),
         "--steps", "2", "--plan-on-rollout", "1", "--eval-data", str(setup["store"]), "--eval-every", "1",
         "--threads", "1"],
    ])
    assert _max_diff(one, ddp) <= TOLERANCE
    assert _max_diff(one, fsdp) <= TOLERANCE  # FSDP, stopped at step 5 and resumed on 2 processes
    assert _losses(ddp) == pytest.approx(_losses(one), rel=1e-5)  # the rank-averaged loss is the global loss
    metrics = json.loads((ddp / "metrics.json").read_text())["train_pretrain"]
    assert metrics["processes"] == 2 and metrics["steps"] == STEPS
    assert "2 processes" in (ddp / "COMMANDS.md").read_text()
    # fine-tuning on 2 processes: rollout planning, held-out losses every step, TensorBoard from rank 0 only
    evals = [json.loads(line) for line in (fine / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in evals if r.get("eval")] == [1, 2]
    assert all(r["traj_loss"] > 0 for r in evals if r.get("eval"))
    assert len(list((fine / "tb").glob("events.out.tfevents.*"))) == 1


def test_resume_continues_the_uninterrupted_run(setup: dict[str, Path]) -> None:
    root, one = setup["root"], setup["one"]
    split = root / "split"
    flags = ["--steps", str(STEPS), "--log-every", "1"]
    assert main(_train_args(root, split, [*flags, "--max-steps", "5"], ["train.batch_size=4"])) == 0
    assert json.loads((split / "metrics.json").read_text())["train_pretrain"]["steps"] == 5
    assert main(["train", "--stage", "pretrain", "--data", str(setup["store"]), "--out", str(split), "--resume",
                 *flags, "--threads", "1"]) == 0
    assert _losses(split) == _losses(one)  # the same loss curve, step for step
    assert _max_diff(split, one) == 0.0
    # TensorBoard: one scalar per step over both parts, forecast grids at the evaluation steps
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(split / "tb"), size_guidance={"images": 0, "scalars": 0}).Reload()
    steps = [e.step for e in acc.Scalars("train/loss")]
    assert steps == list(range(1, STEPS + 1))
    assert [e.value for e in acc.Scalars("train/loss")] == pytest.approx(_losses(one), rel=1e-5)
    grids = acc.Images("forecast/true_over_predicted")
    assert [g.step for g in grids] == [5, STEPS] and grids[-1].width > grids[-1].height


def test_bf16_autocast_runs_a_step_on_the_cpu() -> None:
    from pwm_model.train.wm_trainer import Trainer
    from pwm_model.world_model.model import PolicyWorldModel

    cfg = _cfg("train.precision=bf16")
    losses, dtypes = {}, []
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        torch.manual_seed(0)
        model = PolicyWorldModel(cfg)
        before = model.frame_head.weight.detach().clone()
        trainer = Trainer(cfg, model, _data(cfg), "finetune", 2, log=lambda s: None)
        # bf16 autocast on a GPU or a CPU with bf16 instructions; here it is switched on (or off) by hand
        assert trainer.autocast_dtype == (torch.bfloat16 if cpu_has_bf16() else None)
        trainer.autocast_dtype = dtype
        hook = model.frame_head.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
        losses[name] = trainer.train_step()["loss"]
        hook.remove()
        assert model.frame_head.weight.dtype == torch.float32 and not torch.equal(model.frame_head.weight, before)
    assert dtypes == [torch.float32, torch.float32, torch.bfloat16, torch.bfloat16]  # 2 micro-steps each
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.02)


def test_environment_and_one_process_helpers(monkeypatch) -> None:
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    env = init_from_env("cpu")
    assert env == DistEnv() and env.is_main and not env.distributed
    model = torch.nn.Linear(2, 2)
    assert wrap_model(model, env, "fsdp") is model  # one process: nothing to wrap
    assert all_reduce_mean({"loss": 2.5}) == {"loss": 2.5}
    with pytest.raises(ConfigError, match="strategy"):
        wrap_model(model, env, "zero3")
    with pytest.raises(ModelError, match="train.strategy=fsdp"):  # FSDP's optimizer state, one process
        load_optimizer_state(model, torch.optim.AdamW(model.parameters()), {"fsdp_full": {}})
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(ConfigError, match="torchrun"):
        init_from_env("cpu")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ConfigError, match="MASTER_ADDR"):
        init_from_env("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            select_device("cuda")


def test_cli_rejects_bad_step_flags(setup: dict[str, Path], tmp_path: Path, capsys) -> None:
    assert main(_train_args(setup["root"], tmp_path / "x", ["--max-steps", "0"], [])) == 2
    assert "--max-steps must be at least 1" in capsys.readouterr().err
    assert main(_train_args(setup["root"], tmp_path / "x", [], ["train.strategy=zero3"])) == 2
    assert "train.strategy" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
