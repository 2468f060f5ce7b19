"""Writing a received file fast: preallocation, direct I/O and early writeback.

Measured here (ext4 in a VM), copying 1 GiB into fresh page-cache pages costs 0.6-2.2 CPU-seconds
(page allocation, delayed block allocation, and the hypervisor backing newly touched memory), and
the closing ``fsync`` then waits ~0.3 s more; writing the same GiB with ``O_DIRECT`` from a reused
aligned buffer costs ~0.05 CPU-seconds, leaves nothing for ``fsync``, and does not evict the
user's page cache. So the receiver preallocates the rest of each ``.part`` with ``fallocate(2)``
and ``FALLOC_FL_KEEP_SIZE`` (the file's size keeps counting only received bytes, which is what
resume relies on) and writes whole aligned blocks through a second, ``O_DIRECT`` descriptor.
What cannot go direct is written normally, and writeback of it starts every
``WRITEBACK_WINDOW`` bytes (``posix_fadvise(POSIX_FADV_DONTNEED)`` starts asynchronous writeback
on Linux). All of this only changes speed: where unsupported, plain buffered writes remain."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import sys
from collections.abc import Callable
from typing import cast

from delshare.portable import LINUX_FAST_PATHS, PORTABLE

__all__ = [
    "ALIGN",
    "WRITEBACK_WINDOW",
    "PartWriter",
    "aligned_buffer",
    "open_direct",
    "preallocate",
]

ALIGN = 4096
"""Direct I/O alignment of buffers, offsets and lengths (covers 512 and 4096-byte sectors)."""
WRITEBACK_WINDOW = 64 << 20
_FALLOC_FL_KEEP_SIZE = 0x01


def _libc_fallocate() -> Callable[[int, int, int, int], int] | None:
    """``fallocate(2)`` from the C library (Linux only: the ``os`` module has no KEEP_SIZE)."""
    if not LINUX_FAST_PATHS:
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


def aligned_buffer(size: int) -> memoryview:
    """A writable page-aligned buffer (anonymous mmap) whose pages come zeroed on first touch:
    fit for ``O_DIRECT``, and free to allocate for a transfer that never fills it."""
    return memoryview(mmap.mmap(-1, size))


def open_direct(fd: int) -> int | None:
    """A second descriptor on the same open file, with ``O_DIRECT``; None where unavailable.

    Reopened through ``/proc/self/fd`` so it is the very same inode, never a path looked up again.
    """
    flag = getattr(os, "O_DIRECT", 0)
    if sys.platform == "darwin" and not PORTABLE:
        _no_cache(fd)  # macOS has no O_DIRECT: F_NOCACHE on the one descriptor instead
        return None
    if not flag or not LINUX_FAST_PATHS:
        return None
    try:
        return os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | flag | getattr(os, "O_CLOEXEC", 0))
    except OSError:  # e.g. tmpfs before Linux 6.6, or no /proc
        return None


def _no_cache(fd: int) -> None:
    import fcntl

    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(fd, fcntl.F_NOCACHE, 1)  # type: ignore[attr-defined,unused-ignore]


def _aligned(data: memoryview, position: int) -> bool:
    if position % ALIGN or len(data) % ALIGN or data.readonly or not data.contiguous:
        return False
    address = ctypes.addressof(ctypes.c_char.from_buffer(data))
    return address % ALIGN == 0


class PartWriter:
    """Writes a file sequentially from ``offset``, bypassing the page cache where it can.

    Whole aligned blocks from aligned buffers go through ``direct_fd`` (``O_DIRECT``): no page
    cache pages to allocate and copy into, so they cost ~0.05 CPU-s per GiB here instead of
    0.6-2 s, and the closing ``fsync`` has nothing left to flush. Anything else (a file's tail, a
    resume at an unaligned offset, a file system that refuses direct I/O) is written through
    ``fd`` normally, with writeback started every ``WRITEBACK_WINDOW`` bytes.
    """

    def __init__(self, fd: int, offset: int, direct_fd: int | None = None) -> None:
        self.fd = fd
        self.position = offset
        self._direct = direct_fd
        self._unflushed_from = offset

    def write(self, data: memoryview) -> None:
        """Write all of ``data`` at the current position (blocking; a worker thread calls it).

        Whole blocks go direct when the buffer and the position allow; the rest is buffered.
        """
        blocks = len(data) - len(data) % ALIGN
        if self._direct is not None and blocks and _aligned(data[:blocks], self.position):
            start = self.position
            try:
                self._write_all(self._direct, data[:blocks])
                self._unflushed_from = self.position
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self.close()  # this file system takes no direct I/O: buffered from here on
            data = data[self.position - start :]
        if data:
            self._buffered(data)

    def _buffered(self, data: memoryview) -> None:
        self._write_all(self.fd, data)
        if self.position - self._unflushed_from >= WRITEBACK_WINDOW:
            self._start_writeback()

    def _write_all(self, fd: int, data: memoryview) -> None:
        while data:
            written = os.pwrite(fd, data, self.position)
            data = data[written:]
            self.position += written

    def _start_writeback(self) -> None:
        start, length = self._unflushed_from, self.position - self._unflushed_from
        self._unflushed_from = self.position
        advise = getattr(os, "posix_fadvise", None)
        if advise is not None:
            with contextlib.suppress(OSError):
                advise(self.fd, start, length, os.POSIX_FADV_DONTNEED)

    def close(self) -> None:
        """Close the direct descriptor (``fd`` stays open: its owner closes it)."""
        direct, self._direct = self._direct, None
        if direct is not None:
            os.close(direct)
