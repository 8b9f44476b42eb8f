"""A suite of closed-loop drives: every planner drives the same held-out scenarios, scored against the expert.

Intervals are a bootstrap over scenarios (each drive is one cluster: its windows are not independent); differences
between planners are paired by scenario. ``save_suite`` writes ``metrics.json``, ``drives.csv`` and a PNG of the
frame at each of the worst infractions, ``report.html`` (sim/report.py) and a video of one drive.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pwm_model.config import PwmConfig
from pwm_model.eval.intervals import cluster_bootstrap
from pwm_model.geometry import PinholeCamera
from pwm_model.sim.anticipation import event_leads
from pwm_model.sim.loop import DriveLog, run_drive
from pwm_model.sim.planners import Planner
from pwm_model.sim.score import DriveScore, score_drive

FRAMES_SAVED_MAX = 10_000  # every infraction gets its frame in frames/ (the report shows the worst)
SEVERITY = ("collision", "static_collision", "drivable_area", "driving_direction", "ttc", "lane_keeping", "comfort")


@dataclass
class SuiteResult:
    seeds: list[int]
    seconds: float
    reactive: bool
    scores: dict[str, list[DriveScore]] = field(default_factory=dict)  # planner -> one per seed
    frames: dict[tuple[str, int, int], np.ndarray] = field(default_factory=dict)  # (planner, seed, frame) -> rgb
    end_reasons: dict[tuple[str, int], str] = field(default_factory=dict)
    wall_s: dict[str, float] = field(default_factory=dict)
    simulated_s: dict[str, float] = field(default_factory=dict)
    # (planner, seed) -> (ego rear-axle xy (N, 2), {track id: xy (M, 2)}) for the bird's-eye views
    paths: dict[tuple[str, int], tuple[np.ndarray, dict[int, np.ndarray]]] = field(default_factory=dict)
    video_log: DriveLog | None = None  # the drive kept whole for the video (the first planner's first scenario)
    leads: dict[tuple[str, int], list] = field(default_factory=dict)  # (planner, seed) -> anticipation.event_leads

    def anticipation(self) -> dict:
        """sim/anticipation.py's table over every planner of the suite (the expert included)."""
        from pwm_model.sim.anticipation import suite_anticipation

        return suite_anticipation(self.leads, ["expert", *[n for n in self.scores if n != "expert"]])

    def summary(self, planner: str) -> dict[str, float]:
        rows = self.scores[planner]
        seeds = np.array([r.seed for r in rows])
        out: dict[str, float] = {"planner": planner, "scenarios": len(rows)}  # type: ignore[dict-item]
        for key in ("epdms", "driving_score", "route_completion"):
            mean, lo, hi = cluster_bootstrap(np.array([getattr(r, key) for r in rows]), seeds)
            out.update({key: round(mean, 4), f"{key}_ci95_lo": round(lo, 4), f"{key}_ci95_hi": round(hi, 4)})
        out["collisions_at_fault"] = int(sum(r.collisions_at_fault for r in rows))
        subs = [r.summary() for r in rows]
        for key in ("nc", "dac", "ddc", "ttc", "ep", "lk", "hc", "ec"):
            out[key] = round(float(np.mean([s[key] for s in subs])), 4)
        out["ended_early"] = sum(1 for (p, _), why in self.end_reasons.items() if p == planner and why)
        if self.wall_s.get(planner):
            out["sim_rt_factor"] = round(self.simulated_s[planner] / self.wall_s[planner], 3)
        return out

    def paired(self, a: str, b: str, key: str = "epdms") -> tuple[float, float, float]:
        """Mean of a - b over the same scenarios with its scenario-bootstrap interval."""
        va = np.array([getattr(r, key) for r in self.scores[a]])
        vb = np.array([getattr(r, key) for r in self.scores[b]])
        return cluster_bootstrap(va - vb, np.array(self.seeds))


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_suite(planners: dict[str, Callable[[], Planner] | None], seeds: Sequence[int], cfg: PwmConfig, *,
              seconds: float = 20.0, reactive: bool = True, progress: bool = True,
              agent_idm: dict[str, float] | None = None) -> SuiteResult:
    """Drive every seed with the expert and with each planner (a factory; None: the expert) and score them."""
    res = SuiteResult(seeds=list(seeds), seconds=seconds, reactive=reactive)
    made = {name: (factory() if factory is not None else None) for name, factory in planners.items()}
    started = time.monotonic()
    total = len(seeds) * (1 + sum(p is not None for p in made.values()))
    done = 0
    experts: dict[int, DriveLog] = {}
    for seed in seeds:
        t0 = time.monotonic()
        experts[seed] = run_drive(seed, None, cfg, seconds=seconds, reactive=reactive, agent_idm=agent_idm)
        res.leads[("expert", seed)] = event_leads(experts[seed])
        res.wall_s["expert"] = res.wall_s.get("expert", 0.0) + time.monotonic() - t0
        res.simulated_s["expert"] = res.simulated_s.get("expert", 0.0) + len(experts[seed].ticks) * \
            experts[seed].frame_dt_s
        done += 1
        for name, planner in made.items():
            if planner is None:
                log = experts[seed]
            else:
                t0 = time.monotonic()
                log = run_drive(seed, planner, cfg, seconds=seconds, reactive=reactive, agent_idm=agent_idm)
                res.wall_s[name] = res.wall_s.get(name, 0.0) + time.monotonic() - t0
                res.simulated_s[name] = res.simulated_s.get(name, 0.0) + len(log.ticks) * log.frame_dt_s
                done += 1
            score = score_drive(log, None if planner is None else experts[seed])
            res.leads[(name, seed)] = event_leads(log)
            res.paths[(name, seed)] = _paths(log)
            if res.video_log is None and name == next(iter(made)):
                res.video_log = log
            res.scores.setdefault(name, []).append(score)
            res.end_reasons[(name, seed)] = log.end_reason
            for inf in score.infractions:
                if inf.frame in log.frames_rgb:
                    res.frames[(name, seed, inf.frame)] = log.frames_rgb[inf.frame]
            if progress:
                elapsed = time.monotonic() - started
                eta = elapsed / done * (total - done)
                _progress(f"sim: seed {seed} {name}: EPDMS {score.epdms:.3f}, driving score {score.driving_score:.3f}"
                          f"{', ' + log.end_reason if log.end_reason else ''} ({done}/{total} drives, "
                          f"ETA {int(eta) // 60}m{int(eta) % 60:02d}s)")
        for log in (experts[seed],):
            if log is not res.video_log:
                log.frames_rgb.clear()
    for p in made.values():
        if p is not None and hasattr(p, "close"):
            p.close()
    return res


