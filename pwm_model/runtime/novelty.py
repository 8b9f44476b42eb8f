"""Scene novelty: how unlike the training drives a camera frame looks, from its ctx codes alone.

The forecast surprise (surprise.py) asks whether the world behaves as the model forecast; a scene the training
never showed can still behave as forecast (a dark, still night lit orange by sodium lamps is easy to forecast). Novelty
asks the other question: how probable is each ctx code at its place in the token grid under the training drives'
frequencies, the slot's own counts smoothed towards the codebook-wide frequency:

    p_i(c) = (n_i(c) + beta * q(c)) / (N + beta),   q(c) = (n(c) + 1/2) / (sum_c n(c) + C/2)
    novelty = mean_i -log p_i(code_i)      nats per token

Codes alone miss a scene whose codes are common but whose look is not (an orange night quantizes to night
codes), so a model exported with the ``ctx_decoder`` graph adds the tokenizer's reconstruction error of the frame
(mean absolute error of the decoded ctx codes against the frame, on the [-1, 1] scale): the tokenizer reproduces
well only what it was trained on. The two are put on one scale by their held-out calibration (median and 99th
percentile of each, ``novelty_calibration["components"]``) and added:

    novelty = (nll - nll_p50) / (nll_p99 - nll_p50) + (err - err_p50) / (err_p99 - err_p50)

a model calibrated before the reconstruction existed keeps the code NLL alone.

The table (Lc x C log-probabilities, float16) is written at export from the training clip store's token cache
(``export_onnx.py --novelty-prior STORE``) as ``novelty_prior.npy`` beside the graphs; the calibration on held-out
drives sets its warning threshold like the surprise's. A table lookup per frame: no graph, no inference library.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pwm_model.errors import ModelError

PRIOR_FILE = "novelty_prior.npy"
PRIOR_BETA = 50.0  # pseudo-counts of the codebook-wide frequency in every slot's estimate


def build_prior(ctx_tokens: np.ndarray, codebook_size: int, beta: float = PRIOR_BETA) -> np.ndarray:
    """(N, Lc) ctx codes of the training frames -> (Lc, C) float16 log-probabilities (see the module docstring)."""
    tokens = np.asarray(ctx_tokens, np.int64)
    if tokens.ndim != 2 or tokens.shape[0] == 0:
        raise ValueError(f"ctx_tokens must be (N > 0, Lc), got {tokens.shape}")
    if tokens.min() < 0 or tokens.max() >= codebook_size:
        raise ValueError(f"ctx codes must be in [0, {codebook_size}), got {tokens.min()} .. {tokens.max()}")
    n, slots = tokens.shape
    overall = np.bincount(tokens.ravel(), minlength=codebook_size) + 0.5
    q = overall / overall.sum()
    counts = np.zeros((slots, codebook_size), np.float64)
    np.add.at(counts, (np.broadcast_to(np.arange(slots), tokens.shape), tokens), 1.0)
    return np.log((counts + beta * q) / (n + beta)).astype(np.float16)


class NoveltyPrior:
    """The per-slot code log-probabilities of the training drives; ``score`` a frame's ctx codes."""

    def __init__(self, log_p: np.ndarray) -> None:
        self.log_p = np.asarray(log_p, np.float32)
        self._slots = np.arange(self.log_p.shape[0])

    @classmethod
    def load(cls, path: str | os.PathLike[str], slots: int, codebook_size: int) -> NoveltyPrior:
        try:
            table = np.load(Path(path), allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise ModelError(f"the novelty prior {path} is missing or corrupt ({exc}); export the model again with "
                             "--novelty-prior STORE") from None
        if table.shape != (slots, codebook_size) or not np.isfinite(table).all():
            raise ModelError(f"the novelty prior {path} has shape {table.shape}, the model's ctx tokens need "
                             f"({slots}, {codebook_size}) finite values; export the model again")
        return cls(table)

    def score(self, ctx_tokens: np.ndarray) -> float:
        """Mean -log p of a frame's (Lc,) ctx codes at their slots: nats per token."""
        return float(-self.log_p[self._slots, np.asarray(ctx_tokens, np.int64)].mean())


COMPONENTS = ("code_nll", "reconstruction")  # novelty_calibration["components"] keys, in combine()'s order


def reconstruction_error(decoded_rgb: np.ndarray, frame_rgb: np.ndarray) -> float:
    """Mean absolute difference of two uint8 RGB images of one size, on the [-1, 1] scale the tokenizer sees."""
    a, b = np.asarray(decoded_rgb, np.float32), np.asarray(frame_rgb, np.float32)
    if a.shape != b.shape:
        raise ValueError(f"reconstruction {a.shape} and frame {b.shape} differ in shape")
    return float(np.abs(a - b).mean() / 127.5)


def component_scales(values: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Each component's median and 99th percentile over held-out plans (its scale in ``combine``)."""
    out = {}
    for name in COMPONENTS:
        v = np.asarray(values[name], np.float64)
        p50, p99 = float(np.percentile(v, 50)), float(np.percentile(v, 99))
        out[name] = {"p50": round(p50, 6), "p99": round(max(p99, p50 + 1e-6), 6)}
    return out


def combine(code_nll: float, reconstruction: float, scales: dict[str, dict[str, float]] | None) -> float:
    """The scene novelty of one frame (module docstring); the code NLL alone without ``scales`` or a
    reconstruction (NaN)."""
    if not scales or not np.isfinite(reconstruction):
        return float(code_nll)
    total = 0.0
    for name, value in zip(COMPONENTS, (code_nll, reconstruction)):
        s = scales[name]
        total += (float(value) - s["p50"]) / (s["p99"] - s["p50"])
    return total
