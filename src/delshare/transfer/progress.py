"""Throttled progress reporting shared by sender and receiver."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["ProgressCallback", "ProgressThrottle"]

ProgressCallback = Callable[[int, int, int], None]
"""Called with (file index in the manifest, bytes done in that file, bytes done in total)."""

_INTERVAL = 0.2


class ProgressThrottle:
    """Calls the callback at most every 0.2 s, plus once when each file completes."""

    def __init__(self, callback: ProgressCallback | None) -> None:
        self._callback = callback
        self._last = 0.0

    def update(self, index: int, file_done: int, total_done: int, *, final: bool = False) -> None:
        """Report progress if enough time passed (or ``final``)."""
        if self._callback is None:
            return
        now = time.monotonic()
        if final or now - self._last >= _INTERVAL:
            self._last = now
            self._callback(index, file_done, total_done)
