"""``pwm eval``: score a world-model checkpoint on a clip store against the baselines, side by side.

Planning: L2 at 1/2/3 s in both protocols and collision over the whole plan, split longitudinal / lateral
(metrics.py), for PWM, every ``--compare`` checkpoint, constant velocity, CA, CTRV, CTRA and the ego-status MLP;
l2_3s intervals clustered by drive and PWM - CTRA paired by clip (intervals.py); a per-scenario-family table; the
forecast-reliance probes and the route-command flip (reliance.py). Forecast: token accuracy per horizon over every
clip, PSNR / SSIM per horizon of the decoded forecast against the true future frames over ``image_clips`` evenly
spread clips, next to copy-last-frame and the tokenizer's ceiling (the true future tokens decoded the same way).
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pwm_model.config import PwmConfig
from pwm_model.data.contract import label_ego_vectors
from pwm_model.data.tokens import TokenCache, load_labels, token_cache
from pwm_model.errors import DataError
from pwm_model.eval import metrics as M
from pwm_model.eval.baselines import constant_velocity, copy_last_frame, kinematic
from pwm_model.eval.ego_mlp import EgoMLP
from pwm_model.eval.reliance import command_response, probe_plans, reliance_table


@dataclass
class EvalReport:
    """Rows for the tables and the flat summary for the JSON line."""

    store: str
    clips: int
    image_clips: int
    horizons_s: list[float]  # forecast frame times
    planning: dict[str, dict[str, float]] = field(default_factory=dict)  # row name -> metrics
    forecast: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # row -> {psnr, ssim, token_acc}
    summary: dict[str, Any] = field(default_factory=dict)
    # other planner row -> its discordant clips against PWM (M.paired_collisions: only_a = PWM only, only_b = it only)
    paired: dict[str, dict[str, float]] = field(default_factory=dict)
    hits_minus_ctra: tuple[float, float, float] | None = None  # PWM - CTRA share of clips hit, by drive (mean, lo, hi)
    intervals: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # (mean, lo, hi), by drive
    reliance: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # probe -> l2_3s minus own
    families: dict[str, dict[str, float]] = field(default_factory=dict)  # scenario family -> clips, l2_3s, rates
    command: dict[str, float] = field(default_factory=dict)  # command_response: the plan with the command flipped
    anticipation: dict[str, Any] = field(default_factory=dict)  # anticipation.anticipation_table (empty: no events)


def _progress(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


@torch.no_grad()
def rollout_all(model: torch.nn.Module, cache: TokenCache, ego: np.ndarray, batch_size: int = 64,
                device: str = "cpu", label: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Greedy rollouts of every clip: (forecast tokens (N, F, Ld), waypoints (N, K, 3)).

    With a ``label``, a progress line (clips done, elapsed, ETA) goes to stderr every 10 s or so.
    """
    h = model.history_frames
    fc, wp = [], []
    started = last = time.monotonic()
    n = len(cache.ctx)
    for s in range(0, len(cache.ctx), batch_size):
        ctx = torch.from_numpy(cache.ctx[s:s + batch_size].astype(np.int64)).to(device)
        hist = torch.from_numpy(cache.dyn[s:s + batch_size, :h].astype(np.int64)).to(device)
        e = torch.from_numpy(ego[s:s + batch_size]).to(device)
        f, w = model.rollout(ctx, hist, e, temperature=0.0)
        fc.append(f.cpu().numpy())
        wp.append(w.cpu().numpy())
        done, now = min(s + batch_size, n), time.monotonic()
        if label is not None and done < n and now - last >= 10.0:
            last, rate = now, done / max(now - started, 1e-9)
            _progress(f"eval: {label} {done}/{n} clips, {now - started:.0f} s, ETA {(n - done) / rate:.0f} s")
    return np.concatenate(fc), np.concatenate(wp)


