"""The report's tables in HTML: the summary table and the headline cards with their marks and intervals, the
verdict, the inputs, the node's diagnostics over a live run and the per-bag details (``report.render_html`` puts
them on the page).

Every comparison with a baseline is a word in a coloured badge (``mark_badge``): "✓ better" in green, "✗ worse" in
red, "= same" in grey, so a loss reads as plainly as a win (and not by colour alone).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pwm_model.eval.bag_summary import (
    TABLE_ROWS,
    baseline_name,
    format_interval,
    headline_verdicts,
    interval_of,
    verdict_phrase,
)
from pwm_model.eval.bag_summary import compare as compare_values
from pwm_model.eval.bag_types import BagEvaluation


def fmt(value: Any, digits: int = 3, scale: float = 1.0, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value * scale:.{digits}f}{unit}"


MARK_TEXT = {"better": "\u2713 better", "worse": "\u2717 worse", "same": "= same"}


def mark_badge(mark: str | None) -> str:
    """A comparison with the baseline as a word in a coloured badge: a loss as visible as a win."""
    if mark is None:
        return ""
    return f'<span class="mark {mark}">{MARK_TEXT[mark]}</span>'


def summary_table(metrics: dict[str, Any], compare: dict[str, dict[str, Any]]) -> str:
    head = ("<tr><th>metric</th><th>PWM</th><th>95 % interval</th><th>baseline</th><th>PWM is</th>"
            "<th>PWM \u2212 baseline (95 %)</th>" + "".join(f"<th>{html.escape(n)}</th>" for n in compare) + "</tr>")
    body = []
    for label, key, base, digits, scale, unit in TABLE_ROWS:
        v, b = metrics.get(key), metrics.get(base) if base else None
        mark = compare_values(v, b, key, digits, scale) if base else None
        diff = ""
        diff_iv = interval_of(metrics, f"diff_{key}")
        if diff_iv is not None:
            d = (metrics.get("intervals") or {})[f"diff_{key}"]["mean"]
            diff = f"{d * scale:+.{digits}f} {format_interval(diff_iv, digits, scale, signed=True)}"
        cells = [f"<td>{html.escape(label)}</td>",
                 f'<td class="{mark if mark in ("better", "worse") else ""}">{fmt(v, digits, scale, unit)}</td>',
                 f'<td class="iv">{format_interval(interval_of(metrics, key), digits, scale)}</td>',
                 f"<td>{fmt(b, digits, scale, unit) if base else ''}"
                 + (f' <span class="iv">{format_interval(interval_of(metrics, base), digits, scale)}</span>'
                    if base and interval_of(metrics, base) else "") + "</td>",
                 f"<td>{mark_badge(mark)}</td>", f'<td class="iv">{html.escape(diff)}</td>']
        for c in compare.values():
            cm = compare_values(c.get(key), c.get(base), key, digits, scale) if base else None
            cells.append(f"<td>{fmt(c.get(key), digits, scale, unit)} {mark_badge(cm)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    plans = [f"<td>plans scored</td><td>{metrics.get('plans', 0)}</td><td></td><td></td><td></td><td></td>"] + [
        f"<td>{c.get('plans', 0)}</td>" for c in compare.values()]
    body.append("<tr>" + "".join(plans) + "</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def verdict_list(metrics: dict[str, Any]) -> str:
    """Every headline metric with the side that is ahead (``bag_summary.verdict_phrase``), one line each."""
    items = []
    for h in headline_verdicts(metrics):
        items.append(f"<li>{mark_badge(h['mark'])} {html.escape(verdict_phrase(h))}</li>")
    return '<ul class="verdict">' + "".join(items) + "</ul>"


def kpis(metrics: dict[str, Any]) -> str:
    def vs(key: str, base: str, digits: int, scale: float, unit: str) -> str:
        mark = compare_values(metrics.get(key), metrics.get(base), key, digits, scale)
        return f"{baseline_name(base)} {fmt(metrics.get(base), digits, scale, unit)} {mark_badge(mark)}"

    def iv(key: str, digits: int, scale: float = 1.0) -> str:
        text = format_interval(interval_of(metrics, key), digits, scale)
        return f' <span class="iv">95 % {text}</span>' if text else ""

    items = [("L2 up to 3 s", fmt(metrics.get("l2_3s"), 2, unit=" m") + iv("l2_3s", 2),
              vs("l2_3s", "cv_l2_3s", 2, 1.0, " m")),
             ("collision rate", fmt(metrics.get("collision_rate"), 1, 100.0, " %") + iv("collision_rate", 1, 100.0),
              vs("collision_rate", "cv_collision_rate", 1, 100.0, " %")),
             ("forecast PSNR at 1 s", fmt(metrics.get("psnr_forecast_1s_db"), 1, unit=" dB")
              + iv("psnr_forecast_1s_db", 1),
              "the node does not record its forecast" if metrics.get("mode") == "live" else
              vs("psnr_forecast_1s_db", "copy_last_psnr_1s_db", 1, 1.0, " dB")),
             ("latency p50", fmt(metrics.get("latency_p50_ms"), 1, unit=" ms"),
              f"p99 {fmt(metrics.get('latency_p99_ms'), 1, unit=' ms')}"),
             ("plans", str(metrics.get("plans", 0)), f"{fmt(metrics.get('plan_rate_hz'), 1)} Hz on bag time")]
    return '<div class="kpi">' + "".join(f"<div><span>{a}</span><b>{b}</b><span>{c}</span></div>"
                                          for a, b, c in items) + "</div>"


def interval_note(metrics: dict[str, Any]) -> str:
    iv = metrics.get("intervals") or {}
    block = iv.get("block_s", 5.0)
    blocks = (iv.get("l2_3s") or {}).get("blocks") or (iv.get("psnr_forecast_1s_db") or {}).get("blocks") or 0
    return (f"95 % intervals: a bootstrap ({iv.get('replicates', 2000)} replicates) that resamples whole "
            f"{block:g} s blocks of drive time ({blocks} block{'s' if blocks != 1 else ''} here), not single plans, "
            "because consecutive plans overlap (a plan every 0.1 s shares most of its future with the next ones) "
            "and are not independent; a difference to the baseline is paired by plan. With fewer than "
            f"{iv.get('min_blocks', 3)} blocks no interval is given. \"Within chance\": the interval of the "
            "difference holds 0.")


def details(evals: Sequence[BagEvaluation]) -> str:
    head = ("<tr><th>drive</th><th>frames</th><th>plans</th><th>seconds</th><th>odometry</th><th>boxes</th>"
            "<th>forecasts scored</th><th>evaluated in</th></tr>")
    rows = []
    for e in evals:
        rows.append(f"<td>{html.escape(e.bag)}</td><td>{e.frames}</td><td>{len(e.plan_t_ns)}</td>"
                    f"<td>{(e.end_ns - e.start_ns) / 1e9:.1f}</td><td>{'yes' if e.has_odometry else 'no'}</td>"
                    f"<td>{'yes' if e.has_boxes else 'no'}</td><td>{len(e.forecast_t_ns)}</td>"
                    f"<td>{e.extra.get('seconds', '-')} s</td>")
    table = f"<table>{head}{''.join('<tr>' + r + '</tr>' for r in rows)}</table>"
    diags = [(e, e.extra.get("diagnostics")) for e in evals if e.extra.get("diagnostics")]
    for e, d in diags:
        keys = ("frames_received", "frames_planned", "dropped_frames", "stale_frames", "runner_p50_ms",
                "latency_p50_ms", "latency_p99_ms")
        table += (f'<p class="cap">The node\'s last diagnostics ({html.escape(e.name)}): ' + " · ".join(
            f"{k} {html.escape(str(d[k]))}" for k in keys if k in d) + "</p>")
    return table


def _rate(value: Any) -> str:
    return fmt(value, 2, unit=" Hz")


def _topic(d: dict[str, Any], key: str, count_key: str, type_key: str | None = None) -> str:
    name = html.escape(str(d.get(key)))
    n = d.get(count_key) or 0
    if not n:
        return f"<code>{name}</code> · absent from the bag"
    kind = f" · {html.escape(str(d.get(type_key)))}" if type_key and d.get(type_key) else ""
    return f"<code>{name}</code>{kind} · {n} messages"


OVERLAY_SOURCES = {"camera_info": "the bag's camera_info", "--camera-intrinsics": "--camera-intrinsics",
                   "synthetic": "the model's synthetic camera (no camera_info in the bag, no --camera-intrinsics)"}


def _overlay_camera(c: dict[str, Any]) -> str:
    if not c:
        return "not recorded"
    src = OVERLAY_SOURCES.get(str(c.get("source")), str(c.get("source")))
    return html.escape(f"{src}: fx {fmt(c.get('fx_px'), 1)}, fy {fmt(c.get('fy_px'), 1)}, cx {fmt(c.get('cx_px'), 1)}"
                       f", cy {fmt(c.get('cy_px'), 1)} px; mounted at {c.get('mount_xyz_m')} m in base_link")


def inputs_section(evals: Sequence[BagEvaluation]) -> str:
    rows = []
    for e in evals:
        d = e.inputs
        if not d:
            continue
        cam = (f"<code>{html.escape(str(d.get('camera_topic')))}</code> · {html.escape(str(d.get('camera_type')))}"
               f" · encoding <code>{html.escape(str(d.get('encoding')))}</code>")
        res = f"{d.get('width_px')} × {d.get('height_px')} px"
        model_px = d.get("model_input_px") or []
        if len(model_px) == 2:
            res += f" (the model takes {model_px[0]} × {model_px[1]} px)"
        if d.get("model_input_fit"):
            res += f"; {html.escape(str(d['model_input_fit']))}"
        stamps = (f"{_rate(d.get('camera_stamp_rate_hz'))} (median interval {fmt(d.get('camera_period_p50_ms'), 1)}"
                  f" ms, longest {fmt(d.get('camera_period_max_ms'), 1)} ms, {d.get('camera_stamp_gaps', 0)} gaps "
                  f"over 1.5 × the median, {d.get('camera_stamps_backwards', 0)} stamps not after the previous)")
        arrival = f"{_rate(d.get('input_rate_hz'))} (longest interval {fmt(d.get('input_period_max_ms'), 1)} ms)"
        if d.get("configured_rate_hz"):
            arrival += f"; the model expects {_rate(d.get('configured_rate_hz'))}"
        node = (e.extra.get("node_diagnostics") or {}).get("input_rate_p50_hz")
        if node is not None:
            arrival += f"; the node measured {_rate(node)} (median over its diagnostics while frames came)"

        odom = _topic(d, "odometry_topic", "odometry_messages", "odometry_type")
        if d.get("odometry_rate_hz"):
            odom += f" ({_rate(d.get('odometry_rate_hz'))})"
        cmd = _topic(d, "command_topic", "command_messages", "command_type")
        if not d.get("command_messages"):
            cmd += " (the command is straight throughout)"
        info = [("camera", cam), ("resolution", res), ("frames", str(d.get("frames"))),
                ("camera rate (header stamps)", stamps), ("input rate (arrival, bag receive time)", arrival),
                ("odometry", odom), ("route command", cmd),
                ("ground-truth boxes", _topic(d, "objects_topic", "objects_messages")),
                ("camera_info", f"<code>{html.escape(str(d.get('camera_info_topic')))}</code> · "
                                f"{'present' if d.get('camera_info') else 'absent'}"),
                ("overlay camera", _overlay_camera(d.get("overlay_camera") or {}))]
        body = "".join(f"<tr><td>{k}</td><td style=\"text-align:left\">{v}</td></tr>" for k, v in info)
        rows.append(f'<h3>{html.escape(e.name)}</h3><table class="inputs">{body}</table>')
    return "".join(rows) or '<p class="cap">No input facts were recorded.</p>'


def node_diagnostics(evals: Sequence[BagEvaluation], compare: dict[str, dict[str, Any]]
                      ) -> list[tuple[str, dict[str, Any]]]:
    """The node's diagnostics over each live run shown: this evaluation's (``eval-bag --predictions``) or a compared
    live run's (``pwm demo``: the ``live node`` column)."""
    out = [(e.name, e.extra["node_diagnostics"]) for e in evals if e.extra.get("node_diagnostics")]
    for label, m in compare.items():
        for bag in m.get("bags") or []:
            if bag.get("node_diagnostics"):
                out.append((f"{label}: {Path(str(bag.get('bag'))).name}", bag["node_diagnostics"]))
    return out


