"""Encrypted JSON messages between paired peers, after key confirmation.

Each direction has its own ChaCha20-Poly1305 key derived from the PAKE key (HKDF purposes
``del-mailbox-sender`` / ``del-mailbox-receiver``). Nonces are implicit counters (4 zero bytes +
64-bit big-endian message number), never sent: a dropped, replayed, reordered or altered message
fails authentication, as does a wrong key.
"""

from __future__ import annotations

import json
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from delshare.errors import PairingError
from delshare.pairing.pake import Side, derive_key

_MAX_COUNTER = 2**64 - 1


def direction_key(key: bytes, side: Side) -> bytes:
    """The key for messages *sent by* ``side``."""
    return derive_key(key, b"del-mailbox-" + side.value.encode("ascii"))


def _nonce(counter: int) -> bytes:
    return b"\x00\x00\x00\x00" + counter.to_bytes(8, "big")


class MessageCipher:
    """Seals dicts we send and opens dicts the peer sent, each with its own counter."""

    def __init__(self, key: bytes, side: Side) -> None:
        self._sealer = ChaCha20Poly1305(direction_key(key, side))
        self._opener = ChaCha20Poly1305(direction_key(key, side.peer))
        self._sent = 0
        self._received = 0

    def seal(self, obj: dict[str, Any]) -> bytes:
        """Encrypt one JSON object for the peer."""
        if self._sent > _MAX_COUNTER:
            raise PairingError("message counter exhausted")
        plaintext = json.dumps(obj, separators=(",", ":")).encode("utf-8")
        sealed = self._sealer.encrypt(_nonce(self._sent), plaintext, None)
        self._sent += 1
        return sealed

    def open(self, sealed: bytes) -> dict[str, Any]:
        """Decrypt the peer's next message; PairingError if it does not authenticate."""
        try:
            plaintext = self._opener.decrypt(_nonce(self._received), sealed, None)
        except InvalidTag as exc:
            raise PairingError("wrong code or tampered message") from exc
        self._received += 1
        try:
            obj = json.loads(plaintext)
        except (ValueError, RecursionError) as exc:  # bad UTF-8; nesting too deep to parse
            raise PairingError("peer sent a message that is not JSON") from exc
        if not isinstance(obj, dict):
            raise PairingError("peer sent a JSON value that is not an object")
        return obj