def _paths(log: DriveLog) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    ego = np.array([t.ego_xyyaw[:2] for t in log.ticks])
    agents: dict[int, list[np.ndarray]] = {}
    for t in log.ticks[::5]:
        for tid, box in zip(t.agent_ids, t.agent_boxes):
            agents.setdefault(int(tid), []).append(box[:2])
    return ego, {k: np.array(v) for k, v in agents.items() if len(v) > 1}


def format_suite(res: SuiteResult) -> str:
    mode = "reactive" if res.reactive else "non-reactive"
    lines = [f"Closed loop: {len(res.seeds)} held-out scenarios (seeds {res.seeds[0]}..{res.seeds[-1]}), "
             f"{res.seconds:g} s each, {mode} traffic; 95 % intervals by scenario bootstrap",
             f"  {'planner':<22} {'EPDMS':>19} {'driving score':>19} {'route compl.':>8} {'at-fault':>8} "
             f"{'NC':>5} {'DAC':>5} {'DDC':>5} {'TTC':>5} {'EP':>5} {'LK':>5} {'HC':>5} {'EC':>5}"]
    for name in res.scores:
        s = res.summary(name)
        lines.append(
            f"  {name:<22} {s['epdms']:.3f} ({s['epdms_ci95_lo']:.3f}..{s['epdms_ci95_hi']:.3f}) "
            f"{s['driving_score']:.3f} ({s['driving_score_ci95_lo']:.3f}..{s['driving_score_ci95_hi']:.3f}) "
            f"{s['route_completion']:>12.3f} {s['collisions_at_fault']:>8d} "
            + " ".join(f"{s[k]:>5.2f}" for k in ("nc", "dac", "ddc", "ttc", "ep", "lk", "hc", "ec")))
    names = [n for n in res.scores if n != "expert"]
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            m, lo, hi = res.paired(a, b)
            lines.append(f"  EPDMS {a} - {b}: {m:+.3f} ({lo:+.3f}..{hi:+.3f}), paired by scenario")
    table = res.anticipation()
    if table["events"]:
        lines.append(f"Anticipation: {table['events']} events the expert slowed down for; lead time = the car's first "
                     f"{table['threshold_mps2']:g} m/s^2 deceleration over {table['horizon_s']:g} s minus the event's "
                     "onset (s; earlier is better; 95 % by scenario)")
        for name, r in table["rows"].items():
            lines.append(f"  {name:<22} slowed {r['slowed']:>3}/{r['events']:<3} mean {r['mean_s']:+.2f} "
                         f"({r['mean_ci95_lo']:+.2f}..{r['mean_ci95_hi']:+.2f}), median {r['median_s']:+.2f}")
        for pair, (m, lo, hi) in table["paired"].items():
            lines.append(f"  lead time {pair}: {m:+.2f} ({lo:+.2f}..{hi:+.2f}), paired by event")
    worst = worst_infractions(res, 8)
    if worst:
        lines.append("Worst infractions:")
        for name, seed, inf in worst:
            lines.append(f"  {name:<22} seed {seed:<4} {inf.t_s:5.1f} s  {inf.kind:<18} {inf.detail}")
    return "\n".join(lines)


