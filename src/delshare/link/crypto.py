"""The sans-IO half of a DEL link: handshake, session keys, AEAD record sealing and opening.

Theory of operation. Both peers already share a 32-byte key (from the PAKE) and hold a connected
byte stream. The handshake proves knowledge of that key and derives fresh per-link keys:

1. Each side sends ``HELLO = MAGIC(8) || role(1) || nonce(32)`` at once (no ordering needed).
2. Session keys come from HKDF-SHA256 (RFC 5869) over the shared key, salted with both nonces
   (initiator's first): one AES-256-GCM key per direction and one confirmation key per side.
   Fresh nonces make every link's keys distinct, so racing several candidate links with the same
   PAKE key never reuses a (key, nonce) pair.
3. Each side sends ``CONFIRM = HMAC-SHA256(confirm_key[own role], "confirm" || HELLO_i || HELLO_r)``
   and checks the peer's in constant time; a mismatch raises :class:`LinkAuthError`. A racing
   connector keeps the first link whose handshake returns.

After that every record is ``kind(1) || length(4, big-endian) || ciphertext``; ``length`` counts the
ciphertext including the 16-byte GCM tag and is bounded by ``MAX_PAYLOAD + TAG_SIZE``. The nonce is
the per-direction record counter (96-bit big-endian), never sent. The 5-byte header is the AEAD's
associated data, so a flipped kind or length fails the tag. A ``CLOSE`` record ends the stream so
truncation by an attacker is told apart from a clean close (docs/protocol.md, "Link records").

Everything here only transforms bytes (no sockets, no event loop, no clock):
:class:`Handshake`, :class:`RecordSealer`, :class:`RecordOpener` and :class:`RecordDecoder`.
:mod:`delshare.link.records` runs them over a connection.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
import struct
from dataclasses import dataclass
from typing import Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from delshare.errors import DelshareError, RemoteProtocolError

__all__ = [
    "CONFIRM_SIZE",
    "HEADER_SIZE",
    "HELLO_SIZE",
    "MAGIC",
    "MAX_PAYLOAD",
    "TAG_SIZE",
    "Handshake",
    "LinkAuthError",
    "LinkClosedError",
    "LinkError",
    "LinkProtocolError",
    "LinkTimeoutError",
    "Record",
    "RecordDecoder",
    "RecordIntegrityError",
    "RecordKind",
    "RecordOpener",
    "RecordSealer",
    "Role",
    "SessionKeys",
]

MAGIC = b"DELLINK1"
NONCE_SIZE = 32
HELLO_SIZE = len(MAGIC) + 1 + NONCE_SIZE
CONFIRM_SIZE = 32
TAG_SIZE = 16
HEADER_SIZE = 5
MAX_PAYLOAD = 1 << 20
"""Largest plaintext per record (1 MiB); bigger records are refused on receive."""

_HEADER = struct.Struct(">BI")
_HKDF_INFO = b"delshare/link/v1 keys"
_MAX_COUNTER = (1 << 64) - 1

Role = Literal["initiator", "responder", "sender", "receiver"]
"""Side of the link. ``sender`` is an alias of ``initiator``, ``receiver`` of ``responder``.

The role must be fixed by the layer above (e.g. who sends the files), not by who connected, so
that every raced candidate link agrees on it.
"""

_INITIATOR, _RESPONDER = 0x49, 0x52  # "I", "R" on the wire


class LinkError(DelshareError):
    """The encrypted link failed."""


class LinkAuthError(LinkError):
    """The peer did not prove knowledge of the shared key (or is not a DEL peer)."""


class LinkProtocolError(LinkError, RemoteProtocolError):
    """The peer sent a malformed or oversized record."""


class RecordIntegrityError(LinkError):
    """A record's AEAD tag did not verify: the bytes were altered in transit."""


class LinkClosedError(LinkError):
    """The link ended; ``clean`` tells a peer's authenticated CLOSE from a lost connection."""

    def __init__(self, message: str, *, clean: bool) -> None:
        super().__init__(message)
        self.clean = clean


class LinkTimeoutError(LinkError):
    """The handshake did not finish in time."""


class RecordKind(enum.IntEnum):
    """The type byte of a record."""

    DATA = 0
    CONTROL = 1
    CLOSE = 2


@dataclass(frozen=True, slots=True)
class Record:
    """One decrypted record."""

    kind: RecordKind
    payload: bytes


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """Per-link keys after a successful handshake (one AEAD key per direction)."""

    send_key: bytes
    recv_key: bytes


def _role_byte(role: Role) -> int:
    if role in ("initiator", "sender"):
        return _INITIATOR
    if role in ("responder", "receiver"):
        return _RESPONDER
    raise ValueError(f"unknown role {role!r}")