def _planning(pred: np.ndarray, labels: dict[str, np.ndarray], cfg: PwmConfig
              ) -> tuple[dict[str, float], np.ndarray]:
    """A planner's row of metrics and its per-clip collision flags (N,)."""
    dt = cfg.data.waypoint_dt_s
    out = M.l2_metrics(pred, labels["waypoints_xyyaw"], labels["waypoints_valid"], dt)
    rates, hits = M.collision_metrics_with_hits(pred, labels["waypoints_xyyaw"], labels["waypoints_valid"],
                                                labels["boxes"], labels["boxes_valid"], dt)
    return {**out, **rates}, hits


def _l2_intervals(pwm: np.ndarray, ctra: np.ndarray, labels: dict[str, np.ndarray], cfg: PwmConfig
                  ) -> dict[str, tuple[float, float, float]]:
    """PWM's and CTRA's l2_3s and their paired difference, with 95 % intervals clustered by drive."""
    from pwm_model.eval.intervals import cluster_bootstrap, paired_difference

    gt, valid, dt = labels["waypoints_xyyaw"], labels["waypoints_valid"], cfg.data.waypoint_dt_s
    drives = labels["drive"]
    a, b = M.per_clip_l2(pwm, gt, valid, dt), M.per_clip_l2(ctra, gt, valid, dt)
    return {"PWM l2_3s": cluster_bootstrap(a, drives), "CTRA l2_3s": cluster_bootstrap(b, drives),
            "PWM - CTRA l2_3s": paired_difference(a, b, drives)}


def _paired_l2(a_plans: np.ndarray, b_plans: np.ndarray, labels: dict[str, np.ndarray], cfg: PwmConfig
               ) -> tuple[float, float, float]:
    """Mean per-clip l2_3s of ``a`` minus ``b`` with its drive-clustered 95 % interval."""
    from pwm_model.eval.intervals import paired_difference

    gt, valid, dt = labels["waypoints_xyyaw"], labels["waypoints_valid"], cfg.data.waypoint_dt_s
    return paired_difference(M.per_clip_l2(a_plans, gt, valid, dt), M.per_clip_l2(b_plans, gt, valid, dt),
                             labels["drive"])


def _families(plans: dict[str, np.ndarray], labels: dict[str, np.ndarray], cfg: PwmConfig, names: list[str]
              ) -> dict[str, dict[str, float]]:
    """Per scenario family (the label at the clip's current frame): clips, and each planner's l2_3s and collision
    rate over the whole plan."""
    out: dict[str, dict[str, float]] = {}
    for sid in np.unique(labels["scenario"]):
        rows = labels["scenario"] == sid
        sub = {key: v[rows] for key, v in labels.items()}
        row: dict[str, float] = {"clips": int(rows.sum())}
        for name, plan in plans.items():
            metrics, _ = _planning(plan[rows], sub, cfg)
            row[f"{name} l2_3s"], row[f"{name} collision_rate"] = metrics["l2_3s"], metrics["collision_rate"]
        out[names[int(sid)] if 0 <= int(sid) < len(names) else str(int(sid))] = row
    return out


