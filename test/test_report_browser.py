"""report.html in a real browser: headless Chromium loads every figure and the overlay video, and takes a screenshot.

A copy of the report gets a small inline script that, once the page has loaded, writes into the DOM the natural
width of every image (and of each video's poster) and each video's ready state; ``--dump-dom`` reads it back.
Chromium is Debian's ``chromium`` package (``.ci/run`` installs it where missing); without it the test skips.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import cv2
import pytest

from pwm_model.eval.report import write_report
from pwm_model.eval.screenshot import CHROMIUM_FLAGS, chromium, screenshot

from .eval_bag_helpers import recorded_evaluation

CHROMIUM = chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install "
                                                          "chromium; .ci/run installs it where apt is available)")
PROBE = """<script>
(function () {
  const posters = [...document.querySelectorAll('video[poster]')].map(v => {
    const img = new Image(); img.src = v.getAttribute('poster'); return img; });
  function done() {
    const videos = [...document.querySelectorAll('video')];
    const waiting = videos.some(v => v.readyState < 1 && !v.error) || posters.some(p => !p.complete);
    if (waiting && performance.now() < 15000) { setTimeout(done, 100); return; }
    const pre = document.createElement('pre');
    pre.id = 'pwm-check';
    pre.textContent = JSON.stringify({
      images: [...document.images].map(i => [i.alt, i.complete, i.naturalWidth]),
      posters: posters.map(p => [p.complete, p.naturalWidth]),
      videos: videos.map(v => [v.readyState, v.videoWidth, v.error ? v.error.code : 0])});
    document.body.appendChild(pre);
  }
  window.addEventListener('load', done);
})();
</script>"""


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'profile'}", *args],
                          capture_output=True, text=True, timeout=120)


def test_every_figure_and_the_video_load_in_headless_chromium(tmp_path: Path) -> None:
    evals, metrics = recorded_evaluation(tmp_path)
    report = write_report(tmp_path / "eval" / "report.html", evals, metrics, title="arc drive", model="recorded")
    page = report.read_text()
    check = report.with_name("check.html")  # beside the report, so that overlay.mp4 resolves the same way
    check.write_text(page.replace("</body>", PROBE + "</body>"))
    r = _chromium(tmp_path, "--virtual-time-budget=20000", "--dump-dom", check.as_uri())
    found = re.search(r'<pre id="pwm-check">(.*?)</pre>', r.stdout, re.S)
    assert found, f"the probe never ran: {r.stderr[-2000:]}"
    result = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert len(result["images"]) == page.count("<img ") >= 12
    broken = [alt for alt, complete, width in result["images"] if not (complete and width > 0)]
    assert not broken, f"figures that did not load: {broken}"
    assert result["posters"] and all(ok and w > 0 for ok, w in result["posters"])
    codec = evals[0].video.codec
    for ready, width, error in result["videos"]:
        if evals[0].video.browser_playable:
            assert error == 0 and ready >= 1 and width == evals[0].video.width_px, (codec, ready, width, error)
    img = cv2.imread(str(screenshot(report, tmp_path / "report.png", 1280, 2000)))
    assert img is not None and img.shape[:2] == (2000, 1280)
    assert img.std() > 20, "the screenshot is blank"
