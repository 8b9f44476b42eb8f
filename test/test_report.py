"""report.html: self-contained (no network, figures as PNG data URIs), every section present, honest notes."""

from __future__ import annotations

import base64
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
