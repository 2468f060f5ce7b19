"""The one exception hierarchy of DEL.

- ``DelshareError``: the root; the CLI turns any of these into one line and an exit code.
- ``StunDecodeError``: bytes that are not a well-formed STUN message or ChannelData frame.
- ``StunProtocolError``: a request the server must refuse; carries the STUN error code and reason
  to answer with (RFC 8489 §14.8). Raised by the sans-IO core, caught at one dispatch point.
- ``TransactionError``: a client transaction ended in an error response; carries code and reason.
- ``TransactionTimeout``: no response within the RFC 8489 §6.2 retransmission schedule.
- ``TransferError`` and ``PairingError``: failures of the app layers above TURN.
"""

from __future__ import annotations


class DelshareError(Exception):
    """Root of every error DEL raises on purpose."""


class StunDecodeError(DelshareError, ValueError):
    """Malformed STUN message or ChannelData frame."""


class StunProtocolError(DelshareError):
    """A request the server refuses with ``code`` and ``reason`` (RFC 8489 §14.8)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


class TransactionError(DelshareError):
    """A client request answered with an error response (code, reason)."""

    def __init__(self, method: str, code: int, reason: str) -> None:
        super().__init__(f"{method} failed: {code} {reason}")
        self.method = method
        self.code = code
        self.reason = reason


class TransactionTimeout(DelshareError):
    """No response to a client request in time (RFC 8489 §6.2.1, §6.2.2)."""


class PairingError(DelshareError):
    """Code exchange, PAKE or rendezvous failed."""


class TransferError(DelshareError):
    """The file transfer failed or was refused."""
