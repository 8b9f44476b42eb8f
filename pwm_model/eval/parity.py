"""Two runners on the same camera frames: how closely does a backend reproduce a reference?

    report = compare_runners(candidate, reference, camera_frames(source, cfg, 30))
    report.token_agreement, report.waypoint_max_abs_m

Each runner keeps its own history (its own tokens feed its own rollouts), so the figures measure what the vehicle
sees end to end, compounding included.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from pwm_model.runtime.types import EgoInput

# Default acceptance per precision: (share of equal forecast tokens, largest waypoint difference in m / rad).
# fp32 is the export's parity requirement; reduced precisions flip near-tied tokens, which the history compounds.
TOLERANCES = {"fp32": (0.995, 1e-3), "fp16": (0.95, 0.05), "int8": (0.85, 0.25)}


@dataclass
class ParityReport:
    frames: int = 0
    tokens: int = 0
    equal_tokens: int = 0
    waypoint_max_abs_m: float = 0.0
    waypoint_mean_abs_m: float = 0.0
    candidate_ms: list[float] = field(default_factory=list)
    reference_ms: list[float] = field(default_factory=list)

    @property
    def token_agreement(self) -> float:
        return self.equal_tokens / self.tokens if self.tokens else 1.0

    def passes(self, min_agreement: float, max_waypoint_m: float) -> bool:
        return self.token_agreement >= min_agreement and self.waypoint_max_abs_m <= max_waypoint_m

    def summary(self) -> dict[str, float]:
        return {"frames": self.frames, "forecast_token_agreement": round(self.token_agreement, 6),
                "waypoint_max_abs_m": self.waypoint_max_abs_m, "waypoint_mean_abs_m": self.waypoint_mean_abs_m,
                "candidate_p50_ms": float(np.median(self.candidate_ms)) if self.candidate_ms else float("nan"),
                "reference_p50_ms": float(np.median(self.reference_ms)) if self.reference_ms else float("nan")}


def compare_runners(candidate: object, reference: object,
                    frames: Iterable[tuple[np.ndarray, int, EgoInput]]) -> ParityReport:
    """Step both runners (``PolicyRunner``) through ``frames`` and compare their plans."""
    rep = ParityReport()
    errs = []
    for rgb, t_ns, ego in frames:
        a = candidate.step(rgb, t_ns, ego)  # type: ignore[attr-defined]
        b = reference.step(rgb, t_ns, ego)  # type: ignore[attr-defined]
        rep.frames += 1
        rep.tokens += int(b.forecast_tokens.size)
        rep.equal_tokens += int((a.forecast_tokens == b.forecast_tokens).sum())
        err = np.abs(a.waypoints_xyyaw.astype(np.float64) - b.waypoints_xyyaw)
        errs.append(err.mean())
        rep.waypoint_max_abs_m = max(rep.waypoint_max_abs_m, float(err.max()))
        rep.candidate_ms.append(a.timings_ms.get("total", float("nan")))
        rep.reference_ms.append(b.timings_ms.get("total", float("nan")))
    rep.waypoint_mean_abs_m = float(np.mean(errs)) if errs else 0.0
    return rep
