"""The forecast surprise's calibration at export: percentiles over held-out drives in manifest.json, the node's and
eval-bag's warning threshold from it, one clear error for sources it cannot use."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from pwm_model.errors import DataError
from pwm_model.export.surprise_calibration import (
    WARN_PERCENTILE,
    calibrate_surprise,
    calibration_section,
    expand_sources,
)
from pwm_model.runtime.manifest import load_manifest
from test.conftest import REPO_ROOT
from test.export_helpers import checkpoint, copy_model_dir


def test_calibration_records_percentiles_and_sets_the_default_threshold(tmp_path: Path) -> None:
    d = copy_model_dir(tmp_path / "model")
    m = load_manifest(d)
    assert m.surprise_definition == "bit_nll" and m.surprise_calibration == {}
    assert m.surprise_warn(-1.0) is None and m.surprise_warn(0.7) == 0.7  # uncalibrated: no warning unless set
    section = calibrate_surprise(d, ["synthetic:3"], frames_per_drive=60, echo=lambda s: None)
    pct = section["percentiles"]
    assert section["values"] >= 50 and section["unit"] == "nats per token"
    assert list(pct.values()) == sorted(pct.values()) and pct["p50"] > 0
    assert section["warn"] == pytest.approx(pct[f"p{WARN_PERCENTILE:g}"])
    assert section["drives"][0]["source"] == "synthetic:3"
    again = calibrate_surprise(d, ["synthetic:3"], frames_per_drive=60, echo=lambda s: None)
    assert again["percentiles"] == pct  # the same frames give the same figures
    m.record_surprise_calibration(section)
    m = load_manifest(d)
    assert m.surprise_warn(-1.0) == pytest.approx(section["warn"]) and m.surprise_warn(0.0) == 0.0

    from pwm_model.eval.drives import surprise_warn_metrics

    values = np.array([np.nan, 0.0, section["warn"] * 2, section["warn"] / 2])
    got = surprise_warn_metrics([SimpleNamespace(surprise=values)], str(d))
    assert got["surprise_warn_frac"] == pytest.approx(1 / 3) and got["surprise_warn"] == pytest.approx(section["warn"])


def test_bad_calibration_sources_and_too_few_values_are_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        expand_sources([tmp_path / "nowhere"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no rosbag2 drive"):
        expand_sources([tmp_path / "empty"])
    with pytest.raises(DataError, match="at least 50 needed"):
        calibration_section(np.ones(10), [], "bit_nll", 10)
    assert expand_sources(["synthetic:5"]) == ["synthetic:5"]


def test_export_cli_calibrates_with_surprise_calib(tmp_path: Path) -> None:
    out = tmp_path / "model"
    r = subprocess.run([sys.executable, "export/export_onnx.py", "--checkpoint", str(checkpoint()), "--out", str(out),
                        "--verify-frames", "2", "--no-preview", "--surprise-calib", "synthetic:2",
                        "--surprise-calib-frames", "60"], capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    cal = json.loads((out / "manifest.json").read_text())["surprise_calibration"]
    assert cal["definition"] == "bit_nll" and cal["values"] >= 50 and "node's default warning threshold" in r.stdout
    bad = subprocess.run([sys.executable, "export/export_onnx.py", "--checkpoint", str(checkpoint()), "--out",
                          str(tmp_path / "other"), "--verify-frames", "2", "--surprise-calib", str(tmp_path / "none")],
                         capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)
    assert bad.returncode == 2 and "does not exist" in bad.stderr and not (tmp_path / "other").exists()


def test_auroc_and_the_nodes_period_rule_on_hand_made_values() -> None:
    from pwm_model.eval.surprise_stats import auroc, period_warn_share

    assert auroc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert auroc(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == 0.0
    assert auroc(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.5  # ties count one half
    assert auroc(np.array([2.0, 5.0]), np.array([1.0, 3.0, 4.0])) == pytest.approx(4 / 6)
    # plans at 10 Hz over 3 s; a period of 1 s warns when its last plan is above the threshold
    t_ns = np.arange(30) * 100_000_000
    s = np.zeros(30)
    s[9] = 9.0  # the last plan of period 0: warns
    s[15] = 9.0  # the middle of period 1: the node has moved on by the time it publishes
    s[29] = np.nan  # period 2's last plan has no surprise: its last finite one (0) counts
    assert period_warn_share(t_ns, s, 5.0, 1.0) == (1, 3)
