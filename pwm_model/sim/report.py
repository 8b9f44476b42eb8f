"""The closed-loop pages: ``report.html`` beside ``pwm sim``'s metrics.json, and one drive as a video.

The page: the suite table (EPDMS, driving score, route completion with scenario-bootstrap intervals, at-fault
collisions and the mean sub-scores), EPDMS per scenario as bars for every planner, the worst infractions with the
camera frame at that moment, and bird's-eye views of the drives that went worst (the ego's path for every planner,
the expert's dashed, the other vehicles' paths thin). Self-contained like the replay report (inline PNG, no script).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from pwm_model.eval.report import CSS, _img, _plt, _png, _rgb_png
from pwm_model.geometry import PinholeCamera, to_ego_frame
from pwm_model.io_utils import write_text_atomic
from pwm_model.sim.loop import DriveLog

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]


def write_drive_video(log: DriveLog, camera: PinholeCamera, path: str | Path, fps: float | None = None) -> Any:
    """The drive's camera frames with the plan being tracked drawn in (green) and a caption; needs the log's frames
    (``run_drive(keep_frames=True)``). Returns ``overlay_video.VideoInfo`` (None without frames)."""
    from pwm_model.eval.overlay_video import OverlayVideo, draw_overlay

    video = OverlayVideo(path, fps=fps or 1.0 / log.frame_dt_s)
    plan_xy = None
    for i, tick in enumerate(log.ticks):
        frame = log.frames_rgb.get(i)
        if tick.plan_xy_m is not None and tick.driven_by_planner:
            plan_xy = tick.plan_xy_m
        if frame is None:
            continue
        local = to_ego_frame(plan_xy, *tick.ego_xyyaw) if plan_xy is not None else None
        who = "planner" if tick.driven_by_planner else "expert (warm-up)"
        caption = (f"{log.planner}  seed {log.seed}  t {tick.t_s:4.1f} s  {tick.speed_mps:4.1f} m/s  "
                   f"cmd {'LSR'[tick.command]}  {who}")
        video.add(draw_overlay(frame, camera, local, None, caption))
    return video.close()


def _bars(res: Any) -> str:
    plt = _plt()
    names = list(res.scores)
    seeds = res.seeds
    fig, ax = plt.subplots(figsize=(min(14, 2 + 0.32 * len(seeds) * max(1, len(names)) / 2), 3.2))
    width = 0.8 / max(1, len(names))
    x = np.arange(len(seeds))
    for j, name in enumerate(names):
        ax.bar(x + j * width - 0.4 + width / 2, [s.epdms for s in res.scores[name]], width, label=name,
               color=COLORS[j % len(COLORS)])
    ax.set_xticks(x, [str(s) for s in seeds], fontsize=7, rotation=90 if len(seeds) > 20 else 0)
    ax.set_xlabel("scenario seed")
    ax.set_ylabel("EPDMS")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, ncol=min(4, len(names)), loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def _bev(res: Any, seed: int) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    for j, name in enumerate(res.scores):
        path = res.paths.get((name, seed))
        if path is None:
            continue
        ego_xy, agents = path
        for xy in agents.values():
            ax.plot(xy[:, 0], xy[:, 1], color="#9aa0ad", lw=0.6, alpha=0.6)
        ax.plot(ego_xy[:, 0], ego_xy[:, 1], color=COLORS[j % len(COLORS)], lw=2.0 if name != "expert" else 1.4,
                ls="--" if name == "expert" else "-", label=name)
        ax.plot(*ego_xy[-1], "o", color=COLORS[j % len(COLORS)], ms=4)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.legend(fontsize=8, loc="best")
    ax.set_title(f"seed {seed}: the ego's path per planner (grey: other vehicles)", fontsize=10)
    return _png(fig)


def render_sim_html(res: Any, *, title: str, video: str | None = None) -> str:
    from pwm_model.sim.suite import worst_infractions

    rows = []
    for name in res.scores:
        s = res.summary(name)
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{s['epdms']:.3f} <span class='iv'>({s['epdms_ci95_lo']:.3f}.."
            f"{s['epdms_ci95_hi']:.3f})</span></td><td>{s['driving_score']:.3f} <span class='iv'>"
            f"({s['driving_score_ci95_lo']:.3f}..{s['driving_score_ci95_hi']:.3f})</span></td>"
            f"<td>{s['route_completion']:.3f}</td><td>{s['collisions_at_fault']}</td>"
            + "".join(f"<td>{s[k]:.2f}</td>" for k in ("nc", "dac", "ddc", "ttc", "ep", "lk", "hc", "ec")) + "</tr>")
    mode = "reactive" if res.reactive else "non-reactive"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{CSS}</style></head><body><main><h1>{html.escape(title)}</h1>",
             f"<p class='lead'>{len(res.seeds)} held-out scenarios (seeds {res.seeds[0]}..{res.seeds[-1]}), "
             f"{res.seconds:g} s each, {mode} traffic. Each drive is scored in 4 s windows with NAVSIM v2's "
             "sub-scores against the world's own driver on the same seed (EPDMS), and as Bench2Drive scores a route "
             "(route completion x collision penalties). 95 % intervals by scenario bootstrap.</p>",
             "<h2>Suite</h2><table><tr><th>planner</th><th>EPDMS</th><th>driving score</th><th>route completion"
             "</th><th>at-fault collisions</th><th>NC</th><th>DAC</th><th>DDC</th><th>TTC</th><th>EP</th><th>LK</th>"
             "<th>HC</th><th>EC</th></tr>" + "".join(rows) + "</table>",
             "<h2>EPDMS per scenario</h2><div class='wide'>" + _img(_bars(res), "EPDMS per scenario") + "</div>"]
    if video:
        parts.append(f"<h2>One drive</h2><video controls src='{html.escape(video)}'></video>")
    worst = worst_infractions(res, 8)
    if worst:
        cards = []
        for name, seed, inf in worst:
            frame = res.frames.get((name, seed, inf.frame))
            pic = _img(_rgb_png(frame), inf.kind) if frame is not None else ""
            cards.append(f"<div class='card'>{pic}<div class='cap'><b>{html.escape(name)}</b>, seed {seed}, "
                         f"{inf.t_s:.1f} s: {html.escape(inf.kind.replace('_', ' '))} "
                         f"({html.escape(inf.detail)})</div></div>")
        parts.append("<h2>Worst infractions</h2><div class='cards small'>" + "".join(cards) + "</div>")
        bev_seeds = list(dict.fromkeys(seed for _, seed, _ in worst))[:3]
        parts.append("<h2>Bird's-eye view of the worst drives</h2>"
                     + "".join(f"<div class='wide'>{_img(_bev(res, s), f'seed {s}')}</div>" for s in bev_seeds))
    parts.append("</main></body></html>")
    return "\n".join(parts)


def write_sim_report(path: str | Path, res: Any, *, title: str = "Closed-loop driving", video: str | None = None
                     ) -> Path:
    path = Path(path)
    write_text_atomic(path, render_sim_html(res, title=title, video=video))
    return path
