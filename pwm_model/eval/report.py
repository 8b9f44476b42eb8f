"""``report.html``: the page a person reads after ``pwm eval-bag`` or ``pwm demo``.

One self-contained HTML file (inline CSS, figures as base64 PNG drawn with matplotlib's Agg backend, no script and
nothing fetched from the network) beside ``metrics.json``, ``plans.csv`` (one row per plan, written with it) and the
overlay video (linked relatively): the verdict on every headline metric and the summary table against the baselines
(each comparison marked "better" or "worse", losses as plainly as wins, with 95 % intervals), L2 over the horizon,
plans in bird's-eye view, surprise over time with the worst moments, forecast strips (true future vs forecast),
latency histogram, the overlay video, the inputs used (topics, encoding, resolution, rates), the node's diagnostics
over a live run and per-bag details.

    write_report("out/eval/report.html", evals, metrics, title="pwm-tiny on sample_drive", model="...")
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pwm_model.config import COMMANDS
from pwm_model.eval import metrics as M
from pwm_model.eval.bag_summary import compare as compare_values
from pwm_model.eval.bag_summary import horizon_index
from pwm_model.eval.bag_types import BagEvaluation, ForecastStrip, Moment
from pwm_model.eval.overlay_video import PLAN_RGB, TRUTH_RGB
from pwm_model.eval.plan_table import CSV_NAME, write_plans_csv
from pwm_model.eval.report_sections import (
    closed_loop_section,
    details,
    diagnostics_section,
    fmt,
    inputs_section,
    interval_note,
    kpis,
    mark_badge,
    node_diagnostics,
    summary_table,
    verdict_list,
)
from pwm_model.geometry import box_footprint
from pwm_model.io_utils import write_text_atomic

PLAN_COLOR = tuple(c / 255 for c in PLAN_RGB)
TRUTH_COLOR = tuple(c / 255 for c in TRUTH_RGB)
CV_COLOR = (0.45, 0.45, 0.45)
BOX_COLOR = (0.15, 0.3, 0.7)
DPI = 100
STRIPS = 4  # forecast strips shown
CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:36px 0 6px;border-bottom:1px solid #d8dbe2;padding-bottom:4px}
p.lead{color:#4a5163;margin:4px 0 14px;max-width:900px;line-height:1.45}
.meta{color:#5b6275;font-size:14px}.meta code{background:#e9ebf0;padding:1px 4px;border-radius:3px}
.note{background:#fff4d6;border-left:4px solid #e0a800;padding:10px 14px;margin:12px 0;border-radius:3px}
table{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px #0001;font-size:15px}
th,td{padding:7px 14px;border-bottom:1px solid #eceef2;text-align:right}th{background:#eef0f4}
td:first-child,th:first-child{text-align:left}td.better{font-weight:700;color:#17803d}
td.worse{font-weight:700;color:#b42318}td.iv,span.iv{color:#5b6275;font-size:13px;white-space:nowrap}
.mark{display:inline-block;font-weight:700;font-size:13px;padding:1px 7px;border-radius:10px;white-space:nowrap}
.mark.better{color:#fff;background:#17803d}.mark.worse{color:#fff;background:#b42318}
.mark.same{color:#1d2330;background:#d8dbe2}ul.verdict{margin:8px 0 4px;padding-left:0;list-style:none}
ul.verdict li{margin:5px 0;line-height:1.45}.inputs td,.inputs th{font-size:14px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:14px}
.cards.small{grid-template-columns:repeat(auto-fill,minmax(300px,1fr))}
.pair{display:flex;gap:2%;align-items:center}.card .pair img:first-child{width:60%}
.card .pair img:last-child{width:38%}
.card{background:#fff;padding:8px;box-shadow:0 1px 2px #0002;border-radius:4px}
.card img{width:100%;height:auto;display:block}.wide img{max-width:100%;height:auto;display:block}
.wide{background:#fff;padding:8px;margin:8px 0;
box-shadow:0 1px 2px #0002;border-radius:4px}.cap{font-size:13px;color:#4a5163;margin:6px 2px 0}
.legend span{display:inline-block;margin-right:16px;font-size:14px}.sw{display:inline-block;width:22px;height:4px;
vertical-align:middle;margin-right:6px}video{width:100%;max-width:900px;background:#000;display:block}
.kpi{display:flex;gap:14px;flex-wrap:wrap;margin:10px 0 4px}.kpi div{background:#fff;padding:10px 16px;
border-radius:4px;box-shadow:0 1px 2px #0002;min-width:150px}.kpi b{display:block;font-size:22px}
.kpi span{font-size:13px;color:#5b6275}
.row{display:flex;gap:18px;flex-wrap:wrap;align-items:flex-start}.row table{flex:0 0 auto}
.side{flex:1 1 420px;margin:0}h3{font-size:15px;margin:2px 4px 6px}
"""