class Handshake:
    """Sans-IO key confirmation: ``hello()``, ``receive_hello()``, then ``receive_confirm()``."""

    def __init__(self, key: bytes, role: Role, *, nonce: bytes | None = None) -> None:
        if len(key) < 16:
            raise ValueError("shared key must be at least 16 bytes")
        self._key = key
        self._role = _role_byte(role)
        self._nonce = nonce if nonce is not None else os.urandom(NONCE_SIZE)
        self._hello = MAGIC + bytes([self._role]) + self._nonce
        self._expected_confirm: bytes | None = None
        self._keys: SessionKeys | None = None

    def hello(self) -> bytes:
        """The first bytes to send."""
        return self._hello

    def receive_hello(self, peer_hello: bytes) -> bytes:
        """Check the peer's hello, derive keys; return our CONFIRM to send."""
        if len(peer_hello) != HELLO_SIZE or not peer_hello.startswith(MAGIC):
            raise LinkAuthError("peer is not a DEL link (bad hello)")
        if peer_hello[len(MAGIC)] not in (_INITIATOR, _RESPONDER):
            raise LinkAuthError("peer sent an unknown role")
        if peer_hello[len(MAGIC)] == self._role:
            raise LinkAuthError("both peers claim the same role")
        first, second = (
            (self._hello, peer_hello) if self._role == _INITIATOR else (peer_hello, self._hello)
        )
        okm = HKDF(
            algorithm=hashes.SHA256(),
            length=128,
            salt=first[-NONCE_SIZE:] + second[-NONCE_SIZE:],
            info=_HKDF_INFO,
        ).derive(self._key)
        i2r, r2i, confirm_i, confirm_r = okm[:32], okm[32:64], okm[64:96], okm[96:]
        transcript = b"confirm" + first + second
        mine, theirs = (
            (confirm_i, confirm_r) if self._role == _INITIATOR else (confirm_r, confirm_i)
        )
        self._expected_confirm = hmac.new(theirs, transcript, hashlib.sha256).digest()
        own_keys = (i2r, r2i) if self._role == _INITIATOR else (r2i, i2r)
        self._keys = SessionKeys(send_key=own_keys[0], recv_key=own_keys[1])
        return hmac.new(mine, transcript, hashlib.sha256).digest()

    def receive_confirm(self, peer_confirm: bytes) -> SessionKeys:
        """Verify the peer's CONFIRM (constant time); return the session keys."""
        if self._expected_confirm is None or self._keys is None:
            raise LinkProtocolError("confirm before hello")
        if not hmac.compare_digest(peer_confirm, self._expected_confirm):
            raise LinkAuthError("peer does not know the shared key")
        return self._keys


def _nonce(counter: int) -> bytes:
    if counter > _MAX_COUNTER:
        raise LinkError("record counter exhausted; open a new link")
    return counter.to_bytes(12, "big")


_KINDS = frozenset(int(k) for k in RecordKind)


class RecordSealer:
    """Encrypts outgoing records with counter nonces."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self._counter = 0

    def seal(self, kind: RecordKind, payload: bytes | memoryview) -> tuple[bytes, bytes]:
        """Return ``(header, ciphertext)`` for one record; send them back to back."""
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"record payload {len(payload)} > {MAX_PAYLOAD}")
        header = _HEADER.pack(kind, len(payload) + TAG_SIZE)
        ciphertext = self._aead.encrypt(_nonce(self._counter), payload, header)
        self._counter += 1
        return header, ciphertext

    def seal_into(self, kind: RecordKind, payload: bytes | memoryview, out: memoryview) -> int:
        """Write header and ciphertext of one record into ``out``; return the bytes used."""
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"record payload {len(payload)} > {MAX_PAYLOAD}")
        size = HEADER_SIZE + len(payload) + TAG_SIZE
        header = _HEADER.pack(kind, len(payload) + TAG_SIZE)
        out[:HEADER_SIZE] = header
        nonce = _nonce(self._counter)
        self._aead.encrypt_into(nonce, payload, header, out[HEADER_SIZE:size])
        self._counter += 1
        return size


class RecordOpener:
    """Parses headers and decrypts incoming records, in order."""

    def __init__(self, key: bytes, *, max_payload: int = MAX_PAYLOAD) -> None:
        self._aead = AESGCM(key)
        self._counter = 0
        self._max = max_payload + TAG_SIZE

    def parse_header(self, header: bytes) -> int:
        """Validate a 5-byte header; return the ciphertext length that follows."""
        kind, length = _HEADER.unpack(header)
        if kind not in _KINDS:
            raise LinkProtocolError(f"unknown record kind {kind}")
        if length < TAG_SIZE or length > self._max:
            raise LinkProtocolError(f"record length {length} out of bounds")
        return int(length)

    def open(self, header: bytes, ciphertext: bytes | memoryview) -> Record:
        """Decrypt one record whose header was accepted by :meth:`parse_header`."""
        try:
            payload = self._aead.decrypt(_nonce(self._counter), ciphertext, header)
        except InvalidTag:
            raise RecordIntegrityError("record failed authentication") from None
        self._counter += 1
        return Record(RecordKind(header[0]), payload)

    def open_into(self, header: bytes, ciphertext: memoryview, out: memoryview) -> RecordKind:
        """Decrypt one record into ``out[: len(ciphertext) - TAG_SIZE]``; return its kind."""
        size = len(ciphertext) - TAG_SIZE
        if len(out) < size:
            raise ValueError(f"buffer of {len(out)} bytes cannot hold a {size}-byte record")
        try:
            self._aead.decrypt_into(_nonce(self._counter), ciphertext, header, out[:size])
        except InvalidTag:
            raise RecordIntegrityError("record failed authentication") from None
        self._counter += 1
        return RecordKind(header[0])


class RecordDecoder:
    """Buffering decoder for any split of the byte stream (used by tests and slow paths)."""

    def __init__(self, opener: RecordOpener) -> None:
        self._opener = opener
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Record]:
        """Add bytes; return every complete record now available."""
        self._buffer += data
        records: list[Record] = []
        while len(self._buffer) >= HEADER_SIZE:
            header = bytes(self._buffer[:HEADER_SIZE])
            length = self._opener.parse_header(header)
            if len(self._buffer) < HEADER_SIZE + length:
                break
            body = bytes(self._buffer[HEADER_SIZE : HEADER_SIZE + length])
            del self._buffer[: HEADER_SIZE + length]
            records.append(self._opener.open(header, body))
        return records
