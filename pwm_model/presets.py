"""The presets' config trees (DESIGN.md table; ``paper`` matches reference/pwm_method.md); ``config.preset`` builds
and validates them."""

from __future__ import annotations

from collections.abc import Callable

from pwm_model.config import (
    CameraConfig,
    DataConfig,
    PwmConfig,
    RuntimeConfig,
    TokenizerConfig,
    TrainConfig,
    WorldModelConfig,
)


def _tiny() -> PwmConfig:
    return PwmConfig(
        preset="tiny",
        camera=CameraConfig(width_px=256, height_px=128),
        data=DataConfig(frame_stride=2, history_frames=4, future_frames=5, shard_clips=128),
        tokenizer=TokenizerConfig(ctx_height_px=64, ctx_width_px=128, dyn_height_px=32, dyn_width_px=64,
                                  downsample=8, codebook_bits=12, base_channels=16, channel_mult=(1, 2, 4, 4),
                                  num_res_blocks=1, dyn_patchify=True, dyn_patch=(1, 2), dyn_mlp_hidden=128,
                                  gan_start_step=400),
        world_model=WorldModelConfig(layers=4, d_model=256, heads=4, forecast_frames=5, ego_hidden=128,
                                     head_hidden=256, plan_on_rollout=1.0, prior="ctra", ego_branch=True,
                                     # the per-horizon loss is about a tenth of the metre one: weight 10 keeps the
                                     # paper's balance against the video loss
                                     traj_loss_per_horizon=True, traj_weight=10.0),
        # fine-tuning: 16 x 4 = 64 clips a step, one clip of every 1 s of drive an epoch, the pretrained trunk at a
        # fifth of the heads' rate, EMA weights; bf16 autocast where the CPU has bf16 instructions (fp32 otherwise)
        train=TrainConfig(batch_size=16, grad_accum=1, lr=5e-4, warmup_steps=100, precision="bf16",
                          trunk_lr_scale=0.2, ema_decay=0.99, clip_stride=5,
                          tokenizer_lr=2e-3, tokenizer_ctx_steps=3600, tokenizer_dyn_steps=1200,  # ~40 min, 2 cores
                          tokenizer_decoder_steps=1500, tokenizer_decoder_lr=6e-4,  # ~15 min more
                          pretrain_steps=800, finetune_steps=500, eval_every=500, save_every=500, seed=0),
        runtime=RuntimeConfig(precision="fp32"),
    )


def _small() -> PwmConfig:
    return PwmConfig(
        preset="small",
        camera=CameraConfig(width_px=512, height_px=256),
        data=DataConfig(frame_stride=1, history_frames=6, future_frames=10),
        tokenizer=TokenizerConfig(ctx_height_px=128, ctx_width_px=256, dyn_height_px=64, dyn_width_px=128,
                                  downsample=16, codebook_bits=12, base_channels=64, channel_mult=(1, 2, 2, 4, 4),
                                  num_res_blocks=2, dyn_patchify=False, dyn_mlp_hidden=256),
        world_model=WorldModelConfig(layers=12, d_model=512, heads=8, forecast_frames=10, ego_hidden=256,
                                     head_hidden=512),
        train=TrainConfig(batch_size=16, grad_accum=1, lr=3e-4, warmup_steps=1000, tokenizer_ctx_steps=100_000,
                          tokenizer_dyn_steps=100_000, pretrain_steps=100_000, finetune_steps=50_000, seed=0),
    )


def _paper() -> PwmConfig:
    return PwmConfig(preset="paper", data=DataConfig(history_frames=20), train=TrainConfig(strategy="fsdp"))


PRESETS: dict[str, Callable[[], PwmConfig]] = {"tiny": _tiny, "small": _small, "paper": _paper}
