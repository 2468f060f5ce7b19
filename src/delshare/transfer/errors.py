"""Typed transfer failures, each with the process exit code the CLI should use.

All derive from :class:`delshare.errors.TransferError`. Codes: 2 usage/local refusal,
3 refused by the peer, 4 integrity, 5 link lost (resumable), 6 protocol violation.
"""

from __future__ import annotations

from typing import ClassVar

from delshare.errors import TransferError

__all__ = [
    "DeclinedError",
    "DestinationExistsError",
    "InsufficientSpaceError",
    "IntegrityError",
    "LocalIOError",
    "ManifestError",
    "OutputDirError",
    "PeerProtocolError",
    "RefusedByPeerError",
    "SourceChangedError",
    "TransferInterruptedError",
    "UnsafePathError",
]


class _CodedTransferError(TransferError):
    exit_code: ClassVar[int] = 1


class ManifestError(_CodedTransferError):
    """The file list cannot be sent or received as given (e.g. a duplicate top-level name)."""

    exit_code = 2


class UnsafePathError(ManifestError):
    """A path in a manifest could escape or misbehave in the output directory."""


class DestinationExistsError(_CodedTransferError):
    """A file to receive already exists and neither overwrite nor rename was asked for."""

    exit_code = 2


class InsufficientSpaceError(_CodedTransferError):
    """The output directory does not have room for the offer."""

    exit_code = 2


class DeclinedError(_CodedTransferError):
    """The local user declined the offer."""

    exit_code = 2


class RefusedByPeerError(_CodedTransferError):
    """The peer rejected the offer or aborted the transfer; ``reason`` is its message."""

    exit_code = 3

    def __init__(self, reason: str) -> None:
        super().__init__(f"refused by peer: {reason}")
        self.reason = reason


class IntegrityError(_CodedTransferError):
    """A received file's SHA-256 did not match the sender's."""

    exit_code = 4


class SourceChangedError(_CodedTransferError):
    """A source file changed (size or mtime) while it was being sent."""

    exit_code = 4


class TransferInterruptedError(_CodedTransferError):
    """The link broke mid-transfer; a later run resumes from the ``.part`` files left behind."""

    exit_code = 5


class PeerProtocolError(_CodedTransferError):
    """The peer sent a message that breaks the transfer protocol."""

    exit_code = 6


class OutputDirError(_CodedTransferError):
    """The output folder is missing or not a folder."""

    exit_code = 2


class LocalIOError(_CodedTransferError):
    """Reading or writing a local file failed (disk full, permissions...)."""

    exit_code = 2
