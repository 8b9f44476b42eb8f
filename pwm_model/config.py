"""One dataclass config tree for every part of pwm, with presets, YAML I/O and ``--set`` overrides.

The tree is passed down (each module reads its own section), saved in every checkpoint and in the model
directory's ``manifest.json``, and rebuilt from there. Every default is written once, here.

    cfg = preset("tiny")
    cfg = apply_overrides(cfg, ["world_model.layers=6", "train.lr=1e-4"])
    save_yaml(cfg, "config.yaml"); cfg2 = load_yaml("config.yaml")
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pwm_model.config_types import dataclass_from_dict, to_plain
from pwm_model.errors import ConfigError

COMMANDS = ("left", "straight", "right")  # std_msgs/UInt8 on /route/command: 0 left, 1 straight, 2 right


@dataclass
class CameraConfig:
    """The front camera: resolution, field of view and mounting in ``base_link`` (REP-103)."""

    width_px: int = 448  # recorded image width
    height_px: int = 256  # recorded image height
    hfov_deg: float = 90.0  # horizontal field of view; square pixels (fy = fx)
    mount_x_m: float = 1.6  # camera origin in base_link (x forward, y left, z up)
    mount_y_m: float = 0.0
    mount_z_m: float = 1.5
    pitch_down_deg: float = 3.0  # positive tilts the optical axis towards the road
    frame_rate_hz: float = 10.0  # camera frames per second

    def validate(self, prefix: str) -> None:
        _check(self.width_px >= 16 and self.height_px >= 16, prefix, "width_px", "must be at least 16 px")
        _check(0.0 < self.hfov_deg < 170.0, prefix, "hfov_deg", "must be between 0 and 170 degrees")
        _check(-45.0 <= self.pitch_down_deg <= 45.0, prefix, "pitch_down_deg", "must be within +-45 degrees")
        _check(self.frame_rate_hz > 0, prefix, "frame_rate_hz", "must be positive")


@dataclass
class TopicsConfig:
    """Canonical rosbag2 / ROS 2 topic names (all configurable)."""

    image: str = "/camera/front/image_raw"  # sensor_msgs/Image
    compressed_image: str = "/camera/front/image_raw/compressed"  # sensor_msgs/CompressedImage
    camera_info: str = "/camera/front/camera_info"  # sensor_msgs/CameraInfo
    odometry: str = "/odom"  # nav_msgs/Odometry
    command: str = "/route/command"  # std_msgs/UInt8: 0 left, 1 straight, 2 right
    objects: str = "/ground_truth/objects"  # visualization_msgs/MarkerArray of CUBE boxes
    scenario: str = "/sim/scenario"  # std_msgs/String: scenario family label (synthetic drives only; optional)

    def validate(self, prefix: str) -> None:
        for f in dataclasses.fields(self):
            name = getattr(self, f.name)
            _check(isinstance(name, str) and name.startswith("/") and " " not in name, prefix, f.name,
                   "must be an absolute topic name such as /camera/front/image_raw")


@dataclass
class DataConfig:
    """How drives become training clips: timing of history, future frames and waypoints."""

    frame_stride: int = 1  # model frames are every stride-th camera frame
    history_frames: int = 4  # dyn frames up to and including the current frame
    future_frames: int = 10  # true future frames stored per clip (>= world_model.forecast_frames)
    num_waypoints: int = 8  # K waypoints (x, y, yaw) in the ego frame at time t
    waypoint_dt_s: float = 0.5  # spacing of the waypoints
    clip_step_frames: int = 2  # camera frames between the starts of consecutive clips of a drive
    shard_clips: int = 256  # clips per shard file in the clip store
    topics: TopicsConfig = field(default_factory=TopicsConfig)

    @property
    def clip_frames(self) -> int:
        """Model frames stored per clip: 1 guide frame + history + future (see data/schema.py ``Clip``)."""
        return 1 + self.history_frames + self.future_frames

    def validate(self, prefix: str) -> None:
        _check(self.frame_stride >= 1, prefix, "frame_stride", "must be at least 1")
        _check(self.history_frames >= 1, prefix, "history_frames", "must be at least 1")
        _check(self.future_frames >= 0, prefix, "future_frames", "must not be negative")
        _check(self.num_waypoints >= 1, prefix, "num_waypoints", "must be at least 1")
        _check(self.waypoint_dt_s > 0, prefix, "waypoint_dt_s", "must be positive")
        _check(self.clip_step_frames >= 1, prefix, "clip_step_frames", "must be at least 1")
        _check(self.shard_clips >= 1, prefix, "shard_clips", "must be at least 1")
        self.topics.validate(f"{prefix}.topics")


@dataclass
class TokenizerConfig:
    """The context-guided LFQ tokenizer (ctx branch: current frame, dyn branch: every other frame)."""

    ctx_height_px: int = 256
    ctx_width_px: int = 448
    dyn_height_px: int = 128
    dyn_width_px: int = 224
    downsample: int = 16  # encoder stride: 8 or 16
    codebook_bits: int = 13  # LFQ bits per token; codebook size 2**bits
    base_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 2, 4, 4)  # one level per entry; log2(downsample)+1 levels
    num_res_blocks: int = 2
    attention_heads: int = 1
    guidance: bool = True  # dyn branch cross-attends to the ctx branch's feature maps
    guided_levels: int = 1  # backbone levels (lowest resolution up) cross-attending besides the middle block (paper: 1)
    dyn_patchify: bool = True  # patchify + MLP before quantization (dyn_patch rows x cols latents -> one token)
    dyn_patch: tuple[int, int] = (2, 2)  # (rows, cols) of the patchify; 2x2 as the paper: 4x fewer dyn tokens
    dyn_mlp_hidden: int = 512
    # losses (VQGAN style)
    l1_weight: float = 1.0
    gan_weight: float = 0.1
    gan_start_step: int = 2000  # the PatchGAN hinge loss starts after this warm-up
    commit_weight: float = 0.1
    entropy_weight: float = 0.1
    decoder_mse_weight: float = 2.0  # MSE weight (beside l1_weight) of the decoder fine-tuning stage
    perceptual_weight: float = 0.0  # > 0 needs perceptual_weights_path (no download at run time)
    perceptual_weights_path: str = ""

    @property
    def ctx_grid(self) -> tuple[int, int]:
        """(rows, cols) of ctx tokens."""
        return self.ctx_height_px // self.downsample, self.ctx_width_px // self.downsample

    @property
    def dyn_grid(self) -> tuple[int, int]:
        """(rows, cols) of dyn tokens (after the optional patchify)."""
        ph, pw = self.dyn_patch if self.dyn_patchify else (1, 1)
        return self.dyn_height_px // self.downsample // ph, self.dyn_width_px // self.downsample // pw

    @property
    def ctx_tokens(self) -> int:
        return self.ctx_grid[0] * self.ctx_grid[1]

    @property
    def dyn_tokens(self) -> int:
        return self.dyn_grid[0] * self.dyn_grid[1]

    @property
    def codebook_size(self) -> int:
        return 2**self.codebook_bits

    def validate(self, prefix: str) -> None:
        _check(self.downsample in (8, 16), prefix, "downsample", "must be 8 or 16")
        levels = int(math.log2(self.downsample)) + 1
        _check(len(self.channel_mult) == levels, prefix, "channel_mult",
               f"must have {levels} entries for downsample {self.downsample}")
        _check(len(self.dyn_patch) == 2 and all(1 <= int(v) <= 4 for v in self.dyn_patch), prefix, "dyn_patch",
               "must be [rows, cols], each between 1 and 4")
        ph, pw = self.dyn_patch if self.dyn_patchify else (1, 1)
        for name, size, div in (("ctx_height_px", self.ctx_height_px, self.downsample),
                                ("ctx_width_px", self.ctx_width_px, self.downsample),
                                ("dyn_height_px", self.dyn_height_px, self.downsample * ph),
                                ("dyn_width_px", self.dyn_width_px, self.downsample * pw)):
            _check(size > 0 and size % div == 0, prefix, name, f"must be a positive multiple of {div}")
        _check(self.dyn_height_px <= self.ctx_height_px, prefix, "dyn_height_px", "must not exceed ctx_height_px")
        _check(1 <= self.codebook_bits <= 18, prefix, "codebook_bits", "must be between 1 and 18")
        _check(self.base_channels >= 8 and self.base_channels % 8 == 0, prefix, "base_channels",
               "must be a positive multiple of 8 (GroupNorm groups)")
        _check(self.num_res_blocks >= 1, prefix, "num_res_blocks", "must be at least 1")
        _check(0 <= self.guided_levels < levels, prefix, "guided_levels", f"must be in [0, {levels - 1}]")
        _check(self.decoder_mse_weight >= 0, prefix, "decoder_mse_weight", "must not be negative")
        _check(self.perceptual_weight == 0 or bool(self.perceptual_weights_path), prefix, "perceptual_weights_path",
               "must name a weights file when perceptual_weight > 0 (nothing downloads at run time)")


@dataclass
class WorldModelConfig:
    """The block-causal transformer that forecasts dyn frames, then plans K waypoints."""

    layers: int = 24
    d_model: int = 2048
    heads: int = 32
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    forecast_frames: int = 10  # F future frames generated before planning; 0 = plan-only ablation
    ego_hidden: int = 256  # hidden width of the ego-state MLP (speed, accel, command one-hot, yaw rate)
    head_hidden: int = 1024  # hidden width of the waypoint head
    # adaptive dynamic focal loss (see world_model/focal_loss.py for the formula)
    focal: bool = True  # False = plain mean cross-entropy (ablation)
    focal_alpha: float = 1.0  # weight of tokens that changed since the previous frame
    focal_beta: float = 0.4  # weight of tokens that did not change
    focal_gamma: float = 0.0  # focusing exponent on (1 - p); 0 = off, as in the official code
    focal_adaptive: bool = False  # normalise by the batch's share of changed tokens
    video_weight: float = 0.3  # fine-tuning loss = video_weight * L_video + traj_weight * L_traj
    traj_weight: float = 1.0
    temperature: float = 0.0  # 0 = greedy next-frame generation; > 0 samples
    # share of fine-tuning steps whose planning pass reads the model's own detached greedy forecast instead of the
    # teacher-forced true future frames (exposure bias: inference plans from forecasts); 0 = always teacher-forced
    plan_on_rollout: float = 0.0
    # teacher-forced planning passes read the true future frames with this share of their codes replaced by random
    # ones (the forecast's own token-error rate makes the true future look like a forecast); 0 = untouched
    plan_future_noise: float = 0.0
    prior: str = "none"  # the head predicts the correction to: none, cv (straight on at the speed) or ctra (physics)
    traj_loss_per_horizon: bool = False  # each waypoint's error divided by its horizon's scale (all count alike)
    plan_reads_forecast: bool = True  # false: the plan reads the history only; the video loss stays (an ablation)
    # an MLP of the ego vector alone beside the head (its correction to the prior added in), fitted to the training
    # clips before fine-tuning (train.ego_branch_fit_steps): the plan starts where the ego-status MLP ends
    ego_branch: bool = False
    ego_branch_hidden: int = 128
    # one output per route command (left, straight, right) in the waypoint head's and the ego branch's last layers,
    # the command picking which (conditional imitation): a plan cannot fade the command out of a shared layer
    command_branches: bool = False
    # the planner reads how long the route command has stood (the ego vector's command_age_s); false feeds it a zero
    # instead, inside the model, so the age cannot matter in training, evaluation or an export (an ablation)
    command_age: bool = True

    def validate(self, prefix: str) -> None:
        _check(self.layers >= 1, prefix, "layers", "must be at least 1")
        _check(self.heads >= 1 and self.d_model % self.heads == 0, prefix, "heads", "must divide d_model")
        _check(self.mlp_ratio > 0, prefix, "mlp_ratio", "must be positive")
        _check(0.0 <= self.dropout < 1.0, prefix, "dropout", "must be in [0, 1)")
        _check(self.forecast_frames >= 0, prefix, "forecast_frames", "must not be negative")
        _check(self.focal_alpha >= 0 and self.focal_beta >= 0, prefix, "focal_alpha", "weights must not be negative")
        _check(self.focal_gamma >= 0, prefix, "focal_gamma", "must not be negative")
        _check(self.temperature >= 0, prefix, "temperature", "must not be negative")
        _check(0.0 <= self.plan_on_rollout <= 1.0, prefix, "plan_on_rollout", "must be in [0, 1]")
        _check(0.0 <= self.plan_future_noise <= 1.0, prefix, "plan_future_noise", "must be in [0, 1]")
        _check(self.prior in ("none", "cv", "ctra"), prefix, "prior", "must be none, cv or ctra")
        _check(self.ego_branch_hidden >= 1, prefix, "ego_branch_hidden", "must be at least 1")


@dataclass
class TrainConfig:
    """Optimisation for every stage (the paper's fine-tuning hyper-parameters are the defaults)."""

    batch_size: int = 7  # per process
    grad_accum: int = 4
    lr: float = 3e-5
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    warmup_steps: int = 1000
    grad_clip: float = 4.0
    seed: int = 10086
    precision: str = "bf16"  # fp32 | bf16 (autocast on a GPU, and on a CPU with bf16 instructions; else fp32)
    trunk_lr_scale: float = 1.0  # fine-tuning: the trunk at lr * this, the heads (ego MLP, plan_ego, waypoints) at lr
    ema_decay: float = 0.0  # > 0: checkpoints hold an EMA of the weights (train_state.pt the raw ones, for resume)
    clip_stride: int = 1  # > 1: an epoch takes one clip of every window of this many consecutive (near-copy) clips
    turn_repeat: int = 1  # > 1: windows holding a clip whose route command is left or right are drawn this many times
    ego_branch_fit_steps: int = 2000  # Adam steps fitting world_model.ego_branch before fine-tuning (0: start at zero)
    # fine-tuning from a checkpoint that has an ego branch: replace it by a fresh one, fitted as above (e.g. when the
    # ego vector has grown an entry the old branch never read)
    ego_branch_refit: bool = False
    # fine-tuning: weight of the penalty on planned ego boxes overlapping the clips' ground-truth boxes (metres of
    # penetration, the ego box grown by collision_margin_m; train/collision_loss.py); 0: off
    collision_weight: float = 0.0
    collision_margin_m: float = 0.25
    # several processes (torchrun): ddp replicates the model on every rank; fsdp shards parameters, gradients and
    # AdamW state across the ranks (the paper preset: 1.26B parameters would need ~20 GB per replica in fp32)
    strategy: str = "ddp"
    tokenizer_lr: float = 1e-4
    tokenizer_batch_size: int = 8  # images per tokenizer step (per process); frames are large, steps many
    tokenizer_ctx_steps: int = 800_000
    tokenizer_dyn_steps: int = 800_000
    # last tokenizer stage: both decoders fine-tuned (L1 + MSE, no GAN) with encoders and quantizers frozen, so the
    # tokens stay exactly as they were; 0 skips it
    tokenizer_decoder_steps: int = 0
    tokenizer_decoder_lr: float = 1e-4
    pretrain_steps: int = 300_000
    finetune_steps: int = 160_000
    eval_every: int = 1000
    save_every: int = 5000
    num_workers: int = 2

    def validate(self, prefix: str) -> None:
        _check(self.batch_size >= 1, prefix, "batch_size", "must be at least 1")
        _check(self.tokenizer_batch_size >= 1, prefix, "tokenizer_batch_size", "must be at least 1")
        _check(self.grad_accum >= 1 and self.clip_stride >= 1, prefix, "grad_accum", "and clip_stride must be >= 1")
        _check(1 <= self.turn_repeat <= 20, prefix, "turn_repeat", "must be between 1 and 20")
        _check(self.lr > 0 and self.tokenizer_lr > 0, prefix, "lr", "must be positive")
        _check(self.weight_decay >= 0, prefix, "weight_decay", "must not be negative")
        _check(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, prefix, "beta1", "betas must be in [0, 1)")
        _check(self.grad_clip > 0, prefix, "grad_clip", "must be positive")
        _check(0.0 < self.trunk_lr_scale <= 10.0, prefix, "trunk_lr_scale", "must be in (0, 10]")
        _check(0.0 <= self.ema_decay < 1.0, prefix, "ema_decay", "must be in [0, 1)")
        _check(self.ego_branch_fit_steps >= 0, prefix, "ego_branch_fit_steps", "must not be negative")
        _check(self.collision_weight >= 0, prefix, "collision_weight", "must not be negative")
        _check(0 <= self.collision_margin_m <= 2.0, prefix, "collision_margin_m", "must be between 0 and 2 m")
        _check(self.precision in ("fp32", "bf16"), prefix, "precision", "must be fp32 or bf16")
        _check(self.strategy in ("ddp", "fsdp"), prefix, "strategy", "must be ddp or fsdp")
        _check(self.tokenizer_decoder_lr > 0, prefix, "tokenizer_decoder_lr", "must be positive")
        for name in ("tokenizer_ctx_steps", "tokenizer_dyn_steps", "tokenizer_decoder_steps", "pretrain_steps",
                     "finetune_steps", "warmup_steps", "num_workers"):
            _check(getattr(self, name) >= 0, prefix, name, "must not be negative")
        _check(self.eval_every >= 1 and self.save_every >= 1, prefix, "eval_every", "must be at least 1")


# The valid values of RuntimeConfig, written once: validation here and the ROS node's parameter descriptors use them.
RUNTIME_CHOICES: dict[str, tuple[str, ...]] = {
    "backend": ("onnxruntime", "tensorrt", "torch"), "device": ("cpu", "cuda"), "precision": ("fp32", "fp16", "int8")}
RUNTIME_RANGES: dict[str, tuple[float, float]] = {  # inclusive
    "planning_rate_hz": (0.1, 100.0), "max_frame_age_ms": (1.0, 60_000.0), "preview_rate_hz": (0.1, 30.0),
    "surprise_warn": (-1.0, 1.0e6), "novelty_warn": (-1.0, 1.0e6), "intra_op_threads": (0, 256)}


@dataclass
class RuntimeConfig:
    """On-board inference: backend, rates and limits (the ROS node declares its parameters from these)."""

    backend: str = "onnxruntime"  # onnxruntime | tensorrt | torch
    device: str = "cpu"  # cpu | cuda (onnxruntime provider / torch device)
    precision: str = "fp16"  # TensorRT engine precision: fp32 | fp16 | int8
    planning_rate_hz: float = 10.0  # at most this many plans per second
    max_frame_age_ms: float = 200.0  # frames older than this when inference would start are skipped
    preview_rate_hz: float = 2.0  # forecast / overlay previews are rate-limited to this
    # forecast surprise above this raises a WARN in diagnostics; negative: the model's calibrated threshold
    # (manifest.json surprise_calibration.warn, the 99th percentile over held-out drives), none without one
    surprise_warn: float = -1.0
    # scene novelty (how unlike the training drives a frame looks) above this raises a WARN; negative: the model's
    # calibrated threshold (manifest.json novelty_calibration.warn), none without one; 1e6 turns it off
    novelty_warn: float = -1.0
    intra_op_threads: int = 0  # onnxruntime intra-op threads; 0 = library default

    def validate(self, prefix: str) -> None:
        for name, choices in RUNTIME_CHOICES.items():
            _check(getattr(self, name) in choices, prefix, name, f"must be {', '.join(choices[:-1])} or {choices[-1]}")
        for name, (lo, hi) in RUNTIME_RANGES.items():
            _check(lo <= getattr(self, name) <= hi, prefix, name, f"must be within [{lo:g}, {hi:g}]")


@dataclass
class PwmConfig:
    """The whole tree. ``preset`` names the preset it started from."""

    preset: str = "paper"
    camera: CameraConfig = field(default_factory=CameraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    world_model: WorldModelConfig = field(default_factory=WorldModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def validate(self) -> PwmConfig:
        """Check every value; raise ``ConfigError`` naming the bad key and why. Returns self."""
        self.camera.validate("camera")
        self.data.validate("data")
        self.tokenizer.validate("tokenizer")
        self.world_model.validate("world_model")
        self.train.validate("train")
        self.runtime.validate("runtime")
        _check(self.world_model.forecast_frames <= self.data.future_frames, "world_model", "forecast_frames",
               f"must not exceed data.future_frames ({self.data.future_frames})")
        return self

    # Timing derived from the tree (written once, here).
    @property
    def model_dt_s(self) -> float:
        """Seconds between consecutive model frames."""
        return self.data.frame_stride / self.camera.frame_rate_hz

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)


# ----------------------------------------------------------------------------------------------------
# Presets (the trees themselves: pwm_model/presets.py)

PRESET_NAMES = ("tiny", "small", "paper")


def preset(name: str) -> PwmConfig:
    """A fresh, validated config for the named preset (tiny, small or paper)."""
    from pwm_model.presets import PRESETS

    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[name]().validate()


# ----------------------------------------------------------------------------------------------------
# Dict / YAML conversion with type checks (the typed conversion itself: config_types.py).

def from_dict(data: dict[str, Any]) -> PwmConfig:
    """Build and validate a config from a plain dict; missing keys take the named preset's values."""
    if not isinstance(data, dict):
        raise ConfigError(f"config must be a mapping, got {type(data).__name__}")
    base = preset(data.get("preset", "paper")) if isinstance(data.get("preset", "paper"), str) else None
    if base is None:
        raise ConfigError("preset must be a string")
    merged = _deep_merge(base.to_dict(), _migrate(data))
    return dataclass_from_dict(PwmConfig, merged, "").validate()


def _migrate(data: dict[str, Any]) -> dict[str, Any]:
    """Configs written by earlier versions: ``world_model.cv_prior`` (bool) became ``world_model.prior``."""
    wm = data.get("world_model")
    if not isinstance(wm, dict) or "cv_prior" not in wm:
        return data
    return {**data, "world_model": {"prior": "cv" if wm["cv_prior"] else "none",
                                    **{k: v for k, v in wm.items() if k != "cv_prior"}}}


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def load_yaml(path: str | os.PathLike[str]) -> PwmConfig:
    """Read a config YAML file (partial files are merged over their preset)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    return from_dict(data)


def dump_yaml(cfg: PwmConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def save_yaml(cfg: PwmConfig, path: str | os.PathLike[str]) -> None:
    from pwm_model.io_utils import write_text_atomic

    write_text_atomic(path, dump_yaml(cfg))


def apply_overrides(cfg: PwmConfig, overrides: list[str] | tuple[str, ...]) -> PwmConfig:
    """Apply ``a.b=value`` overrides (values parsed as YAML) and re-validate."""
    data = cfg.to_dict()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node: Any = data
        parts = key.split(".")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if not isinstance(node, dict) or part not in node:
                where = ".".join(parts[: i + 1])
                raise ConfigError(f"unknown config key {where!r} in override {item!r}")
            if last:
                if isinstance(node[part], dict):
                    raise ConfigError(f"override {item!r} names a section, not a value")
                node[part] = value
            else:
                node = node[part]
    return dataclass_from_dict(PwmConfig, data, "").validate()


def _check(ok: bool, prefix: str, key: str, why: str) -> None:
    if not ok:
        raise ConfigError(f"config value {prefix}.{key} {why}")


def to_dict(cfg: PwmConfig) -> dict[str, Any]:
    return cfg.to_dict()
