"""The torch backend: the PyTorch modules behind the exported graphs, as ``Engine``s (the runtime's reference).

``pwm_model.runtime.backends.open_engines`` imports this module by name when ``runtime.backend`` is ``torch``; it
builds the graphs from the checkpoint the manifest names (``build_graphs``), so the reference and the ONNX graphs
compute the same thing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from pwm_model.config import RuntimeConfig
from pwm_model.data.contract import EGO_DIM
from pwm_model.errors import ModelError
from pwm_model.runtime.manifest import Manifest
from pwm_model.runtime.types import Engine

log = logging.getLogger("pwm.runtime")


class TorchEngine:
    """A graph's PyTorch module (the reference backend); numpy in, numpy out."""

    def __init__(self, name: str, module: Any, inputs: list[str], outputs: list[str], device: str) -> None:
        self.name = name
        self.module = module
        self.inputs, self.outputs = inputs, outputs
        self.keep = set(outputs)  # the outputs the model directory's graph has (an older export has fewer)
        self.device = device

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        if "ego" in inputs and inputs["ego"].shape[-1] < EGO_DIM:  # a model exported before the yaw rate: 0 for it
            ego = inputs["ego"]
            inputs = {**inputs, "ego": np.pad(ego, [(0, 0)] * (ego.ndim - 1) + [(0, EGO_DIM - ego.shape[-1])])}
        args = [torch.from_numpy(np.ascontiguousarray(inputs[n])).to(self.device) for n in self.inputs]
        with torch.inference_mode():
            out = self.module(*args)
        out = out if isinstance(out, (tuple, list)) else (out,)
        return {n: t.detach().cpu().numpy() for n, t in zip(self.outputs, out) if n in self.keep}

    def close(self) -> None:
        self.module = None


def checkpoint_dir(m: Manifest, checkpoint: str | Path | None) -> Path:
    """The checkpoint the torch backend loads: the argument, else the one the manifest records."""
    source = m.data.get("source", {})
    path = Path(checkpoint) if checkpoint else Path(source.get("checkpoint", ""))
    if not str(path) or not path.is_dir():
        raise ModelError(f"the torch backend needs the checkpoint the model was exported from ({path or 'unknown'}), "
                         "which is not there; pass it with checkpoint=... or use backend onnxruntime")
    from pwm_model.io_utils import file_sha256

    for name in ("tokenizer", "world_model"):
        want, f = source.get(f"{name}_sha256"), path / f"{name}.safetensors"
        if want and f.is_file() and file_sha256(f) != want:
            raise ModelError(f"{f} has changed since {m.model_dir} was exported (its sha256 differs from the one in "
                             "manifest.json): export the model again or pass the original checkpoint")
    return path


def open_torch_engines(m: Manifest, rt: RuntimeConfig, graphs: list[str], checkpoint: str | Path | None
                       ) -> dict[str, Engine]:
    """The ``graphs`` of ``m`` as PyTorch modules on ``rt.device``, from ``checkpoint`` or the manifest's."""
    try:
        import torch
    except ImportError:
        raise ModelError("backend torch needs PyTorch, which is not installed; use backend onnxruntime or "
                         "tensorrt") from None
    from pwm_model.export.graphs import build_graphs
    from pwm_model.tokenizer.model import load_tokenizer
    from pwm_model.world_model.checkpoint import load_world_model

    ckpt = checkpoint_dir(m, checkpoint)
    device = "cuda" if rt.device == "cuda" else "cpu"
    _, tok = load_tokenizer(str(ckpt), device=device)
    wm, _ = load_world_model(ckpt, m.config, device=device)
    if rt.intra_op_threads:
        torch.set_num_threads(rt.intra_op_threads)
    mods = build_graphs(tok, wm, m.config, m.image_hw, m.rollout_mode, preview=m.has_preview)
    log.info("backend torch %s (%s), %d graphs from %s", torch.__version__, device, len(graphs), ckpt)
    engines = {g: TorchEngine(g, mods[g].module.to(device), mods[g].inputs, mods[g].outputs, device) for g in graphs}
    for g, e in engines.items():
        e.keep = {t.name for t in m.graphs[g].outputs}
    return engines
