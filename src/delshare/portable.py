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
"""

from __future__ import annotations

import os
import sys

__all__ = ["LINUX_FAST_PATHS", "PORTABLE", "metadata_on_descriptors"]

PORTABLE: bool = os.environ.get("DELSHARE_PORTABLE", "").strip() not in ("", "0")
"""The switch: fast paths off, portable fallbacks on."""

LINUX_FAST_PATHS: bool = sys.platform.startswith("linux") and not PORTABLE
"""Whether Linux-only fast paths may be tried (each still falls back if the kernel refuses)."""


def metadata_on_descriptors() -> bool:
    """Whether a file's mode and times can be set through its open descriptor (not Windows)."""
    return not PORTABLE and hasattr(os, "fchmod") and os.utime in os.supports_fd