# ----------------------------------------------------------------------------------------------------
# Figure helpers

def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> str:
    """The figure as a ``data:`` URI (PNG), and the figure closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    _plt().close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _rgb_png(rgb: np.ndarray) -> str:
    """A uint8 RGB image as a PNG data URI (no matplotlib needed)."""
    import cv2

    ok, data = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:  # pragma: no cover - OpenCV always encodes a uint8 image
        raise RuntimeError("PNG encoding failed")
    return "data:image/png;base64," + base64.b64encode(data.tobytes()).decode("ascii")


def _img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{html.escape(alt)}">'


def _rel_s(ev: BagEvaluation, t_ns: int | np.ndarray) -> Any:
    return (np.asarray(t_ns, np.int64) - ev.start_ns) / 1e9


def _l2_3s(ev: BagEvaluation, i: int, traj: np.ndarray) -> float:
    """L2 up to 3 s (VAD protocol) of one trajectory (K, 3) against plan i's ground truth; NaN if unscored."""
    if not ev.truth_valid[i].any():
        return math.nan
    return M.l2_metrics(traj[None], ev.truth[i:i + 1], ev.truth_valid[i:i + 1], ev.waypoint_dt_s,
                        horizons_s=(3.0,))["l2_3s"]


def _plan_l2_3s(ev: BagEvaluation, traj: np.ndarray) -> np.ndarray:
    """Per-plan L2 up to 3 s of ``traj`` (N, K, 3), row-aligned with the plans."""
    return np.array([_l2_3s(ev, i, traj[i]) for i in range(len(traj))])


# ----------------------------------------------------------------------------------------------------
# Figures

def fig_l2_curve(metrics: dict[str, Any]) -> str | None:
    times = metrics.get("waypoint_times_s") or []
    if not times or not metrics.get("planning_scored"):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    pwm = [math.nan if v is None else v for v in metrics["l2_curve_m"]]
    cv = [math.nan if v is None else v for v in metrics["cv_l2_curve_m"]]
    ax.plot(times, pwm, "-o", color=PLAN_COLOR, lw=2.2, label="PWM")
    ax.plot(times, cv, "--s", color=CV_COLOR, lw=1.8, label="constant velocity")
    for h in M.HORIZONS_S:
        ax.axvline(h, color="#ccd", lw=0.8, zorder=0)
    ax.set_xlabel("time ahead (s)")
    ax.set_ylabel("displacement error (m)")
    ax.grid(alpha=0.25)
    ax.legend(frameon=False)
    ax.set_xlim(0, max(times) * 1.03)
    ax.set_ylim(bottom=0)
    return _png(fig)


def _draw_box(ax: Any, box: np.ndarray, **kw: Any) -> None:
    fp = box_footprint(np.asarray(box, np.float64))  # (4, 2) x, y in the ego frame
    poly = np.vstack([fp, fp[:1]])
    ax.plot(-poly[:, 1], poly[:, 0], **kw)  # BEV: x forward is up, y left is left


