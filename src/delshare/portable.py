"""One switch for the Linux fast paths: ``DELSHARE_PORTABLE=1`` (read here, once, at import).

DEL runs everywhere Python does; on Linux it also takes fast paths whose fallbacks are chosen
at run time elsewhere: ``O_DIRECT`` writes and ``fallocate(2)`` preallocation
(:mod:`delshare.transfer.diskio`; macOS uses ``F_NOCACHE`` instead), ``splice(2)`` in the relay
(:mod:`delshare.aio.pipe`; plain copies otherwise), ``TCP_USER_TIMEOUT`` and the keepalive
timings on links (:mod:`delshare.link.records`; plain ``SO_KEEPALIVE`` otherwise),
``getifaddrs(3)`` for interface addresses (:mod:`delshare.link.candidates`; the resolver and
socket probing otherwise), and the receiver's ``fchmod``/``utime`` on a descriptor
(:mod:`delshare.transfer.install`; by path after closing, as on Windows). With the switch on,
every one of them takes its portable fallback, so the test suite exercises the fallbacks on
Linux too (``tests/transfer/test_portable.py`` reruns the transfer tests that way).
:func:`release_free_memory` (glibc's ``malloc_trim``) is here too: the relay and the rendezvous
server both call it after a burst of connections closes.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from collections.abc import Callable

__all__ = ["LINUX_FAST_PATHS", "PORTABLE", "metadata_on_descriptors", "release_free_memory"]

PORTABLE: bool = os.environ.get("DELSHARE_PORTABLE", "").strip() not in ("", "0")
"""The switch: fast paths off, portable fallbacks on."""

LINUX_FAST_PATHS: bool = sys.platform.startswith("linux") and not PORTABLE
"""Whether Linux-only fast paths may be tried (each still falls back if the kernel refuses)."""


def metadata_on_descriptors() -> bool:
    """Whether a file's mode and times can be set through its open descriptor (not Windows)."""
    return not PORTABLE and hasattr(os, "fchmod") and os.utime in os.supports_fd


def release_free_memory() -> None:
    """Give freed heap memory back to the OS (glibc ``malloc_trim``), where there is one.

    TLS connections allocate large buffers; after a burst of handshakes closes, glibc keeps the
    freed memory in the heap unless asked, and RSS stays at the peak (issue 10 item 3).
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return trim
