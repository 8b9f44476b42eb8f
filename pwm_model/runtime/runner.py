"""``PolicyRunner``: camera frame -> Plan, the one inference path of the ROS node, the bag evaluator and the demo.

    runner = PolicyRunner.from_model_dir("models/pwm-tiny", RuntimeConfig(backend="onnxruntime"))
    runner.warm_up()
    plan = runner.step(frame_rgb, t_ns, EgoInput(speed_mps=8.0, accel_mps2=0.0, command=1))
    tiles = runner.preview(plan)        # (Hd, F * Wd, 3) uint8: the forecast frames, decoded only when asked
    runner.reset(); runner.close()

One cycle per camera frame (docs/ARCHITECTURE.md): the aspect rule of ``pwm_model.data.contract`` (a centre crop to the
model's aspect ratio where the camera's differs, counted in ``stats["cropped_frames"]``; ``fit_note`` says it) and the
resize (in the graph when exported with ``--camera-size``, else
one cv2.resize) -> ``ctx_encoder`` (ctx tokens and guide maps of this frame) -> ``dyn_encoder`` against the guide
maps of the frame one model frame earlier -> the frame's tokens enter the ring buffer (history.py) -> the history
frames are chosen by stamp -> the rollout graph(s) -> Plan with waypoints, forecast tokens, forecast surprise and
per-stage timings. Every camera frame is encoded exactly once. A runner is not thread-safe: call it from one thread.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import numpy as np

from pwm_model.config import PwmConfig, RuntimeConfig
from pwm_model.data.contract import EGO_DIM, FRAME_PAIR_TOLERANCE, fit_note, fit_rgb
from pwm_model.errors import ConfigError, DataError, ModelError
from pwm_model.geometry import PinholeCamera
from pwm_model.runtime.backends import open_engines
from pwm_model.runtime.history import FrameEntry, FrameHistory
from pwm_model.runtime.manifest import Manifest, load_manifest
from pwm_model.runtime.novelty import NoveltyPrior, combine, reconstruction_error
from pwm_model.runtime.rollout import rollout_stepwise
from pwm_model.runtime.surprise import SurpriseMonitor
from pwm_model.runtime.types import EgoInput, Engine, Plan

log = logging.getLogger("pwm.runtime")

WARM_UP_CYCLES = 4  # enough for TensorRT engines to pass their CUDA-graph capture (trt_engine.py)
WARM_UP_GREY = 128  # the blank warm-up frame's grey level


class PolicyRunner:
    """Runs a model directory's graphs on camera frames (see the module docstring)."""

    def __init__(self, manifest: Manifest, runtime: RuntimeConfig, engines: dict[str, Engine]) -> None:
        self.manifest = manifest
        self.runtime = runtime
        self.engines = engines
        cfg = manifest.config
        self._dt_ns = int(round(cfg.model_dt_s * 1e9))
        self._wp_dt_ns = int(round(cfg.data.waypoint_dt_s * 1e9))
        self._f, self._k = cfg.world_model.forecast_frames, cfg.data.num_waypoints
        self._ld = cfg.tokenizer.dyn_tokens
        self._history = FrameHistory(self._dt_ns, cfg.data.history_frames)
        self._surprise = SurpriseMonitor(self._dt_ns, self._f, int(FRAME_PAIR_TOLERANCE * self._dt_ns),
                                         cfg.world_model.focal_alpha, cfg.world_model.focal_beta)
        try:
            prior = manifest.novelty_prior_path
            self._novelty = None if prior is None else NoveltyPrior.load(prior, cfg.tokenizer.ctx_tokens,
                                                                         cfg.tokenizer.codebook_size)
        except ModelError:
            self.close()  # the engines are open already
            raise
        # the novelty's reconstruction part needs the ctx decoder graph; its scale comes from the calibration
        self._reconstruct = self._novelty is not None and "ctx_decoder" in engines
        self._novelty_scales = manifest.novelty_calibration.get("components")
        self._guide_names = [n.name for n in manifest.graphs["dyn_encoder"].inputs if n.name != "image_rgb"]
        self._ego_width = manifest.ego_width  # 6 (5) for a model exported before the command age (yaw rate)
        self._cpu_resize_warned = False
        self._notes: dict[tuple[int, int], str | None] = {}  # fit_note by camera frame size
        self.stats = {"frames": 0, "ctx_encodes": 0, "dyn_encodes": 0, "rollouts": 0, "previews": 0,
                      "cropped_frames": 0}

    # -- construction ----------------------------------------------------------------------------------
    @classmethod
    def from_model_dir(cls, model_dir: str | os.PathLike[str], runtime_cfg: RuntimeConfig | None = None, *,
                       checkpoint: str | os.PathLike[str] | None = None) -> PolicyRunner:
        """Load and check ``manifest.json`` and its graphs, then open every graph with the configured backend.

        ``runtime_cfg`` defaults to the runtime section of the exported config. ``checkpoint`` (torch backend only)
        overrides the checkpoint directory the manifest records.
        """
        manifest = load_manifest(model_dir)
        manifest.verify_files()
        rt = runtime_cfg if runtime_cfg is not None else manifest.config.runtime
        try:
            rt.validate("runtime")
        except ConfigError as exc:
            raise ModelError(str(exc)) from None
        engines = open_engines(manifest, rt, checkpoint=Path(checkpoint) if checkpoint else None)
        return cls(manifest, rt, engines)

    @property
    def config(self) -> PwmConfig:
        return self.manifest.config

    @property
    def camera(self) -> PinholeCamera:
        return PinholeCamera.from_config(self.manifest.config.camera)

    @property
    def model_hw(self) -> tuple[int, int]:
        """(rows, cols) of the model's ctx input: the aspect ratio camera frames are fitted to."""
        tk = self.manifest.config.tokenizer
        return tk.ctx_height_px, tk.ctx_width_px

    def fit_note(self, frame_hw: tuple[int, int]) -> str | None:
        """How frames of ``frame_hw`` are cropped for the model (``contract.fit_note``), or None: resized only."""
        key = (int(frame_hw[0]), int(frame_hw[1]))
        if key not in self._notes:
            if len(self._notes) >= 16:  # a camera that keeps changing size: keep the cache small
                self._notes.clear()
            self._notes[key] = fit_note(key, self.model_hw)
        return self._notes[key]

    # -- the cycle -------------------------------------------------------------------------------------
    def step(self, frame_rgb: np.ndarray, t_ns: int, ego: EgoInput) -> Plan:
        """Plan from the camera frame stamped ``t_ns`` (uint8 RGB, any size) and the ego state at that stamp."""
        t0 = time.perf_counter()
        t_ns = int(t_ns)
        newest = self._history.newest_t_ns
        if newest is not None and t_ns <= newest:
            raise DataError(f"frame stamp {t_ns} ns is not newer than the previous frame's ({newest} ns): call "
                            "reset() after a time jump")
        ego_vec = ego_vector(ego, self._ego_width)
        image = self.prepare(frame_rgb)
        t1 = time.perf_counter()
        ctx = self.engines["ctx_encoder"].run({"image_rgb": image})
        self.stats["ctx_encodes"] += 1
        t2 = time.perf_counter()
        own_guide = {n: ctx[n] for n in self._guide_names}
        pred = self._history.guide_for(t_ns)
        guide = pred.guide_enc if pred is not None and pred.guide_enc is not None else own_guide
        dyn = self.engines["dyn_encoder"].run({"image_rgb": image, **guide})["dyn_tokens"][0].astype(np.int64)
        self.stats["dyn_encodes"] += 1
        t3 = time.perf_counter()
        previous = self._history.nearest(t_ns - self._dt_ns)
        entry = FrameEntry(t_ns, dyn, ctx["ctx_tokens"][0].astype(np.int64), own_guide, guided=pred is not None)
        self._history.add(entry)
        surprise = self._surprise.score(t_ns, dyn, None if previous is None else previous.dyn_tokens)
        frames, warming = self._history.select(t_ns)
        history = np.stack([e.dyn_tokens for e in frames])[None]  # (1, H, Ld)
        forecast, bit_logp, waypoints = self._rollout(entry.ctx_tokens[None], history, ego_vec[None])
        self.stats["rollouts"] += 1
        self.stats["frames"] += 1
        self._surprise.record(t_ns, forecast, bit_logp)
        t4 = time.perf_counter()
        code_nll = math.nan if self._novelty is None else self._novelty.score(entry.ctx_tokens)
        recon = self._reconstruction(image, entry.ctx_tokens) if self._reconstruct else math.nan
        t5 = time.perf_counter()
        timings = {"preprocess": (t1 - t0) * 1e3, "ctx_encoder": (t2 - t1) * 1e3, "dyn_encoder": (t3 - t2) * 1e3,
                   "rollout": (t4 - t3) * 1e3, "novelty": (t5 - t4) * 1e3, "total": (t5 - t0) * 1e3}
        k = np.arange(1, self._k + 1, dtype=np.int64)
        return Plan(t_ns=t_ns, waypoints_xyyaw=np.asarray(waypoints, np.float32).reshape(self._k, 3),
                    waypoint_t_ns=t_ns + k * self._wp_dt_ns, forecast_tokens=forecast, surprise=surprise,
                    novelty=combine(code_nll, recon, self._novelty_scales), novelty_code_nll=code_nll,
                    novelty_reconstruction=recon,
                    timings_ms=timings, warming_up=warming, ctx_tokens=entry.ctx_tokens)

    def _reconstruction(self, image: np.ndarray, ctx_tokens: np.ndarray) -> float:
        """The ctx decoder's reconstruction error of the encoder's input (runtime/novelty.py)."""
        decoded = self.engines["ctx_decoder"].run({"ctx_tokens": ctx_tokens[None]})["image_rgb"]
        rows, cols = decoded.shape[:2]
        return reconstruction_error(decoded, image if image.shape[:2] == (rows, cols) else fit_rgb(image, rows, cols))

    def prepare(self, frame_rgb: np.ndarray) -> np.ndarray:
        """The uint8 image the encoder graphs take: as is when its size matches, else ``contract.fit_rgb`` (the
        aspect rule's crop, then one cv2.resize); a graph exported with ``--camera-size`` crops inside."""
        frame = _check_frame(frame_rgb)
        if self.fit_note(frame.shape[:2]) is not None:
            self.stats["cropped_frames"] += 1
        rows, cols = self.manifest.image_hw
        if frame.shape[:2] == (rows, cols):
            return np.ascontiguousarray(frame)
        if self.manifest.resize_in_graph and not self._cpu_resize_warned:
            self._cpu_resize_warned = True
            log.warning("camera frames are %dx%d but the model was exported for --camera-size %dx%d: resizing on "
                        "the CPU (export again with the camera's size to resize on the GPU)",
                        frame.shape[1], frame.shape[0], cols, rows)
        return np.ascontiguousarray(fit_rgb(frame, rows, cols))

    def _rollout(self, ctx_tokens: np.ndarray, history: np.ndarray, ego: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """-> forecast (F, Ld) int64, its bit log-probabilities (F, Ld, B, 2) or None, waypoints (K, 3)."""
        if self.manifest.rollout_mode == "unrolled":
            out = self.engines["rollout"].run({"ctx_tokens": ctx_tokens, "dyn_history": history, "ego": ego})
            forecast = out["forecast_tokens"][0] if self._f > 0 else np.zeros((0, self._ld), np.int64)
            logp = out["forecast_bit_logp"][0] if "forecast_bit_logp" in out else None
            return forecast.astype(np.int64), logp, out["waypoints"][0]
        e = self.engines
        return rollout_stepwise(e["wm_prefill"], e.get("wm_step"), e["wm_plan"], ctx_tokens, history, ego, self._f)

    # -- previews --------------------------------------------------------------------------------------
    def forecast_frames(self, plan: Plan) -> np.ndarray:
        """The plan's forecast frames decoded one by one: (F, Hd, Wd, 3) uint8 RGB (frame t+1 first).

        Every frame is decoded against the ctx decoder maps of frame t, from its ctx tokens (docs/ARCHITECTURE.md,
        guidance rule).
        """
        tk = self.manifest.config.tokenizer
        if not self.manifest.has_preview:
            raise ModelError(f"{self.manifest.model_dir} was exported without the preview graphs (ctx_guide_decoder, "
                             "dyn_decoder): export it again without --no-preview")
        if plan.ctx_tokens is None:
            raise DataError("this plan carries no ctx tokens, so its forecast cannot be decoded")
        frames = []
        guide = self.engines["ctx_guide_decoder"].run({"ctx_tokens": np.asarray(plan.ctx_tokens, np.int64)[None]})
        for k in range(len(plan.forecast_tokens)):
            out = self.engines["dyn_decoder"].run({"dyn_tokens": np.asarray(plan.forecast_tokens[k], np.int64)[None],
                                                   **guide})
            frames.append(np.asarray(out["image_rgb"]).reshape(tk.dyn_height_px, tk.dyn_width_px, 3))
        self.stats["previews"] += 1
        return np.stack(frames) if frames else np.zeros((0, tk.dyn_height_px, tk.dyn_width_px, 3), np.uint8)

    def preview(self, plan: Plan) -> np.ndarray:
        """The plan's forecast frames decoded and tiled left to right: (Hd, F * Wd, 3) uint8 RGB."""
        frames = self.forecast_frames(plan)
        return np.concatenate(list(frames), axis=1) if len(frames) else np.zeros(
            (frames.shape[1], 0, 3), np.uint8)

    # -- life cycle ------------------------------------------------------------------------------------
    def warm_up(self, cycles: int = WARM_UP_CYCLES) -> None:
        """A few cycles (and one preview) on a blank frame of the size the graphs take (the export's
        ``--camera-size``, else the ctx size: no CPU resize, no warning about it); then the history is cleared."""
        cam = self.manifest.config.camera
        frame = np.full((*self.manifest.image_hw, 3), WARM_UP_GREY, np.uint8)
        period_ns = int(round(1e9 / cam.frame_rate_hz))
        plan = None
        for i in range(cycles):
            plan = self.step(frame, (i + 1) * period_ns, EgoInput())
        if plan is not None and self.manifest.has_preview and len(plan.forecast_tokens):
            self.preview(plan)
        self.reset()
        self.stats = {k: 0 for k in self.stats}

    def reset(self) -> None:
        """Forget the history (time jumped backwards, the bag looped)."""
        self._history.clear()
        self._surprise.clear()

    def close(self) -> None:
        """Free the engines."""
        for e in self.engines.values():
            close = getattr(e, "close", None)
            if close is not None:
                close()
        self.engines = {}

    def __enter__(self) -> PolicyRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_frame(frame_rgb: np.ndarray) -> np.ndarray:
    if not isinstance(frame_rgb, np.ndarray) or frame_rgb.ndim != 3 or frame_rgb.shape[2] != 3 \
            or frame_rgb.dtype != np.uint8 or min(frame_rgb.shape[:2]) < 1:
        what = f"{frame_rgb.dtype} array of shape {frame_rgb.shape}" if isinstance(frame_rgb, np.ndarray) else \
            type(frame_rgb).__name__
        raise DataError(f"a camera frame must be an (H, W, 3) uint8 RGB array, got a {what}")
    return frame_rgb


def ego_vector(ego: EgoInput, width: int = EGO_DIM) -> np.ndarray:
    """The checked ego vector, its first ``width`` entries: a model exported before the command age takes 6, one
    from before the yaw rate 5. A NaN command age reads as unknown (``MAX_COMMAND_AGE_S``)."""
    if int(ego.command) not in (0, 1, 2):
        raise DataError(f"ego command must be 0 (left), 1 (straight) or 2 (right), got {ego.command!r}")
    if not (math.isfinite(ego.speed_mps) and math.isfinite(ego.accel_mps2) and math.isfinite(ego.yaw_rate_radps)):
        raise DataError(f"ego speed, acceleration and yaw rate must be finite, got {ego.speed_mps!r} m/s, "
                        f"{ego.accel_mps2!r} m/s^2 and {ego.yaw_rate_radps!r} rad/s")
    return ego.as_vector()[:width]