def _anticipation(model: torch.nn.Module, others: dict[str, tuple[Any, TokenCache]], cache: TokenCache,
                  labels: dict[str, np.ndarray], drives: list[dict[str, Any]], cfg: PwmConfig, batch_size: int,
                  device: str, progress: bool) -> dict[str, Any]:
    """The anticipation table (anticipation.py) over every logged event of the store's drives, whatever
    ``max_clips`` kept: PWM, every compared run, the ego-status MLP when fitted, CTRA and the expert."""
    from pwm_model.eval.anticipation import EventWindow, anticipation_table, event_windows

    windows = event_windows(drives, labels["t_ns"], labels["drive"])
    if not windows:
        return {}
    rows = np.unique(np.concatenate([w.rows for w in windows]))
    local = [EventWindow(w.drive, w.family, w.precursor_ns, w.onset_ns, np.searchsorted(rows, w.rows))
             for w in windows]
    sub = {key: v[rows] for key, v in labels.items()}
    ego = label_ego_vectors(sub)
    if progress:
        _progress(f"eval: anticipation, {len(windows)} event windows, {len(rows)} clips ...")
    plans: dict[str, np.ndarray] = {}
    for name, (m, c) in {"PWM": (model, cache), **others}.items():
        if isinstance(m, EgoMLP):
            plans[name] = m.predict(ego)
        else:
            plans[name] = rollout_all(m, TokenCache(c.ctx[rows], c.dyn[rows], c.path), ego, batch_size, device)[1]
    plans["CTRA"] = kinematic("ctra", sub["ego"][:, 0], sub["ego"][:, 1], sub["ego"][:, 2], model.num_waypoints,
                              cfg.data.waypoint_dt_s)
    return anticipation_table(plans, sub, local, cfg.data.waypoint_dt_s)


def _image_rows(n: int, image_clips: int) -> np.ndarray:
    if image_clips <= 0:
        return np.zeros(0, np.int64)
    return np.unique(np.linspace(0, n - 1, min(image_clips, n)).round().astype(np.int64))


