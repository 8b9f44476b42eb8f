"""A PNG of the top of a report, taken with headless Chromium (the README's and docs/EVALUATION.md's picture).

    python -m pwm_model.eval.screenshot out/demo/report.html docs/images/report_demo.png

Needs Chromium (Debian: ``apt-get install chromium``); the page loads nothing from the network.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from pwm_model.errors import PwmError

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--mute-audio")


def chromium() -> str | None:
    """The Chromium executable, if one is installed."""
    return next((p for p in (shutil.which(n) for n in CHROMIUM_NAMES) if p), None)


def screenshot(page: str | Path, out: str | Path, width_px: int = 1280, height_px: int = 1600,
               timeout_s: float = 120.0) -> Path:
    """Render ``page`` at ``width_px`` x ``height_px`` and write the PNG to ``out`` (written atomically)."""
    exe = chromium()
    if exe is None:
        raise PwmError("Chromium is not installed (Debian: apt-get install chromium)")
    page, out = Path(page).resolve(), Path(out)
    if not page.is_file():
        raise PwmError(f"report {page} does not exist")
    from pwm_model.io_utils import atomic_path

    with tempfile.TemporaryDirectory() as profile, atomic_path(out) as tmp:
        png = tmp.with_suffix(".png")
        r = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width_px},{height_px}",
                            f"--screenshot={png}", page.as_uri()], capture_output=True, text=True, timeout=timeout_s)
        if r.returncode != 0 or not png.is_file():
            raise PwmError(f"Chromium could not take the screenshot: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
        png.rename(tmp)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("report", help="report.html")
    p.add_argument("out", help="PNG to write")
    p.add_argument("--width", type=int, default=1280, help="window width in px (default 1280)")
    p.add_argument("--height", type=int, default=1600, help="window height in px (default 1600)")
    args = p.parse_args(argv)
    try:
        print(screenshot(args.report, args.out, args.width, args.height))
    except PwmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
