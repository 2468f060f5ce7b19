"""Typed transfer failures, all derived from :class:`delshare.errors.TransferError`.

The CLI's exit codes are chosen in one place, ``delshare.cli.common.exit_code_for``.
"""

from __future__ import annotations

from delshare.errors import RemoteProtocolError, TransferError

__all__ = [
    "DeclinedError",
    "DestinationExistsError",
    "InsufficientSpaceError",
    "IntegrityError",
    "LocalIOError",
    "ManifestError",
    "OutputDirError",
    "PeerProtocolError",
    "PeerTimeoutError",
    "RefusedByPeerError",
    "SourceChangedError",
    "StreamInterruptedError",
    "TransferInterruptedError",
    "UnsafePathError",
]


class ManifestError(TransferError):
    """The file list cannot be sent or received as given (e.g. a duplicate top-level name)."""


class UnsafePathError(ManifestError):
    """A path in a manifest could escape or misbehave in the output directory."""


class DestinationExistsError(TransferError):
    """A file to receive already exists and neither overwrite nor rename was asked for."""


class InsufficientSpaceError(TransferError):
    """The output directory does not have room for the offer: ``needed`` and ``free`` bytes."""

    def __init__(self, message: str, needed: int = 0, free: int = 0) -> None:
        super().__init__(message)
        self.needed = needed
        self.free = free


class DeclinedError(TransferError):
    """The local user declined the offer."""


class RefusedByPeerError(TransferError):
    """The peer rejected the offer or aborted the transfer; ``reason`` is its message."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"refused by peer: {reason}")
        self.reason = reason


class IntegrityError(TransferError):
    """A received file's content hash did not match the sender's."""


class SourceChangedError(TransferError):
    """A source file changed (size or mtime) while it was being sent."""


class TransferInterruptedError(TransferError):
    """The link broke mid-transfer; a later run resumes from the ``.part`` files left behind."""


class PeerTimeoutError(TransferInterruptedError):
    """The peer sent nothing for the whole wait for its next message (it may be gone)."""


class StreamInterruptedError(TransferInterruptedError):
    """The link broke while a stream (``delshare send -``) was moving: its bytes cannot be read
    again, so neither a reconnection nor a later run can resume it."""


def stalled(seconds: float) -> TransferInterruptedError:
    """The error for a data phase that moved nothing for ``seconds``."""
    return TransferInterruptedError(f"no progress for {seconds:g} s: the link stalled")


class PeerProtocolError(TransferError, RemoteProtocolError):
    """The peer sent a message that breaks the transfer protocol."""


class OutputDirError(TransferError):
    """The output folder is missing or not a folder."""


class LocalIOError(TransferError):
    """Reading or writing a local file failed (disk full, permissions...)."""