def evaluate(checkpoint: str | os.PathLike[str], store: str | os.PathLike[str], *,
             train_store: str | os.PathLike[str] | None = None, compare: list[str] | None = None,
             image_clips: int = 256, max_clips: int | None = None, batch_size: int = 64, device: str = "cpu",
             anticipation: bool = True, progress: bool = True) -> EvalReport:
    """Everything in the module docstring; see ``format_report`` and ``EvalReport.summary``."""
    from pwm_model.data.clips import ClipStore
    from pwm_model.data.contract import resize_rgb
    from pwm_model.tokenizer.forecast import decode_forecast
    from pwm_model.tokenizer.model import load_tokenizer
    from pwm_model.world_model.checkpoint import load_world_model

    started = time.monotonic()
    model, cfg = load_world_model(checkpoint, device=device)
    clip_store = ClipStore(store)
    clip_store.check_compatible(cfg)
    cache = token_cache(store, checkpoint, cfg, progress=progress)
    labels = load_labels(store)
    full_cache, full_labels = cache, labels
    clip_rows = np.arange(len(cache.ctx))
    if max_clips is not None and max_clips < len(clip_rows):
        clip_rows = _image_rows(len(clip_rows), max_clips)
        cache = TokenCache(cache.ctx[clip_rows], cache.dyn[clip_rows], cache.path)
        labels = {key: v[clip_rows] for key, v in labels.items()}
    n = len(cache.ctx)
    if n == 0:
        raise DataError(f"clip store {store} holds no clips")
    ego = label_ego_vectors(labels)
    h, f, k = model.history_frames, model.forecast_frames, model.num_waypoints
    model_dt = cfg.model_dt_s
    report = EvalReport(store=str(store), clips=n, image_clips=0,
                        horizons_s=[round((i + 1) * model_dt, 3) for i in range(f)])
    if progress:
        _progress(f"eval: {n} clips, rolling out {Path(checkpoint).name} ...")
    forecast, wp = rollout_all(model, cache, ego, batch_size, device, Path(checkpoint).name if progress else None)
    report.planning["PWM"], pwm_hits = _planning(wp, labels, cfg)
    compared: dict[str, np.ndarray] = {}  # compared run -> its plans
    compared_models: dict[str, tuple[torch.nn.Module, TokenCache]] = {}  # and its model with every clip's tokens
    for other in compare or []:
        m2, cfg2 = load_world_model(other, device=device)
        c2 = token_cache(store, other, cfg2, progress=progress)
        compared_models[Path(other).name] = (m2, c2)
        c2 = TokenCache(c2.ctx[clip_rows], c2.dyn[clip_rows], c2.path)
        if progress:
            _progress(f"eval: rolling out {Path(other).name} ...")
        _, wp2 = rollout_all(m2, c2, ego, batch_size, device, Path(other).name if progress else None)
        name = f"{Path(other).name} (F={m2.forecast_frames})"
        report.planning[name], hits2 = _planning(wp2, labels, cfg2)
        report.paired[name] = M.paired_collisions(pwm_hits, hits2)
        report.summary[f"compare_{Path(other).name}_l2_3s"] = report.planning[name]["l2_3s"]
        compared[Path(other).name] = wp2
        if m2.forecast_frames == 0:
            report.summary["plan_only_l2_3s"] = report.planning[name]["l2_3s"]
            report.summary["plan_only_collision_rate"] = report.planning[name]["collision_rate"]
            report.summary["plan_only_collision_p_value"] = report.paired[name]["p_value"]
    report.planning["constant velocity"], hits_cv = _planning(
        constant_velocity(labels["ego"][:, 0], k, cfg.data.waypoint_dt_s), labels, cfg)
    report.paired["constant velocity"] = M.paired_collisions(pwm_hits, hits_cv)
    state = (labels["ego"][:, 0], labels["ego"][:, 1], labels["ego"][:, 2])  # speed, acceleration, yaw rate at t
    kinematic_plans = {name.upper(): kinematic(name, *state, k, cfg.data.waypoint_dt_s) for name in ("ca", "ctrv",
                                                                                                      "ctra")}
    for name, plan in kinematic_plans.items():
        report.planning[name], hits_k = _planning(plan, labels, cfg)
        report.paired[name] = M.paired_collisions(pwm_hits, hits_k)
        if name == "CTRA":  # the clips-hit difference, paired by clip, its interval clustered by drive
            from pwm_model.eval.intervals import paired_difference

            report.hits_minus_ctra = paired_difference(pwm_hits, hits_k, labels["drive"])
    report.intervals = _l2_intervals(wp, kinematic_plans["CTRA"], labels, cfg)
    report.families = _families({"PWM": wp, "CTRA": kinematic_plans["CTRA"]}, labels, cfg, clip_store.meta.scenarios)
    if progress:
        _progress("eval: forecast-reliance probes (true, random, copy-last and no future frames) ...")
    probes = probe_plans(model, cache.ctx, cache.dyn, ego, batch_size=batch_size, device=device, seed=cfg.train.seed)
    report.reliance = reliance_table(wp, probes, labels, cfg.data.waypoint_dt_s)
    for other, wp2 in compared.items():  # paired by clip, by drive: PWM against the run, and PWM fed the true future
        for key, plans in ((f"PWM - {other} l2_3s", wp), (f"PWM fed the true future - {other} l2_3s",
                                                            probes["oracle"])):
            report.intervals[key] = _paired_l2(plans, wp2, labels, cfg)
            mean, lo, hi = report.intervals[key]
            stem = ("pwm_oracle_minus_" if "true future" in key else "pwm_minus_") + other
            report.summary.update({f"{stem}_l2_3s": mean, f"{stem}_l2_3s_ci95_lo": lo, f"{stem}_l2_3s_ci95_hi": hi})
    report.command = command_response(model, cache.ctx, cache.dyn, ego, wp, labels, cfg.data.waypoint_dt_s,
                                      batch_size=batch_size, device=device)
    if train_store is not None:
        tl = load_labels(train_store)
        train_ego = label_ego_vectors(tl)
        mlp = EgoMLP.fit(train_ego, tl["waypoints_xyyaw"], tl["waypoints_valid"], seed=cfg.train.seed)
        mlp_plans = mlp.predict(ego)
        compared_models["ego-status MLP"] = (mlp, full_cache)
        report.planning["ego-status MLP"], hits_mlp = _planning(mlp_plans, labels, cfg)
        report.paired["ego-status MLP"] = M.paired_collisions(pwm_hits, hits_mlp)
        report.intervals["PWM - ego-status MLP l2_3s"] = _paired_l2(wp, mlp_plans, labels, cfg)

    if anticipation:
        report.anticipation = _anticipation(model, compared_models, full_cache, full_labels, clip_store.meta.drives,
                                            cfg, batch_size, device, progress)

    if f > 0:
        true_future = cache.dyn[:, h:h + f].astype(np.int64)  # (N, F, Ld) frames t+1 .. t+F
        last = cache.dyn[:, h - 1].astype(np.int64)  # frame t
        report.forecast["PWM"] = {"token_acc": list((forecast == true_future).mean(axis=(0, 2)))}
        report.forecast["copy-last-frame"] = {
            "token_acc": list((copy_last_frame(last, f) == true_future).mean(axis=(0, 2)))}
        rows = _image_rows(n, image_clips)
        if len(rows):
            _, tok = load_tokenizer(str(checkpoint), device=device)
            tk = cfg.tokenizer
            hd, wd = tk.dyn_height_px, tk.dyn_width_px
            truth = np.zeros((len(rows), f, hd, wd, 3), np.uint8)
            current = np.zeros((len(rows), hd, wd, 3), np.uint8)
            for i, r in enumerate(rows):
                frames = clip_store[int(clip_rows[r])].frames_rgb  # (1 + H + F_data, h, w, 3): index H = frame t
                current[i] = resize_rgb(frames[h], hd, wd)
                for j in range(f):
                    truth[i, j] = resize_rgb(frames[h + 1 + j], hd, wd)
            dec, ceil = [], []
            for s in range(0, len(rows), batch_size):
                rr = rows[s:s + batch_size]
                ctx = torch.from_numpy(cache.ctx[rr].astype(np.int64)).to(device)
                dec.append(decode_forecast(tok, ctx, torch.from_numpy(forecast[rr]).to(device)))
                ceil.append(decode_forecast(tok, ctx, torch.from_numpy(true_future[rr]).to(device)))
            dec_a, ceil_a = np.concatenate(dec), np.concatenate(ceil)
            copy = copy_last_frame(current, f)
            for name, imgs in (("PWM", dec_a), ("copy-last-frame", copy), ("tokenizer ceiling", ceil_a)):
                row = report.forecast.setdefault(name, {})
                row["psnr_db"] = M.per_horizon_mean(M.psnr_db(imgs, truth))
                row["ssim"] = M.per_horizon_mean(M.ssim(imgs, truth))
            report.image_clips = len(rows)

    pwm = report.planning["PWM"]
    s = report.summary
    one_s = int(round(1.0 / model_dt)) - 1  # forecast index of t + 1 s
    pwm_psnr = report.forecast.get("PWM", {}).get("psnr_db", [])
    copy_psnr = report.forecast.get("copy-last-frame", {}).get("psnr_db", [])
    final = {"l2_1s": pwm["l2_1s"], "l2_2s": pwm["l2_2s"], "l2_3s": pwm["l2_3s"], "l2_avg": pwm["l2_avg"],
             "l2_uniad_1s": pwm["l2_uniad_1s"], "l2_uniad_2s": pwm["l2_uniad_2s"],
             "l2_uniad_3s": pwm["l2_uniad_3s"], "collision_rate": pwm["collision_rate"],
             "collision_rate_ci95_lo": pwm["collision_rate_ci95_lo"],
             "collision_rate_ci95_hi": pwm["collision_rate_ci95_hi"],
             "psnr_forecast_1s_db": pwm_psnr[one_s] if 0 <= one_s < len(pwm_psnr) else math.nan,
             "token_acc_1s": report.forecast["PWM"]["token_acc"][one_s] if f > one_s >= 0 else math.nan,
             "cv_l2_3s": report.planning["constant velocity"]["l2_3s"],
             "cv_collision_rate": report.planning["constant velocity"]["collision_rate"],
             "ctra_l2_3s": report.planning["CTRA"]["l2_3s"],
             "ctra_collision_rate": report.planning["CTRA"]["collision_rate"],
             "collision_lateral_rate": pwm["collision_lateral_rate"],
             "collision_longitudinal_rate": pwm["collision_longitudinal_rate"]}
    lo_hi = report.intervals["PWM - CTRA l2_3s"]
    final.update(pwm_minus_ctra_l2_3s=lo_hi[0], pwm_minus_ctra_l2_3s_ci95_lo=lo_hi[1],
                 pwm_minus_ctra_l2_3s_ci95_hi=lo_hi[2], drives=int(len(np.unique(labels["drive"]))))
    hit_diff = report.hits_minus_ctra or (math.nan, math.nan, math.nan)
    final.update(pwm_minus_ctra_collision_rate=hit_diff[0], pwm_minus_ctra_collision_rate_ci95_lo=hit_diff[1],
                 pwm_minus_ctra_collision_rate_ci95_hi=hit_diff[2])
    final.update(report.command)
    for probe, (mean, lo, hi) in report.reliance.items():
        if probe != "own":
            final.update({f"reliance_{probe}_l2_3s": mean, f"reliance_{probe}_l2_3s_ci95_lo": lo,
                          f"reliance_{probe}_l2_3s_ci95_hi": hi})
    if "ego-status MLP" in report.planning:
        final["ego_mlp_l2_3s"] = report.planning["ego-status MLP"]["l2_3s"]
        d = report.intervals["PWM - ego-status MLP l2_3s"]
        final.update(pwm_minus_ego_mlp_l2_3s=d[0], pwm_minus_ego_mlp_l2_3s_ci95_lo=d[1],
                     pwm_minus_ego_mlp_l2_3s_ci95_hi=d[2])
    if report.anticipation:
        from pwm_model.eval.anticipation import summary_keys

        keys = {"PWM": "pwm", "CTRA": "ctra", "ego-status MLP": "ego_mlp"}
        final.update(summary_keys(report.anticipation, keys))
    final.update(s)
    final["copy_last_psnr_1s_db"] = copy_psnr[one_s] if 0 <= one_s < len(copy_psnr) else math.nan
    final["clips"] = n
    final["seconds"] = round(time.monotonic() - started, 1)
    report.summary = {key: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else
                            (None if isinstance(v, float) else v)) for key, v in final.items()}
    return report


