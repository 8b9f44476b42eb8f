"""The token cache of a clip store (one per tokenizer checkpoint) and the store's clip labels, as numpy arrays.

The token cache pre-tokenizes a clip store once per tokenizer checkpoint, so world-model training never runs the
tokenizer per step. For every clip (T = 1 + H + F model frames, clip frame 0 the guide, frame H the current frame t):

    ctx.npy   (n, Lc) int16/int32         ctx tokens of the current frame
    dyn.npy   (n, H + F, Ld) int16/int32  dyn tokens of clip frames 1 .. H+F, frame f dyn-encoded against the ctx
                                          encoder maps of frame f-1 (the guidance rule of docs/ARCHITECTURE.md)
    meta.json                             tokenizer sha256, the store's index.json sha256, shapes

It lives at ``<store>.tokens/<first 16 hex digits of the tokenizer's sha256>/`` and is rebuilt when the store's
index changes. Frames are shared between consecutive clips, so each (f-1, f) pair of a shard is encoded once.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pwm_model.config import PwmConfig
from pwm_model.data.contract import command_ages_s
from pwm_model.errors import DataError
from pwm_model.io_utils import atomic_path, file_sha256, write_json_atomic

CACHE_FORMAT = "pwm-token-cache"
CACHE_VERSION = 1
LABELS = ("ego", "command", "waypoints_xyyaw", "waypoints_valid", "boxes", "boxes_valid", "t_ns", "drive",
          "scenario")


def cache_dir(store: str | os.PathLike[str], tokenizer_sha: str) -> Path:
    store = Path(store)
    return store.parent / f"{store.name}.tokens" / tokenizer_sha[:16]


@dataclass
class TokenCache:
    ctx: np.ndarray  # (n, Lc)
    dyn: np.ndarray  # (n, H + F, Ld)
    path: Path


def _shard_arrays(store: Path, shard: str, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    out = {}
    for name in names:
        f = store / shard / f"{name}.npy"
        try:
            out[name] = np.load(f, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise DataError(f"clip store file {f} is missing, corrupt or truncated ({exc})") from None
    return out


_LOG_EVERY_S = 30.0  # progress lines into a log (stderr not a terminal) at most this often
_last_logged = [0.0]


def _progress(text: str, final: bool = False) -> None:
    """One line rewritten in place on a terminal; into a log, a line at most every ``_LOG_EVERY_S``."""
    if sys.stderr.isatty():
        sys.stderr.write(f"\r\033[K{text}" + ("\n" if final else ""))
    elif final or time.monotonic() - _last_logged[0] >= _LOG_EVERY_S:
        _last_logged[0] = time.monotonic()
        sys.stderr.write(text + "\n")
    sys.stderr.flush()


def build_token_cache(store_path: str | os.PathLike[str], tokenizer: Any, tokenizer_sha: str,
                      cfg: PwmConfig, *, batch_size: int = 16, progress: bool = True) -> TokenCache:
    """Tokenize every clip of the store (see the module docstring) with a ``Tokenizer`` and write the cache
    atomically."""
    import torch

    with torch.no_grad():
        return _build_token_cache(store_path, tokenizer, tokenizer_sha, cfg, batch_size, progress)


def _build_token_cache(store_path: str | os.PathLike[str], tokenizer: Any, tokenizer_sha: str,
                       cfg: PwmConfig, batch_size: int, progress: bool) -> TokenCache:
    import torch

    from pwm_model.data.clips import ClipStore
    from pwm_model.data.contract import resize_rgb
    from pwm_model.data.datasets import to_tensor

    store = ClipStore(store_path)
    store.check_compatible(cfg)
    meta = store.meta
    tk = cfg.tokenizer
    n, t_frames = len(store), meta.clip_frames
    dtype = np.int16 if tk.codebook_bits <= 15 else np.int32
    ctx_all = np.zeros((n, tk.ctx_tokens), dtype)
    dyn_all = np.zeros((n, t_frames - 1, tk.dyn_tokens), dtype)
    hist = meta.history_frames
    tokenizer.eval()
    started, done = time.monotonic(), 0
    start = 0
    for s in meta.shards:
        a = _shard_arrays(store.path, s["name"], ("frames", "frame_index"))
        rows = np.asarray(a["frame_index"], np.int64)  # (m, T)
        m = rows.shape[0]
        pairs = np.stack([rows[:, :-1], rows[:, 1:]], -1).reshape(-1, 2)  # (m * (T-1), 2) rows (f-1, f)
        uniq, inverse = np.unique(pairs, axis=0, return_inverse=True)
        dyn_tok = np.zeros((len(uniq), tk.dyn_tokens), dtype)
        ctx_tok: dict[int, np.ndarray] = {}
        for b0 in range(0, len(uniq), batch_size):
            p = uniq[b0:b0 + batch_size]
            guide = torch.stack([to_tensor(np.asarray(a["frames"][r])) for r in p[:, 0]])
            cur = torch.stack([to_tensor(resize_rgb(np.asarray(a["frames"][r]), tk.dyn_height_px, tk.dyn_width_px))
                               for r in p[:, 1]])
            g_tokens, g_enc = tokenizer.encode_ctx(guide)
            dyn_tok[b0:b0 + len(p)] = tokenizer.encode_dyn(cur, g_enc).cpu().numpy()
            for r, tok in zip(p[:, 0], g_tokens.cpu().numpy()):
                ctx_tok[int(r)] = tok
            done += len(p)
            if progress:
                rate = done / max(time.monotonic() - started, 1e-6)
                _progress(f"tokenizing {store.path.name}: shard {s['name']}, {done} frame pairs ({rate:.0f}/s)")
        missing = sorted({int(r) for r in rows[:, hist]} - set(ctx_tok))  # current frames that guide nothing
        for b0 in range(0, len(missing), batch_size):
            rr = missing[b0:b0 + batch_size]
            toks, _ = tokenizer.encode_ctx(torch.stack([to_tensor(np.asarray(a["frames"][r])) for r in rr]))
            for r, tok in zip(rr, toks.cpu().numpy()):
                ctx_tok[r] = tok
        dyn_all[start:start + m] = dyn_tok[inverse.reshape(-1)].reshape(m, t_frames - 1, tk.dyn_tokens)
        ctx_all[start:start + m] = np.stack([ctx_tok[int(r)] for r in rows[:, hist]])
        start += m
    out = cache_dir(store.path, tokenizer_sha)
    info = {"format": CACHE_FORMAT, "format_version": CACHE_VERSION, "tokenizer_sha256": tokenizer_sha,
            "store_index_sha256": file_sha256(store.path / "index.json"), "num_clips": n,
            "ctx_tokens": tk.ctx_tokens, "dyn_tokens": tk.dyn_tokens, "dyn_frames": t_frames - 1,
            "codebook_size": tk.codebook_size, "seconds": round(time.monotonic() - started, 1)}
    with atomic_path(out, is_dir=True) as tmp:
        tmp.mkdir()
        np.save(tmp / "ctx.npy", ctx_all)
        np.save(tmp / "dyn.npy", dyn_all)
        write_json_atomic(tmp / "meta.json", info)
    if progress:
        _progress(f"tokenized {n} clips of {store.path} in {info['seconds']} s -> {out}", final=True)
    return TokenCache(ctx_all, dyn_all, out)


def load_token_cache(store_path: str | os.PathLike[str], tokenizer_sha: str, cfg: PwmConfig) -> TokenCache | None:
    """The cache for this store and tokenizer, or None when it is absent or stale."""
    out = cache_dir(store_path, tokenizer_sha)
    meta_file = out / "meta.json"
    if not meta_file.is_file():
        return None
    try:
        info = json.loads(meta_file.read_text())
        stale = (info.get("format") != CACHE_FORMAT or info.get("format_version") != CACHE_VERSION
                 or info.get("tokenizer_sha256") != tokenizer_sha
                 or info.get("store_index_sha256") != file_sha256(Path(store_path) / "index.json"))
        if stale:
            return None
        ctx, dyn = np.load(out / "ctx.npy"), np.load(out / "dyn.npy")
    except (OSError, ValueError, json.JSONDecodeError):
        return None
    tk = cfg.tokenizer
    if ctx.shape[1:] != (tk.ctx_tokens,) or dyn.shape[2:] != (tk.dyn_tokens,) or len(ctx) != len(dyn):
        return None
    return TokenCache(ctx, dyn, out)


def token_cache(store_path: str | os.PathLike[str], tokenizer_dir: str | os.PathLike[str], cfg: PwmConfig, *,
                progress: bool = True) -> TokenCache:
    """Load the cache of this store and tokenizer checkpoint, building it first when needed."""
    from pwm_model.checkpoint import module_file
    from pwm_model.errors import ModelError
    from pwm_model.tokenizer.model import load_tokenizer

    weights = module_file(tokenizer_dir, "tokenizer")
    if not weights.is_file():
        raise ModelError(f"{tokenizer_dir} has no tokenizer.safetensors (train one with `pwm train-tokenizer`)")
    sha = file_sha256(weights)
    cached = load_token_cache(store_path, sha, cfg)
    if cached is not None:
        return cached
    _, tok = load_tokenizer(str(tokenizer_dir))
    return build_token_cache(store_path, tok, sha, cfg, progress=progress)


def load_labels(store_path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every clip's labels (``LABELS``), concatenated over the shards, read straight from the store's arrays, and
    ``command_age_s`` derived from the clips' sequence (``pwm_model.data.contract.command_ages_s``).

    A store indexed from drives without odometry has none: DataError (fine-tuning and ``pwm eval`` need them)."""
    from pwm_model.data.clips import ClipStore

    store = ClipStore(store_path)
    if not store.meta.ego_labels:
        raise DataError(f"clip store {store.path} was indexed from drives without odometry, so its clips have no ego "
                        "state or waypoint labels: it serves `pwm train-tokenizer` and `pwm train --stage pretrain` "
                        "only; fine-tuning and `pwm eval` need a store of drives with odometry")
    parts: dict[str, list[np.ndarray]] = {k: [] for k in LABELS}
    for s in store.meta.shards:
        a = _shard_arrays(store.path, s["name"], LABELS)
        for k in LABELS:
            parts[k].append(np.asarray(a[k]))
    labels = {k: np.concatenate(v) for k, v in parts.items()}
    labels["command_age_s"] = command_ages_s(labels["t_ns"], labels["drive"], labels["command"])
    return labels