def summary_line(res: SuiteResult, first: str) -> dict[str, object]:
    """The last line ``pwm sim`` (and ``pwm_sim``) prints: the figures of planner ``first``, the others' EPDMS."""
    s = res.summary(first)
    return {"planner": first, "epdms": s["epdms"], "epdms_ci95_lo": s["epdms_ci95_lo"],
            "epdms_ci95_hi": s["epdms_ci95_hi"], "driving_score": s["driving_score"],
            "route_completion": s["route_completion"], "collisions_at_fault": s["collisions_at_fault"],
            "scenarios": s["scenarios"], "reactive": res.reactive,
            **{f"{n}_epdms": res.summary(n)["epdms"] for n in res.scores if n != first},
            **_anticipation_keys(res, first)}


def _anticipation_keys(res: SuiteResult, first: str) -> dict[str, object]:
    """``anticipation_events``, the first planner's and the expert's mean lead time (s) and, per other planner,
    the first minus it with its interval (paired by event)."""
    table = res.anticipation()
    if not table["events"]:
        return {}
    rows = table["rows"]
    out: dict[str, object] = {"anticipation_events": table["events"],
                              "anticipation_s": _r(rows.get(first, {}).get("mean_s")),
                              "anticipation_expert_s": _r(rows["expert"]["mean_s"])}
    for pair, (m, lo, hi) in table["paired"].items():
        a, b = pair.split(" - ")
        if a == first:
            out.update({f"anticipation_minus_{b}_s": _r(m), f"anticipation_minus_{b}_s_ci95_lo": _r(lo),
                        f"anticipation_minus_{b}_s_ci95_hi": _r(hi)})
    return out


def _finite_or_none(value: object) -> object:
    """``value`` with every NaN or infinite float (nested in dicts, lists and tuples) replaced by None (strict JSON)."""
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value if not isinstance(value, float) or math.isfinite(value) else None


def _r(v: object) -> object:
    return round(v, 4) if isinstance(v, float) and math.isfinite(v) else None


def worst_infractions(res: SuiteResult, n: int) -> list[tuple[str, int, object]]:
    rows = [(name, s.seed, inf) for name, scores in res.scores.items() for s in scores for inf in s.infractions]
    rows.sort(key=lambda r: (SEVERITY.index(r[2].kind) if r[2].kind in SEVERITY else 99, r[2].t_s))
    return rows[:n]


def _frame_png(name: str, seed: int, inf: object) -> str:
    """Where an infraction's camera frame is saved, relative to the suite's folder."""
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
    return f"frames/{safe}_seed{seed}_{inf.t_s:05.1f}s_{inf.kind}.png"  # type: ignore[attr-defined]


def save_suite(res: SuiteResult, out_dir: str | Path, extra: dict | None = None, camera: PinholeCamera | None = None
               ) -> Path:
    """metrics.json, drives.csv, report.html, drive.mp4 (with ``camera``: one drive with its plan drawn in) and
    frames/ of the worst infractions into ``out_dir`` (each file written whole, then moved into place)."""
    import cv2

    from pwm_model.io_utils import atomic_path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = {"seeds": res.seeds, "seconds": res.seconds, "reactive": res.reactive,
               "planners": {name: res.summary(name) for name in res.scores},
               "anticipation": _finite_or_none(res.anticipation()),
               "drives": {name: [s.summary() for s in scores] for name, scores in res.scores.items()},
               "infractions": [{"planner": name, "seed": seed, "t_s": round(inf.t_s, 2), "kind": inf.kind,
                                "detail": inf.detail,
                                "frame_png": _frame_png(name, seed, inf) if (name, seed, inf.frame) in res.frames
                                else None}
                               for name, seed, inf in worst_infractions(res, FRAMES_SAVED_MAX)],
               **(extra or {})}
    with atomic_path(out / "metrics.json") as tmp:
        Path(tmp).write_text(json.dumps(metrics, indent=2) + "\n")
    with atomic_path(out / "drives.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        keys = ["seed", "epdms", "driving_score", "route_completion", "collisions_at_fault", "windows",
                "windows_lost", "nc", "dac", "ddc", "ttc", "ep", "lk", "hc", "ec"]
        writer.writerow(["planner", *keys, "end_reason"])
        for name, scores in res.scores.items():
            for s in scores:
                row = s.summary()
                writer.writerow([name, *[row[k] if not isinstance(row[k], float) else round(row[k], 4)
                                         for k in keys], res.end_reasons.get((name, s.seed), "")])
    video = None
    if res.video_log is not None and res.video_log.frames_rgb and camera is not None:
        from pwm_model.sim.report import write_drive_video

        info = write_drive_video(res.video_log, camera, out / "drive.mp4")
        if info is not None:
            video = (info.web_path or info.path).name
    from pwm_model.sim.report import write_sim_report

    write_sim_report(out / "report.html", res, video=video)
    frames_dir = out / "frames"
    frames_dir.mkdir(exist_ok=True)
    for name, seed, inf in worst_infractions(res, FRAMES_SAVED_MAX):
        image = res.frames.get((name, seed, inf.frame))
        if image is not None:
            cv2.imwrite(str(out / _frame_png(name, seed, inf)), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return out
