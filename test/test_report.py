"""report.html: self-contained (no network, figures as PNG data URIs), every section present, honest notes."""

from __future__ import annotations

import base64
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest

from pwm_model.eval.bag_summary import format_table
from pwm_model.eval.report import write_report

from .eval_bag_helpers import recorded_evaluation

SECTIONS = ("Summary", "Error over the planning horizon", "Plans in bird's-eye view", "Surprise over time",
            "Forecasts: what the model expected vs what came", "Latency", "Overlay video", "Details")


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(page: str) -> _Collect:
    p = _Collect()
    p.feed(page)
    return p


def _decode_png(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/png;base64,")
    img = cv2.imdecode(np.frombuffer(base64.b64decode(uri.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape[0] > 10 and img.shape[1] > 10
    return img


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("report")
    evals, metrics = recorded_evaluation(tmp)
    path = write_report(tmp / "eval" / "report.html", evals, metrics, title="arc drive", model="recorded")
    return path, metrics


def test_report_is_self_contained_and_every_figure_is_a_png(report: tuple[Path, dict]) -> None:
    path, _ = report
    page = path.read_text()
    doc = _parse(page)
    images = [a["src"] for t, a in doc.tags if t == "img"]
    assert len(images) >= 12
    for uri in images:
        _decode_png(uri)
    for tag, attrs in doc.tags:
        assert tag not in ("link", "iframe", "object"), tag
        assert not (tag == "script" and attrs.get("src")), "no external script"
        for key in ("src", "href", "poster"):
            value = attrs.get(key, "")
            assert not re.match(r"^(https?:)?//", value), f"{tag} {key}={value} reaches the network"
    sources = [a["src"] for t, a in doc.tags if t == "source"]
    assert sources[-1] == "overlay.mp4" and (path.parent / "overlay.mp4").stat().st_size > 0
    for src in sources:  # relative, beside the report; a WebM for browsers comes first when the MP4 is mp4v
        assert "/" not in src and (path.parent / src).is_file()
    posters = [a["poster"] for t, a in doc.tags if t == "video"]
    assert len(posters) == 1 and _decode_png(posters[0]).shape[1] > 0


def test_every_section_is_there_with_the_numbers(report: tuple[Path, dict]) -> None:
    path, metrics = report
    doc = _parse(path.read_text())
    headings = [t for t in doc.text if t.strip()]
    for section in SECTIONS:
        assert section in headings, section
    text = " ".join(doc.text)
    assert metrics["l2_3s"] == pytest.approx(0.3, abs=1e-4)
    assert f"{metrics['l2_3s']:.3f}" in text and f"{metrics['cv_l2_3s']:.3f}" in text
    assert "#1" in text and "surprise" in text  # the worst moments are numbered
    table = format_table(metrics)
    assert "0.300" in table and "constant velocity" in table


def test_report_of_a_drive_without_odometry_says_what_is_missing(tmp_path: Path) -> None:
    evals, metrics = recorded_evaluation(tmp_path, video=False, frames=40)
    ev = evals[0]
    ev.has_odometry = False
    ev.truth_valid[:] = False
    ev.notes.append("This bag has no odometry on /odom: plans cannot be scored.")
    from pwm_model.eval.bag_summary import summarize

    metrics = summarize(evals)
    assert metrics["l2_3s"] is None and metrics["psnr_forecast_1s_db"] is not None
    page = write_report(tmp_path / "r.html", evals, metrics, title="no odometry").read_text()
    assert "has no odometry on /odom" in page and "Plans in bird's-eye view" not in page
    assert "Error over the planning horizon" not in page and "Forecasts: what the model expected" in page


def _row(page: str, label: str) -> str:
    """The HTML of the summary table's row labelled ``label``."""
    found = re.search(r"<tr><td>" + re.escape(label) + r"</td>(.*?)</tr>", page)
    assert found, label
    return found.group(1)


def test_a_loss_is_marked_as_plainly_as_a_win(report: tuple[Path, dict], tmp_path: Path) -> None:
    from pwm_model.eval.bag_summary import verdict_sentence

    path, metrics = report
    evals_page = path.read_text()
    assert "L2 up to 3 s: PWM better than constant velocity" in evals_page
    # the demo drive's case: PWM ahead on L2, the baseline ahead on collisions (9 % vs 7 %)
    m = dict(metrics, collision_rate=0.09, cv_collision_rate=0.07, psnr_forecast_1s_db=20.0,
             copy_last_psnr_1s_db=21.0)
    from .eval_bag_helpers import recorded_evaluation

    evals, _ = recorded_evaluation(tmp_path, video=False, frames=40)
    page = write_report(tmp_path / "r.html", evals, m, title="a loss").read_text()
    collision = _row(page, "collision rate")
    assert '<td class="worse">9.0 %</td>' in collision and "7.0 %" in collision
    assert '<span class="mark worse">' in collision and "worse</span>" in collision
    l2 = _row(page, "L2 3 s (m)")
    assert '<td class="better">' in l2 and '<span class="mark better">' in l2
    assert '<span class="mark worse">' in _row(page, "forecast PSNR 1 s (dB)")
    # the summary sentence names every headline metric, the unfavourable ones too
    sentence = verdict_sentence(m)
    assert "L2 up to 3 s: PWM better than constant velocity" in sentence
    assert "collision rate: PWM worse than constant velocity (9.0 % vs 7.0 %" in sentence
    assert "forecast PSNR at 1 s: PWM worse than copy-last-frame (20.0 dB vs 21.0 dB" in sentence
    text = " ".join(_parse(page).text)
    assert "collision rate: PWM worse than constant velocity (9.0 % vs 7.0 %" in text
    assert text.count("✗ worse") >= 3  # the table row, the headline card, the verdict line (and the legend)
    # the printed table: a word beside every comparison, and the verdict under it
    table = format_table(m)
    line = next(ln for ln in table.splitlines() if ln.startswith("collision rate"))
    assert line.rstrip().endswith("worse") and "9.0 %" in line and "7.0 %" in line
    assert next(ln for ln in table.splitlines() if ln.startswith("L2 3 s")).rstrip().endswith("better")
    assert "verdict: " + sentence in table
    same = dict(m, collision_rate=0.0, cv_collision_rate=0.0)
    assert "collision rate: PWM the same as constant velocity" in verdict_sentence(same)
    unscored = dict(m, collision_rate=None, cv_collision_rate=None)
    assert "collision rate: not scored (no ground-truth boxes)" in verdict_sentence(unscored)


def test_intervals_are_over_blocks_of_drive_time_beside_the_means(tmp_path: Path) -> None:
    from pwm_model.eval.bag_intervals import BLOCK_S, MIN_BLOCKS, interval_metrics

    evals, metrics = recorded_evaluation(tmp_path, video=False, frames=160)  # 16 s: 4 blocks of 5 s
    iv = metrics["intervals"]
    assert iv["block_s"] == BLOCK_S == 5.0 and iv["level"] == 0.95
    for key in ("l2_1s", "l2_3s", "cv_l2_3s", "l2_uniad_3s", "collision_rate", "cv_collision_rate",
                "psnr_forecast_1s_db", "copy_last_psnr_1s_db"):
        assert iv[key]["mean"] == pytest.approx(metrics[key], abs=2e-4), key  # the interval is around the headline
        assert iv[key]["lo"] <= iv[key]["mean"] <= iv[key]["hi"], key
    assert iv["l2_3s"]["blocks"] == 4 and iv["cv_l2_3s"]["lo"] < iv["cv_l2_3s"]["hi"]
    d = iv["diff_l2_3s"]
    assert d["mean"] == pytest.approx(metrics["l2_3s"] - metrics["cv_l2_3s"], abs=2e-4) and d["hi"] < 0
    page = write_report(tmp_path / "eval" / "report.html", evals, metrics, title="intervals").read_text()
    cv = iv["cv_l2_3s"]
    assert f"[{cv['lo']:.3f}, {cv['hi']:.3f}]" in _row(page, "L2 3 s (m)")
    assert f"{d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]" in _row(page, "L2 3 s (m)")
    assert f"95 % [{iv['l2_3s']['lo']:.2f}, {iv['l2_3s']['hi']:.2f}]" in page  # on the headline card
    assert "5 s blocks of drive time (4 blocks here)" in page and "consecutive plans overlap" in page
    line = next(ln for ln in format_table(metrics).splitlines() if ln.startswith("L2 3 s"))
    assert f"[{iv['l2_3s']['lo']:.3f}, {iv['l2_3s']['hi']:.3f}]" in line
    assert f"{d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]" in line
    # shorter drives have too few blocks for an interval: none is shown rather than a degenerate one
    few = interval_metrics(evals, block_s=16.0 / (MIN_BLOCKS - 1))
    assert few["l2_3s"]["blocks"] < MIN_BLOCKS and math.isnan(few["l2_3s"]["lo"]) and math.isnan(few["l2_3s"]["hi"])
    assert few["l2_3s"]["mean"] == pytest.approx(metrics["l2_3s"], abs=2e-4)


def test_plans_csv_is_written_beside_the_report_and_linked(report: tuple[Path, dict]) -> None:
    import csv

    from pwm_model.eval.plan_table import COLUMNS

    path, metrics = report
    rows = list(csv.reader((path.parent / "plans.csv").open()))
    assert tuple(rows[0]) == COLUMNS and len(rows) - 1 == metrics["plans"]
    assert 'href="plans.csv"' in path.read_text()


def test_the_closed_loop_section_shows_each_planner_and_links_its_report() -> None:
    from pwm_model.eval.report_sections import closed_loop_section

    assert closed_loop_section(None) == []
    page = "".join(closed_loop_section({"planner": "pwm-tiny (ROS 2)", "epdms": 0.5351, "CTRA_epdms": 0.9526,
                                        "expert_epdms": 1.0, "scenarios": 3, "driving_score": 0.78,
                                        "collisions_at_fault": 1}))
    assert "<h2>Closed loop</h2>" in page and 'href="sim/report.html"' in page
    for name, value in (("pwm-tiny (ROS 2)", "0.535"), ("CTRA", "0.953"), ("expert", "1.000")):
        assert f"<td>{name}</td><td>{value}</td>" in page
