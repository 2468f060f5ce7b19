"""SPAKE2 key agreement on the pairing code, with key confirmation.

Theory of operation: both peers run symmetric SPAKE2 (``spake2.SPAKE2_Symmetric``) on the code
password: each ``start()`` message goes to the other side, ``finish(peer_msg)`` yields a shared
key, equal on both sides only if both typed the same code. The key is never used directly: every
consumer derives its own key with HKDF-SHA256 (RFC 5869) under a distinct ``purpose``. Before
anything else each side sends a confirmation MAC derived for its own side and checks the peer's,
so a wrong code is detected as such (and a reflected message fails: the sides differ).
"""

from __future__ import annotations

import enum
import hmac

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from spake2 import SPAKE2_Symmetric, SPAKEError

from delshare.errors import PairingError

APPID = b"delshare/pairing/v1"
CONFIRM_LENGTH = 32
_SPAKE2_MESSAGE_LENGTH = 33  # side byte b"S" + 32-byte Ed25519 element
_SPAKE2_SIDE = b"S"


class Side(enum.StrEnum):
    """Which end of the pairing a peer is; the two peers must differ."""

    SENDER = "sender"
    RECEIVER = "receiver"

    @property
    def peer(self) -> Side:
        return Side.RECEIVER if self is Side.SENDER else Side.SENDER


def derive_key(key: bytes, purpose: bytes, length: int = 32) -> bytes:
    """HKDF-SHA256 (RFC 5869) of ``key`` with ``purpose`` as info; no salt."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=purpose).derive(key)


def confirmation(key: bytes, side: Side) -> bytes:
    """The key-confirmation MAC that ``side`` sends to prove it holds ``key``."""
    return derive_key(key, b"del-confirm-" + side.value.encode("ascii"), CONFIRM_LENGTH)


class Pake:
    """One side of a SPAKE2 exchange (sans-IO): ``start``, ``finish``, then confirmation."""

    def __init__(self, password: bytes, side: Side, appid: bytes = APPID) -> None:
        self.side = side
        self._spake = SPAKE2_Symmetric(password, idSymmetric=appid)
        self._key: bytes | None = None

    def start(self) -> bytes:
        """The outbound SPAKE2 message for the peer."""
        return bytes(self._spake.start())

    def finish(self, peer_msg: bytes) -> bytes:
        """Consume the peer's message and return the shared key; PairingError if malformed."""
        if len(peer_msg) != _SPAKE2_MESSAGE_LENGTH or peer_msg[:1] != _SPAKE2_SIDE:
            raise PairingError("malformed PAKE message from peer")
        try:
            self._key = bytes(self._spake.finish(peer_msg))
        except (SPAKEError, ValueError) as exc:
            raise PairingError(f"bad PAKE message from peer: {exc}") from exc
        return self._key

    @property
    def key(self) -> bytes:
        if self._key is None:
            raise PairingError("PAKE not finished")
        return self._key

    def confirmation(self) -> bytes:
        """Our key-confirmation MAC, to send once ``finish`` succeeded."""
        return confirmation(self.key, self.side)

    def verify_confirmation(self, peer_mac: bytes) -> None:
        """Check the peer's MAC in constant time; PairingError("wrong code") if it differs."""
        expected = confirmation(self.key, self.side.peer)
        if not hmac.compare_digest(expected, peer_mac):
            raise PairingError("wrong code: the peer typed a different code (key confirmation)")