def fig_bev(ev: BagEvaluation, m: Moment) -> str:
    """The bird's-eye view of one plan: ego frame at t, x forward up, with the truth, constant velocity and boxes."""
    plt = _plt()
    i = m.index
    fig, ax = plt.subplots(figsize=(3.3, 3.6))
    ok = ev.truth_valid[i]
    plan, truth, cv = ev.plans[i], ev.truth[i], ev.cv[i]
    for box in ev.boxes_now[i]:
        _draw_box(ax, box, color=BOX_COLOR, lw=1.2)
    last = int(np.flatnonzero(ok)[-1]) if ok.any() else -1
    if last >= 0:  # where the boxes are at the last valid waypoint time
        for box, valid in zip(ev.boxes[i, last], ev.boxes_valid[i, last]):
            if valid:
                _draw_box(ax, box, color=BOX_COLOR, lw=0.8, ls=":", alpha=0.7)
    ego = np.array([M.EGO_CENTER_X_M, 0, 0, M.EGO_LENGTH_M, M.EGO_WIDTH_M, 1.5, 0])
    _draw_box(ax, ego, color="k", lw=1.5)
    o = np.zeros((1, 2))
    t = o
    if ok.any():
        t = np.vstack([o, truth[ok, :2]])
        ax.plot(-t[:, 1], t[:, 0], "-", color=TRUTH_COLOR, lw=2.4, label="ground truth")
        c = np.vstack([o, cv[:, :2]])
        ax.plot(-c[:, 1], c[:, 0], "--", color=CV_COLOR, lw=1.5, label="const. velocity")
    p = np.vstack([o, plan[:, :2]])
    ax.plot(-p[:, 1], p[:, 0], "-o", color=PLAN_COLOR, lw=2.2, ms=3.5, label="PWM plan")
    pts = np.vstack([p, t])  # the view holds the plan and the truth (boxes may be cut)
    lo_x, hi_x = min(-6.0, float(pts[:, 0].min()) - 3.0), max(12.0, float(pts[:, 0].max()) + 3.0)
    half = max(0.5 * (hi_x - lo_x) * 0.75, float(np.abs(pts[:, 1]).max()) + 3.0)  # y span: 1.5 / 2 of x span
    cy = float(-pts[:, 1].mean())
    ax.set_xlim(cy - half, cy + half)
    ax.set_ylim(lo_x, hi_x)
    ax.set_aspect("equal", adjustable="box")
    ax.grid(alpha=0.2)
    ax.set_xlabel("left ← y (m) → right", fontsize=8)
    ax.set_ylabel("x forward (m)", fontsize=8)
    ax.tick_params(labelsize=7)  # the legend is the page's, above the cards
    return _png(fig)


def plan_card(ev: BagEvaluation, m: Moment, note: str = "") -> str:
    """One plan as a card: the camera frame with the paths drawn, its bird's-eye view and a caption."""
    i = m.index
    caption = (f"<b>{html.escape(ev.name)}</b> · t = {_rel_s(ev, m.t_ns):.1f} s · {COMMANDS[int(ev.command[i])]} · "
               f"{ev.speed_mps[i]:.1f} m/s")
    if ev.truth_valid[i].any():
        pwm, cv = _l2_3s(ev, i, ev.plans[i]), _l2_3s(ev, i, ev.cv[i])
        caption += (f"<br>L2 up to 3 s: PWM <b>{pwm:.2f} m</b> · constant velocity {cv:.2f} m "
                    + mark_badge(compare_values(pwm, cv, "l2_3s", 2)))
    if note:
        caption += f"<br>{note}"
    return (f'<div class="card"><div class="pair">{_img(_rgb_png(m.thumb_rgb), "camera frame with the plan")}'
            f'{_img(fig_bev(ev, m), "plan in bird s-eye view")}</div><p class="cap">{caption}</p></div>')


