"""Latest-frame-only processing: a one-slot mailbox and a worker thread that never queues behind the camera.

The camera callback ``submit``s each frame; a newer frame replaces one still waiting (the replaced frame is a
drop, reported to the caller so it can be counted). The worker starts a cycle at most once per ``period_s()``
seconds and always takes the newest frame. Exceptions of the cycle function are handed to ``on_error`` and the
worker carries on. No rclpy here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestFrameWorker(Generic[T]):
    """Runs ``process(item)`` in a thread on the newest submitted item, at most once per ``period_s()``."""

    def __init__(self, process: Callable[[T], None], period_s: Callable[[], float],
                 on_error: Callable[[BaseException], None], name: str = "pwm-worker") -> None:
        self._process = process
        self._period_s = period_s
        self._on_error = on_error
        self._name = name
        self._cond = threading.Condition()
        self._item: T | None = None
        self._has_item = False
        self._stop = False
        self._busy = False
        self._last_start = float("-inf")
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._cond:
            self._stop, self._has_item, self._item = False, False, None
            self._last_start = float("-inf")
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Stop after the cycle in progress (if any); returns False if it did not end within ``timeout_s``."""
        with self._cond:
            self._stop = True
            self._has_item, self._item = False, None
            self._cond.notify_all()
        thread, self._thread = self._thread, None
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout_s)
        return not thread.is_alive()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, item: T) -> bool:
        """Offer the newest item; True if it replaced one that was still waiting (that one is dropped)."""
        with self._cond:
            replaced = self._has_item
            self._item, self._has_item = item, True
            self._cond.notify_all()
            return replaced

    def idle(self) -> bool:
        """No item waiting and no cycle running."""
        with self._cond:
            return not self._has_item and not self._busy

    def _next(self) -> tuple[bool, T | None]:
        with self._cond:
            while not self._stop:
                if self._has_item:
                    wait_s = self._last_start + self._period_s() - time.monotonic()
                    if wait_s <= 0:
                        item, self._item, self._has_item = self._item, None, False
                        self._last_start = time.monotonic()
                        self._busy = True
                        return True, item
                    self._cond.wait(wait_s)  # newer frames may replace the item meanwhile
                else:
                    self._cond.wait()
            return False, None

    def _run(self) -> None:
        while True:
            ok, item = self._next()
            if not ok:
                return
            try:
                self._process(item)  # type: ignore[arg-type]
            except Exception as exc:  # noqa: BLE001 - the worker must outlive any cycle
                try:
                    self._on_error(exc)
                except Exception:  # noqa: BLE001, S110 - reporting must not kill the worker either
                    pass
            finally:
                with self._cond:
                    self._busy = False
