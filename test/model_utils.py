"""Model directories for the node tests: a tiny, randomly initialised checkpoint exported to ONNX (real graphs).

The export (export/export_onnx.py, with its checks and its comparison with PyTorch) takes about a minute on two
cores, so its result is kept under ``out/test_cache/`` keyed by the sources that shape it; any change to
``pwm_model`` or ``export`` makes a new one. ``PWM_TEST_MODEL_DIR`` names an existing model directory instead
(a Docker image without torch).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE = REPO_ROOT / "out" / "test_cache"
STALE_AFTER_S = 6 * 3600.0


def random_world_model(cfg, std: float = 0.02):  # noqa: ANN001, ANN201 - PwmConfig -> PolicyWorldModel
    """A world model whose waypoint head's last layer is random too (a fresh one is zero and plans the prior
    exactly), so that tests see plans that depend on the model's inputs."""
    import torch

    from pwm_model.world_model.model import PolicyWorldModel

    model = PolicyWorldModel(cfg)
    with torch.no_grad():
        model.waypoint_head[-1].weight.normal_(0.0, std)
        if model.ego_branch is not None:  # world_model.ego_branch: random too, so exports carry it
            model.ego_branch[-1].weight.normal_(0.0, std)
    return model


def _sources_key() -> str:
    h = hashlib.sha256()
    for path in sorted([*REPO_ROOT.glob("pwm_model/**/*.py"), *REPO_ROOT.glob("pwm_model/**/*.json"),
                        *REPO_ROOT.glob("export/*.py")]):
        h.update(str(path.relative_to(REPO_ROOT)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def tiny_model_dir(root: Path | None = None) -> Path:
    """A model directory of the tiny preset (random weights, seed 0), exported once per source version.

    Skips with the reason where it cannot be made (no torch, no export script).
    """
    given = os.environ.get("PWM_TEST_MODEL_DIR")
    if given:
        return Path(given)
    pytest.importorskip("torch", reason="torch is needed to export the test model (or set PWM_TEST_MODEL_DIR)")
    out = CACHE / f"tiny-{_sources_key()}"
    if (out / "manifest.json").is_file():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test process may be exporting the same model
        if not (out / "manifest.json").is_file():
            _export_tiny(out)
    for stale in CACHE.glob("tiny-*"):  # older versions, unless another test run may still be using one
        if stale != out and stale.is_dir() and time.time() - stale.stat().st_mtime > STALE_AFTER_S:
            shutil.rmtree(stale, ignore_errors=True)
    return out


def _export_tiny(out: Path) -> None:
    import torch

    from pwm_model.checkpoint import save_checkpoint
    from pwm_model.config import preset
    from pwm_model.export.onnx import export_model
    from pwm_model.tokenizer.model import Tokenizer

    torch.manual_seed(0)
    cfg = preset("tiny")
    ckpt = out.parent / f".{out.name}.checkpoint"
    save_checkpoint(ckpt, cfg, {"tokenizer": Tokenizer(cfg.tokenizer), "world_model": random_world_model(cfg)})
    try:
        export_model(ckpt, out, verify_frames=2, echo=lambda *a: None)
    finally:
        shutil.rmtree(ckpt, ignore_errors=True)


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