def fig_timeline(ev: BagEvaluation, worst: Sequence[Moment], warn: float | None = None) -> str:
    """Surprise over time (worst moments numbered) above the per-plan L2 of PWM and constant velocity."""
    plt = _plt()
    t = _rel_s(ev, ev.plan_t_ns)
    scored = ev.has_odometry and ev.truth_valid.any()
    rows = 2 if scored else 1
    fig, axes = plt.subplots(rows, 1, figsize=(10, 2.6 * rows), sharex=True, squeeze=False)
    ax = axes[0, 0]
    s = ev.surprise
    if np.isfinite(s).any():
        ax.plot(t, s, color="#7a3ff2", lw=1.4)
        ax.fill_between(t, 0, np.nan_to_num(s), color="#7a3ff2", alpha=0.12)
    else:
        ax.text(0.5, 0.5, "no surprise values (the first plans of a run have none)", transform=ax.transAxes,
                ha="center", va="center", color="#666")
    for rank, m in enumerate(worst, 1):
        x = float(_rel_s(ev, m.t_ns))
        ax.plot([x], [m.value], "o", color="#d62728", ms=7)
        ax.annotate(f"#{rank}", (x, m.value), textcoords="offset points", xytext=(4, 5), fontsize=9,
                    color="#d62728", fontweight="bold")
    if warn is not None:
        ax.axhline(warn, color="#d62728", lw=1.0, ls=":", label=f"warning threshold {warn:.2f}")
        ax.legend(frameon=False, fontsize=8, loc="upper right")
    _shade_commands(ax, ev, t)
    ax.set_ylabel("forecast surprise")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.25)
    ax.set_title(f"{ev.name}: surprise (how badly the last forecast predicted each frame) over the drive",
                 fontsize=11)
    if scored:
        ax2 = axes[1, 0]
        ax2.plot(t, _plan_l2_3s(ev, ev.plans), color=PLAN_COLOR, lw=1.6, label="PWM")
        ax2.plot(t, _plan_l2_3s(ev, ev.cv), color=CV_COLOR, lw=1.2, ls="--", label="constant velocity")
        _shade_commands(ax2, ev, t)
        ax2.set_ylabel("L2 up to 3 s (m)")
        ax2.set_ylim(bottom=0)
        ax2.grid(alpha=0.25)
        ax2.legend(frameon=False, fontsize=8, loc="upper left")
    axes[-1, 0].set_xlabel("drive time (s)")
    return _png(fig)


def _shade_commands(ax: Any, ev: BagEvaluation, t: np.ndarray) -> None:
    """Light bands where the route command is left (blue) or right (orange)."""
    colors = {0: "#4c72b0", 2: "#dd8452"}
    cmd = ev.command
    start = 0
    for j in range(1, len(cmd) + 1):
        if j == len(cmd) or cmd[j] != cmd[start]:
            if int(cmd[start]) in colors and j - 1 > start:
                ax.axvspan(t[start], t[j - 1], color=colors[int(cmd[start])], alpha=0.08, lw=0)
            start = j


