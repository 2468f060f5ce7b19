"""Reading what a command under test prints on a pseudo-terminal."""

from __future__ import annotations

import os
import select
import time


def read_until(fd: int, marker: bytes, timeout: float) -> bytes:
    """Read a pty master until ``marker`` shows up (bounded); return what was read."""
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise AssertionError(f"no {marker!r} on the terminal: {seen!r}")
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            chunk = b""
        if not chunk:
            raise AssertionError(f"terminal closed before {marker!r}: {seen!r}")
        seen += chunk
    return seen
