"""The per-camera-frame token ring buffer: each frame is encoded once, history frames are chosen by stamp.

Every camera frame given to the runner leaves one ``FrameEntry``: its dyn tokens (encoded against the guide maps of
the frame one model frame earlier, docs/ARCHITECTURE.md guidance rule), its ctx tokens and, while some later frame
may still need them as its guide, its ctx encoder guide maps. Model frames are ``model_dt`` apart while the camera
may run faster (tiny: every 2nd camera frame), so a plan at t reads the entries nearest to t - (H-1-i) * model_dt.
Until the history is full, missing slots repeat the oldest frame found and the selection reports ``warming_up``.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from pwm_model.data.contract import FRAME_PAIR_TOLERANCE


@dataclass
class FrameEntry:
    """One encoded camera frame."""

    t_ns: int
    dyn_tokens: np.ndarray  # (Ld,) int64
    ctx_tokens: np.ndarray  # (Lc,) int64
    guide_enc: dict[str, np.ndarray] | None  # ctx encoder maps by graph input name; None once no frame needs them
    guided: bool  # False when no predecessor existed and the frame guided its own dyn encoding


class FrameHistory:
    """Entries of the recent camera frames, oldest first, with stamp-based lookup and eviction."""

    def __init__(self, model_dt_ns: int, history_frames: int, tolerance: float = FRAME_PAIR_TOLERANCE) -> None:
        self.model_dt_ns = int(model_dt_ns)
        self.history_frames = int(history_frames)
        self.tolerance_ns = int(round(tolerance * model_dt_ns))
        self._stamps: list[int] = []
        self._entries: list[FrameEntry] = []

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def newest_t_ns(self) -> int | None:
        return self._stamps[-1] if self._stamps else None

    def clear(self) -> None:
        self._stamps.clear()
        self._entries.clear()

    def nearest(self, t_ns: int, *, with_guide: bool = False) -> FrameEntry | None:
        """The entry whose stamp is nearest ``t_ns`` within the tolerance (and still holding guide maps)."""
        i = bisect.bisect_left(self._stamps, t_ns)
        best, best_err = None, self.tolerance_ns + 1
        for j in (i - 1, i):
            if 0 <= j < len(self._entries):
                e = self._entries[j]
                err = abs(e.t_ns - t_ns)
                if err < best_err and (not with_guide or e.guide_enc is not None):
                    best, best_err = e, err
        return best

    def guide_for(self, t_ns: int) -> FrameEntry | None:
        """The predecessor whose ctx maps guide the dyn encoding of a frame at ``t_ns`` (one model frame earlier)."""
        return self.nearest(t_ns - self.model_dt_ns, with_guide=True)

    def add(self, entry: FrameEntry) -> None:
        """Append a frame (stamps strictly increase) and forget what no later plan can use."""
        if self._stamps and entry.t_ns <= self._stamps[-1]:
            raise ValueError(f"stamps must increase: {entry.t_ns} after {self._stamps[-1]}")
        self._stamps.append(entry.t_ns)
        self._entries.append(entry)
        keep_from = entry.t_ns - (self.history_frames - 1) * self.model_dt_ns - self.tolerance_ns
        guide_from = entry.t_ns - self.model_dt_ns - self.tolerance_ns
        drop = bisect.bisect_left(self._stamps, keep_from)
        del self._stamps[:drop], self._entries[:drop]
        for e in self._entries:
            if e.t_ns >= guide_from:
                break
            e.guide_enc = None

    def select(self, t_ns: int) -> tuple[list[FrameEntry], bool]:
        """The H history entries for a plan at ``t_ns`` (oldest first; the last is the frame at t_ns) and whether
        the history is still warming up (a slot missing and filled by repeating the oldest, or a self-guided frame)."""
        picks = [self.nearest(t_ns - (self.history_frames - 1 - i) * self.model_dt_ns)
                 for i in range(self.history_frames)]
        if picks[-1] is None:
            raise ValueError(f"no frame at {t_ns} in the history")
        warming = any(p is None for p in picks)
        filled: list[FrameEntry] = []
        for i, p in enumerate(picks):
            if p is None:
                p = next(q for q in picks[i:] if q is not None)  # repeat the oldest frame found
            filled.append(p)
        warming = warming or not all(p.guided for p in filled)
        return filled, warming