def _f(v: float, digits: int = 3) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"


def format_report(report: EvalReport) -> str:
    """The tables for people (planning, then forecast)."""
    lines = [f"Planning on {report.store} ({report.clips} clips); L2 in m, collision in %",
             f"{'':<28}{'L2 1s':>7}{'2s':>7}{'3s':>7}{'avg':>7} |{'@1s':>7}{'@2s':>7}{'@3s':>7} |"
             f"{'coll 1s':>8}{'2s':>6}{'3s':>6} |{'clips hit':>10}{'95% CI':>12}"]
    for name, m in report.planning.items():
        lines.append(f"{name:<28}{_f(m['l2_1s']):>7}{_f(m['l2_2s']):>7}{_f(m['l2_3s']):>7}{_f(m['l2_avg']):>7} |"
                     f"{_f(m['l2_uniad_1s']):>7}{_f(m['l2_uniad_2s']):>7}{_f(m['l2_uniad_3s']):>7} |"
                     f"{_f(m['collision_1s_pct'], 2):>8}{_f(m['collision_2s_pct'], 2):>6}"
                     f"{_f(m['collision_3s_pct'], 2):>6} |{_f(100 * m['collision_rate'], 1) + '%':>10}"
                     f"{_f(100 * m['collision_rate_ci95_lo'], 1) + '-' + _f(100 * m['collision_rate_ci95_hi'], 1):>12}")
    lines.append("L2 1s/2s/3s/avg: mean over the waypoints up to T (VAD/PWM protocol); @T: at T (UniAD protocol); "
                 "collision: swept 4.084 x 1.85 m ego box vs ground-truth boxes; clips hit: over the whole plan, "
                 "with its 95 % Wilson interval")
    if report.intervals:
        lines.append(f"L2 up to 3 s with 95 % intervals from a bootstrap over the {report.summary.get('drives')} "
                     "drives (clips of a drive overlap; differences paired by clip):")
        for name, (mean, lo, hi) in report.intervals.items():
            lines.append(f"  {name:<20}{_f(mean):>8}  [{_f(lo)}, {_f(hi)}]")
    if report.families:
        lines.append("By scenario family (the label at the clip's current frame): l2_3s in m, clips hit over the "
                     "whole plan")
        lines.append(f"  {'family':<18}{'clips':>6}{'PWM':>8}{'CTRA':>8}{'PWM hit':>9}{'CTRA hit':>9}")
        for family, row in report.families.items():
            lines.append(f"  {family:<18}{row['clips']:>6}{_f(row['PWM l2_3s']):>8}{_f(row['CTRA l2_3s']):>8}"
                         f"{_f(100 * row['PWM collision_rate'], 1) + '%':>9}"
                         f"{_f(100 * row['CTRA collision_rate'], 1) + '%':>9}")
    if report.reliance:
        own = report.reliance["own"]
        lines.append(f"Forecast reliance: PWM's plan fed other futures, l2_3s minus its own-forecast plan's "
                     f"({_f(own[0])} m), 95 % intervals by drive (near zero everywhere: the plan ignores the forecast)")
        labels = {"oracle": "true future tokens", "random": "random tokens", "copy_last": "copy of frame t",
                  "none": "no future frames"}
        for probe, (mean, lo, hi) in report.reliance.items():
            if probe != "own":
                lines.append(f"  {labels.get(probe, probe):<20}{_f(mean):>8}  [{_f(lo)}, {_f(hi)}]")
    if report.command.get("command_clips"):
        c = report.command
        lines.append(f"Route command: on {c['command_clips']} left/right clips, flipping the command moves the plan "
                     f"{_f(c['command_flip_shift_3s_m'])} m sideways at 3 s; the true command's plan is "
                     f"{_f(c['command_flip_lateral_3s_m'])} m closer laterally to where the car went")
    if report.anticipation:
        from pwm_model.eval.anticipation import format_table

        lines.append(format_table(report.anticipation))
    if report.paired:
        lines.append("clips hit by only one of PWM and another planner, and McNemar's exact p-value (below 0.05 "
                     "the difference is unlikely to be chance):")
        for name, pair in report.paired.items():
            lines.append(f"  PWM only {pair['only_a']:>4.0f} | {name} only {pair['only_b']:>4.0f} | "
                         f"p = {pair['p_value']:.2f}")
        if report.hits_minus_ctra is not None:
            mean, lo, hi = (100 * v for v in report.hits_minus_ctra)
            lines.append(f"  PWM - CTRA clips hit {mean:+.1f} % points ({lo:+.1f} to {hi:+.1f}; paired by clip, "
                         "95 % by drive)")
    if report.forecast:
        hz = "".join(f"{'+' + format(t, 'g') + 's':>8}" for t in report.horizons_s)
        lines += ["", f"Forecast (token accuracy over {report.clips} clips; PSNR dB / SSIM over "
                      f"{report.image_clips} clips)", f"{'':<34}{hz}"]
        for metric, label, digits in (("token_acc", "token accuracy", 3), ("psnr_db", "PSNR", 2),
                                      ("ssim", "SSIM", 3)):
            for name, row in report.forecast.items():
                if metric in row:
                    vals = "".join(f"{_f(v, digits):>8}" for v in row[metric])
                    lines.append(f"{label + ' ' + name:<34}{vals}")
    return "\n".join(lines)
