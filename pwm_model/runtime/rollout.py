"""The rollout loop of the stepwise graphs (prefill / step / plan with the KV cache as engine input and output).

The loop takes the engines as arguments and keeps its progress in a frozen state, imports no inference library and
returns every forecast frame (docs/ARCHITECTURE.md: one prefill pass, one cached pass per fed-back frame, the last
forecast frame is not fed back, then the plan pass). The unrolled graph runs the same loop inside one graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pwm_model.runtime.types import Engine


@dataclass(frozen=True)
class RolloutState:
    """Progress of one rollout: the KV cache and the forecast frames so far (each (1, Ld) int64)."""

    kv: np.ndarray  # (layers, 2, 1, heads, P, head_dim)
    frames: tuple[np.ndarray, ...]


def rollout_stepwise(prefill: Engine, step: Engine | None, plan: Engine, ctx_tokens: np.ndarray,
                     dyn_history: np.ndarray, ego: np.ndarray, forecast_frames: int
                     ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """ctx_tokens (1, Lc), dyn_history (1, H, Ld), ego (1, 6 or 5) -> forecast tokens (F, Ld), the forecast's bit
    log-probabilities (F, Ld, B, 2) or None (graphs exported without them), waypoints (K, 3)."""
    out = prefill.run({"ctx_tokens": ctx_tokens, "dyn_history": dyn_history, "ego": ego})
    state = RolloutState(out["kv"], (out["next_tokens"],) if forecast_frames > 0 else ())
    bit_logp = [out["next_bit_logp"]] if forecast_frames > 0 and "next_bit_logp" in out else []
    for k in range(forecast_frames - 1):
        assert step is not None, "a rollout of more than one frame needs the wm_step graph"
        out = step.run({"frame_tokens": state.frames[-1], "frame_offset": np.array([k], np.int64), "kv": state.kv})
        state = RolloutState(out["kv_out"], state.frames + (out["next_tokens"],))
        if "next_bit_logp" in out:
            bit_logp.append(out["next_bit_logp"])
    waypoints = plan.run({"kv": state.kv, "ego": ego})["waypoints"]
    ld = dyn_history.shape[-1]
    forecast = np.concatenate(state.frames, axis=0) if state.frames else np.zeros((0, ld), np.int64)
    logp = np.concatenate(bit_logp, axis=0) if bit_logp and len(bit_logp) == len(state.frames) else None
    return forecast.astype(np.int64), logp, waypoints[0]
