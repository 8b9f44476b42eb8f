"""Scene novelty: how unlike the training drives a camera frame looks, from its ctx codes alone.

The forecast surprise (surprise.py) asks whether the world behaves as the model forecast; a scene the training
never showed can still behave as forecast (a dark, still night lit orange by sodium lamps is easy to forecast). Novelty
asks the other question: how probable is each ctx code at its place in the token grid under the training drives'
frequencies, the slot's own counts smoothed towards the codebook-wide frequency:

    p_i(c) = (n_i(c) + beta * q(c)) / (N + beta),   q(c) = (n(c) + 1/2) / (sum_c n(c) + C/2)
    novelty = mean_i -log p_i(code_i)      nats per token

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