LEVEL_CLASS = {"OK": "better", "WARN": "same", "ERROR": "worse", "STALE": "worse"}


def diagnostics_section(name: str, d: dict[str, Any]) -> str:
    levels = d.get("levels") or {}
    final = str(d.get("final_level"))
    head = (f"<h3>{html.escape(name)}</h3><p class=\"cap\">{d.get('messages', 0)} statuses over "
            f"{fmt(d.get('span_s'), 1)} s: " + " · ".join(f"{html.escape(k)} {v}" for k, v in levels.items())
            + f' · final level <span class="mark {LEVEL_CLASS.get(final, "same")}">{html.escape(final)}</span>: '
            f"{html.escape(str(d.get('final_message') or ''))}"
            + (f" · last fault: {html.escape(str(d['last_fault']))}" if d.get("last_fault") else "") + "</p>")
    problems = d.get("problems") or {}
    ptable = ("<table><tr><th>problem named (WARN / ERROR statuses)</th><th>statuses</th></tr>" + "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in problems.items()) + "</table>"
              if problems else '<p class="cap">No status named a problem.</p>')
    counters = d.get("counters") or {}
    ctable = ("<table><tr><th>node counter (last status)</th><th>count</th></tr>" + "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in counters.items()) + "</table>")
    rates = (f'<p class="cap">Median input rate {_rate(d.get("input_rate_p50_hz"))}, plan rate '
             f'{_rate(d.get("plan_rate_p50_hz"))} (the node\'s own measurements, over the statuses while frames '
             "came).</p>")
    return head + f'<div class="row">{ptable}{ctable}</div>' + rates




def closed_loop_section(closed: dict[str, Any] | None) -> list[str]:
    """The demo's closed-loop step (``pwm_sim``'s JSON line): EPDMS per planner, linking its own report."""
    if not closed:
        return []
    rows = [(str(closed.get("planner", "PWM")), closed.get("epdms"))]
    rows += [(k[: -len("_epdms")], v) for k, v in closed.items() if k.endswith("_epdms")]
    cells = "".join(f"<tr><td>{html.escape(name)}</td><td>{fmt(v)}</td></tr>" for name, v in rows)
    return ["<h2>Closed loop</h2>",
            f'<p class="lead">The node drove {closed.get("scenarios")} held-out scenarios itself (pwm_sim, '
            f'lock-step simulated time, reactive traffic), beside CTRA and the world\'s own driver: EPDMS per '
            f'planner (NAVSIM v2, 4 s windows); driving score {fmt(closed.get("driving_score"))}, at-fault '
            f'collisions {closed.get("collisions_at_fault")}. The drives, infractions and bird\'s-eye views: '
            '<a href="sim/report.html">sim/report.html</a>.</p>',
            f"<table><tr><th>planner</th><th>EPDMS</th></tr>{cells}</table>"]
