"""The data phase's stall timeout, in a module that imports nothing.

``delshare.app.common`` (and so ``delshare send --help``) needs the default without loading the
transfer protocol, the record layer and ``cryptography``: start-up time is part of a transfer's
time to first byte. :mod:`delshare.transfer.protocol` re-exports it.
"""

from __future__ import annotations

__all__ = ["STALL_TIMEOUT"]

STALL_TIMEOUT = 60.0
"""Seconds without progress in the data phase that count as a broken link."""