def fig_latency(evals: Sequence[BagEvaluation], metrics: dict[str, Any]) -> str | None:
    lat = np.concatenate([e.latency_ms for e in evals])
    lat = lat[np.isfinite(lat)]
    if not lat.size:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    ax.hist(lat, bins=min(40, max(8, lat.size // 6)), color="#4c72b0", alpha=0.85)
    for q, style in ((50, "-"), (99, "--")):
        v = metrics.get(f"latency_p{q}_ms")
        if v is not None:
            ax.axvline(v, color="#d62728", ls=style, lw=1.4, label=f"p{q} {v:.1f} ms")
    rate = metrics.get("planning_rate_hz")
    if rate:
        ax.axvline(1000.0 / rate, color="#2ca02c", ls=":", lw=1.6, label=f"{1000.0 / rate:.0f} ms: {rate:g} Hz budget")
    kind = metrics.get("latency_kind", "")
    what = "PolicyRunner.step per plan" if kind == "runner" else "camera stamp to plan arrival (bag clock)"
    ax.set_title(f"Latency: {what}", fontsize=11)
    ax.set_xlabel("ms")
    ax.set_ylabel("plans")
    ax.legend(frameon=False)
    ax.grid(alpha=0.25)
    return _png(fig)


def fig_strip(ev: BagEvaluation, strip: ForecastStrip) -> str:
    """The frame the forecast started from, then the true future frames (top) over the decoded forecast (bottom),
    one column per horizon."""
    plt = _plt()
    f = strip.forecast_rgb.shape[0]
    h, w = strip.forecast_rgb.shape[1:3]
    cols = f + 1
    fig, axes = plt.subplots(2, cols, figsize=(min(13.0, 1.0 + 2.0 * cols * w / max(h, 1) / 2), 3.3),
                             squeeze=False)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if strip.current_rgb is not None:
        axes[0, 0].imshow(strip.current_rgb)
        axes[0, 0].set_title("now", fontsize=9)
    axes[1, 0].set_axis_off()
    for k in range(f):
        ax_t, ax_f = axes[0, k + 1], axes[1, k + 1]
        ax_t.set_title(f"+{(k + 1) * ev.model_dt_s:.1f} s", fontsize=9)
        if np.isfinite(strip.psnr_db[k]):
            ax_t.imshow(strip.truth_rgb[k])
        else:
            ax_t.text(0.5, 0.5, "drive ended", ha="center", va="center", fontsize=8, color="#777",
                      transform=ax_t.transAxes)
        ax_f.imshow(strip.forecast_rgb[k])
        ax_f.set_xlabel(f"{fmt(float(strip.psnr_db[k]), 1)} dB", fontsize=8)
    axes[0, 0].set_ylabel("true", fontsize=9)
    axes[1, 1].set_ylabel("forecast", fontsize=9)
    fig.suptitle(f"{ev.name} · planned at t = {_rel_s(ev, strip.t_ns):.1f} s"
                 + (f" · surprise {strip.surprise:.2f}" if math.isfinite(strip.surprise) else ""), fontsize=10)
    return _png(fig)


# ----------------------------------------------------------------------------------------------------
# Page

def _legend() -> str:
    def sw(color: tuple[float, ...], text: str, dashed: bool = False) -> str:
        css = "rgb(" + ",".join(str(round(c * 255)) for c in color) + ")"
        style = f"background:{css}" if not dashed else f"border-top:3px dashed {css};height:0"
        return f'<span><i class="sw" style="{style}"></i>{text}</span>'
    return ('<p class="legend">' + sw(PLAN_COLOR, "PWM plan (yellow dots: waypoints)") +
            sw(TRUTH_COLOR, "where the car really went") + sw(CV_COLOR, "constant velocity", True) +
            sw(BOX_COLOR, "ground-truth boxes now (dotted: at the last waypoint time)") + "</p>")


def _pick_strips(evals: Sequence[BagEvaluation]) -> list[tuple[BagEvaluation, ForecastStrip]]:
    """Forecasts whose every horizon has its true frame: evenly spread, plus the worst one (lowest mean PSNR)."""
    complete = [(e, s) for e in evals for s in e.strips if np.isfinite(s.psnr_db).all()]
    if len(complete) <= STRIPS:
        return complete
    idx = set(np.linspace(0, len(complete) - 1, STRIPS - 1).round().astype(int).tolist())
    idx.add(min(range(len(complete)), key=lambda j: float(np.mean(complete[j][1].psnr_db))))
    return [complete[j] for j in sorted(idx)]


def render_html(evals: Sequence[BagEvaluation], metrics: dict[str, Any], *, title: str, model: str = "",
                backend: str = "", compare: dict[str, dict[str, Any]] | None = None,
                extra_notes: Sequence[str] = ()) -> str:
    """The whole page as a string (figures rendered here)."""
    compare = compare or {}
    mode = evals[0].mode
    modes = {"offline": "offline: the model ran on the bag's frames in this process",
             "live": "live: plans recorded from the ROS 2 node while the bag was replayed"}
    bags = ", ".join(html.escape(e.name) for e in evals)
    when = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    parts = [f"<h1>{html.escape(title)}</h1>",
             f'<p class="meta">model <code>{html.escape(model or "-")}</code>'
             + (f" · backend <code>{html.escape(backend)}</code>" if backend else "")
             + f" · {html.escape(modes.get(mode, mode))} · drive{'s' if len(evals) > 1 else ''} {bags}"
             + f" · {when}</p>"]
    notes = [n for e in evals for n in e.notes] + list(extra_notes)
    parts += [f'<div class="note">{html.escape(n)}</div>' for n in notes]
    parts += ["<h2>Summary</h2>", kpis(metrics), verdict_list(metrics),
              '<p class="lead">Every plan is scored against the future the bag itself recorded: the odometry poses '
              "at the waypoint times (L2: mean displacement of the waypoints up to 1/2/3 s, the VAD/PWM protocol; "
              "@3 s: the waypoint at 3 s, the UniAD protocol) and the ground-truth boxes (collision: the swept "
              f"{M.EGO_LENGTH_M} × {M.EGO_WIDTH_M} m ego box). Baselines: constant velocity for planning, "
              "copy-last-frame for the forecast. Every comparison is marked both ways: "
              f'{mark_badge("better")} PWM is ahead of the baseline (bold green value), {mark_badge("worse")} the '
              f'baseline is ahead (bold red value), {mark_badge("same")} equal at the digits shown. '
              + html.escape(interval_note(metrics))
              + f' Every plan\'s numbers: <a href="{CSV_NAME}">{CSV_NAME}</a>.</p>',
              ]
    curve = fig_l2_curve(metrics)
    side = ""
    if curve:
        side = (f'<div class="wide side"><h3>Error over the planning horizon</h3>{_img(curve, "L2 over the horizon")}'
                '<p class="cap">How far each waypoint is from where the car really was at that time (mean over all '
                "plans). A planner that anticipates curves and braking stays below constant velocity as the horizon "
                "grows.</p></div>")
    parts.append(f'<div class="row">{summary_table(metrics, compare)}{side}</div>')
    parts += closed_loop_section(metrics.get("closed_loop"))
    samples = [(e, m) for e in evals for m in e.moments if m.why == "sample"]
    if samples and any(e.has_odometry for e in evals):
        parts += ["<h2>Plans in bird's-eye view</h2>",
                  '<p class="lead">Plans spread evenly over the drive: the camera frame the plan was made from '
                  "(left) and the same plan from above, ego frame, x forward (right).</p>", _legend(),
                  '<div class="cards">' + "".join(
                      plan_card(e, m) for e, m in samples) + "</div>"]
    parts += ["<h2>Surprise over time</h2>",
              '<p class="lead">Surprise measures how unlikely each new frame was under what the previous forecast '
              "predicted for it (negative log-likelihood of its codes); peaks mark moments the model did not see "
              "coming (cut-ins, braking, turns, a scene unlike the training's). Dotted line: the model's calibrated "
              "warning threshold. Shaded bands: route command left (blue) or right (orange).</p>"]
    for e in evals:
        worst = [m for m in e.moments if m.why == "surprise"]
        timeline = fig_timeline(e, worst, metrics.get("surprise_warn"))
        parts.append(f'<div class="wide">{_img(timeline, "surprise over time")}</div>')
        if worst:
            parts.append('<div class="cards small">' + "".join(
                f'<div class="card">{_img(_rgb_png(m.thumb_rgb), "worst moment")}<p class="cap"><b>#{r}</b> '
                f"t = {_rel_s(e, m.t_ns):.1f} s · surprise {m.value:.3f} · "
                f"{COMMANDS[int(e.command[m.index])]} · {e.speed_mps[m.index]:.1f} m/s</p></div>"
                for r, m in enumerate(worst, 1)) + "</div>")
        worst_l2 = [m for m in e.moments if m.why == "l2"][:2]
        if worst_l2:
            parts.append('<p class="lead">Largest planning errors (L2 up to 3 s):</p><div class="cards">' + "".join(
                plan_card(e, m) for m in worst_l2) + "</div>")
    strips = _pick_strips(evals)
    if strips:
        one = horizon_index(1.0, evals[0].model_dt_s, strips[0][1].forecast_rgb.shape[0])
        parts += ["<h2>Forecasts: what the model expected vs what came</h2>",
                  '<p class="lead">Top row: the camera frames that really came after the plan (at the tokenizer\'s '
                  "dyn resolution); bottom row: the model's forecast of them, decoded from its tokens, with the PSNR "
                  "against the truth. " + (f"Mean PSNR at +1 s: {fmt(metrics.get('psnr_forecast_1s_db'), 2)} dB "
                                           f"(copy-last-frame {fmt(metrics.get('copy_last_psnr_1s_db'), 2)} dB)."
                                           if one is not None else "") + "</p>"]
        parts += [f'<div class="wide">{_img(fig_strip(e, s), "forecast strip")}</div>' for e, s in strips]
    lat = fig_latency(evals, metrics)
    if lat:
        parts += ["<h2>Latency</h2>", f'<div class="wide">{_img(lat, "latency histogram")}</div>']
    videos = [e for e in evals if e.video is not None]
    if videos:
        parts += ["<h2>Overlay video</h2>", _legend()]
        for e in videos:
            v = e.video
            poster = next((m.thumb_rgb for m in e.moments if m.why == "sample"), None)
            poster_attr = f' poster="{_rgb_png(poster)}"' if poster is not None else ""
            speed = f", {e.video_speedup}× speed" if e.video_speedup > 1 else ""
            hint = "" if v.browser_playable else (" Browsers do not play MPEG-4 Part 2 video: open the file with "
                                                  "VLC or ffplay.")
            web = (f'<source src="{html.escape(v.web_path.name)}" type="video/webm">' if v.web_path else "")
            also = (f' (shown here: <a href="{html.escape(v.web_path.name)}">{html.escape(v.web_path.name)}</a>, '
                    "VP8)" if v.web_path else "")
            parts.append(f'<video controls muted loop preload="metadata"{poster_attr}>{web}'
                         f'<source src="{html.escape(v.path.name)}" type="video/mp4"></video>'
                         f'<p class="cap"><a href="{html.escape(v.path.name)}">{html.escape(v.path.name)}</a> · '
                         f"{v.codec}{also} · {v.frames} frames of {v.width_px}×{v.height_px} px at {v.fps:g} fps"
                         f"{speed} · {html.escape(e.name)}.{hint}</p>")
    parts += ["<h2>Inputs</h2>",
              '<p class="lead">What the evaluation was fed, per drive: the camera topic with its message type, '
              "encoding and resolution (and the size the model resizes it to), the camera's own frame rate from its "
              "header stamps next to the rate the frames arrived at (the bag's receive times: what the node sees "
              "during a replay) and the rate the model expects, and the odometry and route command topics.</p>",
              inputs_section(evals)]
    diags = node_diagnostics(evals, compare)
    if diags:
        parts += ["<h2>Node diagnostics over the run</h2>",
                  '<p class="lead">Every planner status the node published on /diagnostics while the drive was '
                  "replayed, as recorded: how many at each level, how many named each problem (numbers replaced by "
                  "#), the last status and the node's counters in it.</p>"]
        parts += [diagnostics_section(name, d) for name, d in diags]
    parts += ["<h2>Details</h2>", details(evals),
              f'<p class="cap">All numbers: <a href="metrics.json">metrics.json</a>; one row per plan (time, L2 at '
              f'1/2/3 s, collision, surprise, speed, yaw rate, command): <a href="{CSV_NAME}">{CSV_NAME}</a>.</p>']
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{html.escape(title)}"
            f"</title><style>{CSS}</style></head><body><main>{''.join(parts)}</main></body></html>\n")


def write_report(path: str | Path, evals: Sequence[BagEvaluation], metrics: dict[str, Any], **kw: Any) -> Path:
    """Render and write ``report.html`` and ``plans.csv`` beside it (each atomically); returns the report's path."""
    path = Path(path)
    write_plans_csv(path.with_name(CSV_NAME), evals)
    write_text_atomic(path, render_html(evals, metrics, **kw))
    return path
