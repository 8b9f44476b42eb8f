"""The monitors' calibration at export: surprise and novelty percentiles over held-out drives in manifest.json, the
novelty prior from the training store, the node's and eval-bag's warning thresholds from them, one clear error for
sources they cannot use."""

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
    calibrate_monitors,
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
    sections = calibrate_monitors(d, ["synthetic:3"], frames_per_drive=60, echo=lambda s: None)
    assert list(sections) == ["surprise_calibration"]  # no novelty prior in this model
    section = sections["surprise_calibration"]
    pct = section["percentiles"]
    assert section["values"] >= 50 and section["unit"] == "nats per token"
    assert list(pct.values()) == sorted(pct.values()) and pct["p50"] > 0
    assert section["warn"] == pytest.approx(pct[f"p{WARN_PERCENTILE:g}"])
    assert section["drives"][0]["source"] == "synthetic:3"
    again = calibrate_monitors(d, ["synthetic:3"], frames_per_drive=60, echo=lambda s: None)
    assert again["surprise_calibration"]["percentiles"] == pct  # the same frames give the same figures
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
    with pytest.raises(DataError, match="no rosbag2 bags"):
        expand_sources([tmp_path / "empty"])
    (tmp_path / "notes.txt").write_text("not a drive")
    with pytest.raises(DataError, match="is not a rosbag2 bag"):
        expand_sources([tmp_path / "notes.txt"])
    from pwm_model.export.surprise_calibration import check_calibration_args

    with pytest.raises(DataError, match="no forecast surprise"):
        check_calibration_args(["synthetic:1"], 10, forecast_frames=0)
    with pytest.raises(DataError, match="at least 50 needed"):
        calibration_section(np.ones(10), [], "bit_nll", 10)
    assert expand_sources(["synthetic:5"]) == ["synthetic:5"]


def test_export_cli_writes_the_novelty_prior_and_calibrates_both_monitors(tmp_path: Path) -> None:
    pwm = [sys.executable, "-m", "pwm_model.cli"]
    for cmd in (["gen-data", "--out", str(tmp_path / "train"), "--scenes", "1", "--seconds", "5", "--seed", "1500"],
                ["index", str(tmp_path / "train"), "--out", str(tmp_path / "store")]):
        r = subprocess.run(pwm + cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path / "model"
    r = subprocess.run([sys.executable, "export/export_onnx.py", "--checkpoint", str(checkpoint()), "--out", str(out),
                        "--verify-frames", "2", "--no-preview", "--novelty-prior", str(tmp_path / "store"),
                        "--surprise-calib", "synthetic:2", "--surprise-calib-frames", "60"],
                       capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    man = json.loads((out / "manifest.json").read_text())
    assert man["surprise_calibration"]["definition"] == "bit_nll" and man["surprise_calibration"]["values"] >= 50
    assert man["novelty"]["file"] == "novelty_prior.npy" and man["novelty"]["frames"] > 0
    cal = man["novelty_calibration"]
    assert cal["definition"] == "ctx_code_nll+reconstruction" and cal["warn"] > cal["percentiles"]["p50"]
    assert set(cal["components"]) == {"code_nll", "reconstruction"}
    assert all(c["p99"] > c["p50"] > 0 for c in cal["components"].values())
    assert "node's default warning threshold" in r.stdout
    from pwm_model.config import RuntimeConfig
    from pwm_model.data.frames import camera_frames
    from pwm_model.runtime.runner import PolicyRunner

    with PolicyRunner.from_model_dir(out, RuntimeConfig()) as runner:
        assert runner.manifest.novelty_warn() == pytest.approx(man["novelty_calibration"]["warn"])
        assert runner.manifest.novelty_warn(3.0) == 3.0  # the node's novelty_warn parameter, when set, wins
        plans = [runner.step(*f) for f in camera_frames("synthetic:2", runner.config, 3)]
        # every frame has a novelty, the first ones too: its parts on the calibration's scale, added
        from pwm_model.runtime.novelty import combine

        for p in plans:
            assert p.novelty_code_nll > 0 and 0 < p.novelty_reconstruction < 2
            assert p.novelty == pytest.approx(combine(p.novelty_code_nll, p.novelty_reconstruction,
                                                      cal["components"]))
    (out / "novelty_prior.npy").write_bytes(b"garbage")
    from pwm_model.errors import ModelError

    with pytest.raises(ModelError, match="novelty prior .* is missing or corrupt"):
        PolicyRunner.from_model_dir(out, RuntimeConfig())
    bad = subprocess.run([sys.executable, "export/export_onnx.py", "--checkpoint", str(checkpoint()), "--out",
                          str(tmp_path / "other"), "--verify-frames", "2", "--surprise-calib", str(tmp_path / "none")],
                         capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)
    assert bad.returncode == 2 and "does not exist" in bad.stderr and not (tmp_path / "other").exists()


def test_novelty_prior_scores_codes_by_their_slots_training_frequency(tmp_path: Path) -> None:
    from pwm_model.errors import ModelError
    from pwm_model.runtime.novelty import NoveltyPrior, build_prior

    train = np.zeros((200, 2), np.int64)
    train[:, 0] = 3  # slot 0 always shows code 3
    train[:, 1] = np.arange(200) % 4  # slot 1 codes 0 .. 3 alike
    prior = NoveltyPrior(build_prior(train, codebook_size=8))
    seen, elsewhere, never = prior.score(np.array([3, 1])), prior.score(np.array([1, 3])), prior.score(
        np.array([7, 7]))
    assert seen < elsewhere < never  # code 1 in slot 0 was seen, only in another slot; code 7 never
    assert seen == pytest.approx(0.5 * (-np.log(200 / 250 + 50 / 250 * prior_q(train, 8, 3))
                                        - np.log(50 / 250 + 50 / 250 * prior_q(train, 8, 1))), rel=2e-3)
    np.save(tmp_path / "p.npy", build_prior(train, 8))
    with pytest.raises(ModelError, match="has shape"):
        NoveltyPrior.load(tmp_path / "p.npy", slots=3, codebook_size=8)
    with pytest.raises(ValueError, match="ctx codes must be in"):
        build_prior(train + 8, codebook_size=8)


def prior_q(train: np.ndarray, codebook_size: int, code: int) -> float:
    """The codebook-wide frequency the prior backs off to (half a pseudo-count per code)."""
    counts = np.bincount(train.ravel(), minlength=codebook_size) + 0.5
    return float(counts[code] / counts.sum())


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
