"""File-system hints for writing a received file fast: preallocation and early writeback.

Measured on ext4 here, writing 1 GiB into a fresh file costs 0.8-2.2 CPU-seconds when blocks are
allocated page by page (delayed allocation), and ~0.1 s when the extent is preallocated first;
the final ``fsync`` then waits ~0.3 s for the whole file unless writeback started along the way.
So the receiver preallocates the rest of each ``.part`` with ``fallocate(2)`` and
``FALLOC_FL_KEEP_SIZE`` (the file's size keeps counting only received bytes, which is what
resume relies on) and asks the kernel to start writing back every finished window of
``WRITEBACK_WINDOW`` bytes (``posix_fadvise(POSIX_FADV_DONTNEED)``, which on Linux starts
asynchronous writeback and later drops the clean pages, so a big transfer does not evict the
page cache either). Both are hints: where they are unsupported nothing changes but speed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Callable
from typing import cast

__all__ = ["WRITEBACK_WINDOW", "PartWriter", "preallocate"]

WRITEBACK_WINDOW = 64 << 20
_FALLOC_FL_KEEP_SIZE = 0x01


def _libc_fallocate() -> Callable[[int, int, int, int], int] | None:
    """``fallocate(2)`` from the C library (Linux only: the ``os`` module has no KEEP_SIZE)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    function.restype = ctypes.c_int
    return cast(Callable[[int, int, int, int], int], function)


_fallocate = _libc_fallocate()


def preallocate(fd: int, offset: int, length: int) -> bool:
    """Reserve ``length`` bytes from ``offset`` without changing the file's size.

    Returns whether the file system did it (False where unsupported, e.g. not Linux, tmpfs
    before 2.6.x, FAT); never writes zeros the way ``posix_fallocate`` emulation would.
    """
    if _fallocate is None or length <= 0:
        return False
    return bool(_fallocate(fd, _FALLOC_FL_KEEP_SIZE, offset, length) == 0)


class PartWriter:
    """Appends to an open file from ``offset`` and starts writeback every finished window."""

    def __init__(self, fd: int, offset: int) -> None:
        self.fd = fd
        self.position = offset
        self._unflushed_from = offset

    def write(self, data: memoryview) -> None:
        """Write all of ``data`` at the current position (blocking; a worker thread calls it)."""
        while data:
            written = os.write(self.fd, data)
            data = data[written:]
            self.position += written
        if self.position - self._unflushed_from >= WRITEBACK_WINDOW:
            self._start_writeback()

    def _start_writeback(self) -> None:
        start, length = self._unflushed_from, self.position - self._unflushed_from
        self._unflushed_from = self.position
        advise = getattr(os, "posix_fadvise", None)
        if advise is not None:
            with contextlib.suppress(OSError):
                advise(self.fd, start, length, os.POSIX_FADV_DONTNEED)
