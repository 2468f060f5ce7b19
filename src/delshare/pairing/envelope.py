"""Bodies that paired clients put in the mailbox: base64 of a phase byte + payload.

The server relays bodies without looking inside. Phases, in order: ``PAKE`` (side byte + SPAKE2
message), ``CONFIRM`` (key-confirmation MAC), then any number of ``SEALED`` (ciphertext from
``MessageCipher``). Only the first two are in clear, and they reveal nothing about the code.
"""

from __future__ import annotations

import base64
import binascii
import enum

from delshare.errors import PairingError


class Phase(enum.IntEnum):
    PAKE = 1
    CONFIRM = 2
    SEALED = 3


def encode_body(phase: Phase, payload: bytes) -> str:
    """The mailbox body for ``payload`` in ``phase``."""
    return base64.b64encode(bytes([phase]) + payload).decode("ascii")


def decode_body(body: str, expected: Phase) -> bytes:
    """The payload of ``body``; PairingError unless it is well-formed and in ``expected`` phase."""
    try:
        raw = base64.b64decode(body.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise PairingError("peer sent a malformed mailbox body") from exc
    if not raw or raw[0] != expected:
        raise PairingError(f"peer sent an unexpected message (wanted {expected.name})")
    return raw[1:]
