"""Model directories for the node tests: a tiny, randomly initialised checkpoint exported to ONNX (real graphs).

``PWM_TEST_MODEL_DIR`` names an existing model directory instead (a CI cache, a Docker image without torch).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def tiny_model_dir(root: Path) -> Path:
    """A model directory of the tiny preset under ``root`` (made once; skips with the reason where impossible)."""
    given = os.environ.get("PWM_TEST_MODEL_DIR")
    if given:
        return Path(given)
    pytest.skip("export/export_onnx.py is not part of this build yet")
    raise AssertionError  # pragma: no cover


def nan_model_dir(model_dir: Path, out: Path) -> Path:
    """A copy of ``model_dir`` whose waypoint head outputs NaN (an engine that returns NaN, for real)."""
    pytest.skip("export/export_onnx.py is not part of this build yet")
    raise AssertionError  # pragma: no cover
