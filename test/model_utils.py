"""Model directories for the node tests: a tiny, randomly initialised checkpoint exported to ONNX (real graphs).

``PWM_TEST_MODEL_DIR`` names an existing model directory instead (a CI cache, a Docker image without torch).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest


def tiny_model_dir(root: Path) -> Path:
    """A model directory of the tiny preset under ``root`` (made once; skips with the reason where impossible)."""
    given = os.environ.get("PWM_TEST_MODEL_DIR")
    if given:
        return Path(given)
    pytest.skip("export/export_onnx.py is not part of this build yet")
    raise AssertionError  # pragma: no cover


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def nan_model_dir(model_dir: Path, out: Path) -> Path:
    """A copy of ``model_dir`` whose waypoint head outputs NaN (an engine that returns NaN, for real).

    The float weights of the graph that outputs the waypoints are set to NaN (those of its head when their names
    say so), and manifest.json gets the new sha256, so that the model still loads and validates.
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    shutil.copytree(model_dir, out)
    manifest = (out / "manifest.json").read_text()
    poisoned = 0
    for path in sorted(out.rglob("*.onnx")):
        model = onnx.load(str(path))
        if not any("waypoint" in o.name for o in model.graph.output):
            continue
        floats = [i for i in model.graph.initializer if numpy_helper.to_array(i).dtype.kind == "f"]
        head = [i for i in floats if any(word in i.name for word in ("head", "waypoint", "action", "act_"))]
        for init in head or floats:
            arr = numpy_helper.to_array(init)
            init.CopyFrom(numpy_helper.from_array(np.full_like(arr, np.nan), init.name))
            poisoned += 1
        old = _sha256(path)
        onnx.save(model, str(path))
        manifest = manifest.replace(old, _sha256(path))
    assert poisoned, f"no graph in {model_dir} outputs waypoints"
    (out / "manifest.json").write_text(manifest)
    return out
