"""What both ways of bridging share: tuning, stats, limits, constants, the unsent-bytes probe.

``delshare.aio.pipe`` explains the bridge; ``bridge_sockets`` and ``bridge_streams`` are its two
engines.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import sys
from dataclasses import dataclass, field
from typing import TypeAlias

from delshare.portable import PORTABLE
from delshare.turn.ratelimit import TokenBucket

if sys.platform == "linux":
    import fcntl
    import termios

    SPLICE_SUPPORTED: bool = hasattr(os, "splice") and not PORTABLE
else:  # pragma: no cover - exercised only off Linux
    SPLICE_SUPPORTED = False

__all__ = [
    "COPY_CHUNK",
    "DEFAULT_TUNING",
    "LINGER_POLL",
    "LINGER_TIMEOUT",
    "MIN_PIPE_SIZE",
    "NO_LIMITS",
    "PIPE_SIZE",
    "SPLICE_SUPPORTED",
    "STREAM_CHUNK",
    "BridgeStats",
    "BridgeTuning",
    "Endpoint",
    "Limits",
    "Stream",
    "unsent",
]

Endpoint: TypeAlias = socket.socket | tuple[asyncio.StreamReader, asyncio.StreamWriter]
Stream: TypeAlias = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Limits: TypeAlias = tuple[TokenBucket | None, TokenBucket | None]
"""Bandwidth caps of the a→b and b→a directions (``None``: uncapped)."""
NO_LIMITS: Limits = (None, None)

PIPE_SIZE = 1 << 20
"""Requested capacity of each splice pipe (the kernel may grant less: ``pipe-user-pages-soft``)."""
COPY_CHUNK = 256 << 10
"""Buffer per direction when sockets are copied through user space."""
STREAM_CHUNK = 256 << 10
"""Read size and write-buffer high-water mark per direction for stream endpoints."""
LINGER_TIMEOUT = 5.0
"""After a reset, the longest the surviving side gets to take in the bytes still owed to it."""
LINGER_POLL = 0.02  # seconds between SIOCOUTQ checks while lingering (teardown only)
MIN_PIPE_SIZE = 64 << 10


@dataclass(frozen=True)
class BridgeTuning:
    """How one bridge moves bytes; the defaults are the module's constants."""

    splice: bool = SPLICE_SUPPORTED
    """Splice socket pairs through pipes where the platform can (else copy through user space)."""
    linger: float = LINGER_TIMEOUT
    """After a reset, the longest the surviving side gets to take in the bytes still owed to it."""
    min_pipe_size: int = MIN_PIPE_SIZE
    """A pipe the kernel will not grow this far (``pipe-user-pages-soft``) means copy instead."""


DEFAULT_TUNING = BridgeTuning()


@dataclass
class BridgeStats:
    """What a finished bridge moved; equality compares only the byte counts."""

    a_to_b: int
    """Bytes delivered from a to b, prefix included (handed to b's kernel, or its transport)."""
    b_to_a: int
    """Bytes delivered from b to a, prefix included."""
    reset: bool = field(default=False, compare=False)
    """The bridge ended on a socket error (reset) rather than EOF on both sides."""
    peak_buffered: int = field(default=0, compare=False)
    """Most bytes held between reading and writing in either direction (pipe or user buffer)."""
    path: str = field(default="", compare=False)
    """``"splice"``, ``"copy"`` or ``"stream"``: how the bytes were moved."""


def unsent(fd: int) -> int:
    """Bytes in a TCP socket's send queue not yet acknowledged by the peer (Linux ``SIOCOUTQ``)."""
    if sys.platform != "linux":  # pragma: no cover - no portable equivalent
        return 0
    try:
        queued: int = struct.unpack("i", fcntl.ioctl(fd, termios.TIOCOUTQ, bytes(4)))[0]
    except OSError:
        return 0
    return queued
