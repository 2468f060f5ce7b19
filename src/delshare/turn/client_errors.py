"""Typed failures of the TURN client, each carrying the STUN error code and reason.

All derive from ``delshare.errors.TransactionError`` (``.method``, ``.code``, ``.reason``):

- ``AuthenticationError``: 401 to a request that carried credentials, or 441 (RFC 8489 §9.2.5,
  RFC 8656 §6.2): the username, password or shared secret is wrong.
- ``TryAlternateError``: 300 with ALTERNATE-SERVER (RFC 8489 §10); ``.alternate`` is the address.
- ``AllocationError``: Allocate or Refresh refused (437, 440, 442, 486, 508; RFC 8656 §7).
- ``PeerConnectError``: Connect refused (403 no permission, 446, 447; RFC 6062 §5.2).
- ``ResponseIntegrityError``: a response failed MESSAGE-INTEGRITY(-SHA256) (RFC 8489 §9.2.5).

``TurnConnectionError`` (not a transaction error) reports an unreachable server or a lost
connection; the asyncio adapter translates ``OSError`` into it.
"""

from __future__ import annotations

from delshare.errors import DelshareError, TransactionError
from delshare.stun.attributes import Address
from delshare.stun.constants import REASONS, ErrorCode, Method


class AuthenticationError(TransactionError):
    """The server rejected our credentials (401 after authenticating, or 441)."""


class TryAlternateError(TransactionError):
    """300 Try Alternate: the server redirects us to ``alternate`` (RFC 8489 §10)."""

    def __init__(self, method: str, code: int, reason: str, alternate: Address | None) -> None:
        super().__init__(method, code, reason)
        self.alternate = alternate


class AllocationError(TransactionError):
    """Allocate or Refresh failed (RFC 8656 §7.2, §7.3)."""


class PeerConnectError(TransactionError):
    """Connect failed: no permission, connection exists, or the peer is unreachable (RFC 6062)."""


class ResponseIntegrityError(TransactionError):
    """A response to an authenticated request had no or a wrong MESSAGE-INTEGRITY."""


def error_for(method: int, code: int, reason: str, alternate: Address | None) -> TransactionError:
    """The most specific exception for an error response to ``method``."""
    name, reason = method_name(method), reason_text(code, reason)
    if code == ErrorCode.TRY_ALTERNATE:
        return TryAlternateError(name, code, reason, alternate)
    if code in (ErrorCode.UNAUTHENTICATED, ErrorCode.WRONG_CREDENTIALS):
        return AuthenticationError(name, code, reason)
    if method in (Method.ALLOCATE, Method.REFRESH):
        return AllocationError(name, code, reason)
    if method == Method.CONNECT:
        return PeerConnectError(name, code, reason)
    return TransactionError(name, code, reason)


def reason_text(code: int, reason: str) -> str:
    """The reason phrase to show: NUL padding (coturn) stripped, the standard phrase for a
    missing one (pion sends none; RFC 8489 §14.8 lists the phrases)."""
    reason = reason.replace("\x00", "").strip()
    return reason or REASONS.get(code, "Error")


def method_name(method: int) -> str:
    """A method's name for messages."""
    try:
        return Method(method).name
    except ValueError:
        return f"0x{method:03x}"


class TurnConnectionError(DelshareError, ConnectionError):
    """The TURN server could not be reached, or a connection to it broke."""
