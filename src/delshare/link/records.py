"""The encrypted record channel of a DEL link: handshake, keys, AEAD records.

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
truncation by an attacker is told apart from a clean close.

The sans-IO classes (:class:`Handshake`, :class:`RecordSealer`, :class:`RecordOpener`,
:class:`RecordDecoder`) only transform bytes; :func:`handshake` and :class:`RecordChannel` add the
asyncio stream I/O.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import hashlib
import hmac
import mmap
import os
import socket
import struct
from dataclasses import dataclass
from typing import Literal, NoReturn, cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from delshare.errors import DelshareError

__all__ = [
    "HEADER_SIZE",
    "MAX_PAYLOAD",
    "TAG_SIZE",
    "Handshake",
    "LinkAuthError",
    "LinkClosedError",
    "LinkError",
    "LinkProtocolError",
    "LinkTimeoutError",
    "Record",
    "RecordChannel",
    "RecordDecoder",
    "RecordIntegrityError",
    "RecordKind",
    "RecordOpener",
    "RecordSealer",
    "Role",
    "SessionKeys",
    "handshake",
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


class LinkProtocolError(LinkError):
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


class _RecordProtocol(asyncio.BufferedProtocol):
    """Receives records straight into a ring of preallocated buffers (``recv_into``, no copies).

    Each record's header and ciphertext are read into place and queued; decryption happens when
    the consumer takes the record (into its own buffer with :meth:`RecordChannel.recv_into`).
    Reading pauses while all ``_RING`` ciphertext buffers wait for the consumer. Write flow
    control is tracked for :meth:`RecordChannel.drain`. Connection loss is forwarded to the
    stream's original protocol so ``StreamWriter.wait_closed`` still completes.
    """

    def __init__(self, opener: RecordOpener, previous: asyncio.BaseProtocol | None) -> None:
        self.opener = opener
        self._previous = previous
        self._header = bytearray(HEADER_SIZE)
        self._bodies = [_lazy_buffer(MAX_PAYLOAD + TAG_SIZE) for _ in range(_RING)]
        self._free: collections.deque[int] = collections.deque(range(1, _RING))
        self._current: int | None = 0
        self._in_body = False
        self._have = 0
        self._body_len = 0
        self._queue: collections.deque[tuple[bytes, int, int]] = collections.deque()
        self._backlog = bytearray()
        self._broken = False
        self._end: LinkError | None = None
        self._reader_waiter: asyncio.Future[None] | None = None
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._write_paused = False
        self._transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._in_body and self._current is not None:
            return self._bodies[self._current][self._have : self._body_len]
        return memoryview(self._header)[self._have :]

    def buffer_updated(self, nbytes: int) -> None:
        self._have += nbytes
        try:
            if not self._in_body and self._have == HEADER_SIZE:
                self._body_len = self.opener.parse_header(bytes(self._header))
                self._in_body, self._have = True, 0
            elif self._in_body and self._have == self._body_len:
                self._queue.append((bytes(self._header), self._take_body(), self._body_len))
                self._in_body, self._have = False, 0
                self._wake_reader()
        except LinkError as exc:
            self._broken = True
            self._end = exc
            self._wake_reader()
            if self._transport is not None:
                self._transport.abort()

    def _take_body(self) -> int:
        assert self._current is not None
        full, self._current = self._current, self._free.popleft() if self._free else None
        if self._current is None and self._transport is not None:
            self._transport.pause_reading()
        return full

    def release(self, index: int) -> None:
        """The consumer is done with ciphertext buffer ``index``."""
        if self._current is not None:
            self._free.append(index)
            return
        self._current = index
        self._drain_backlog()
        transport = self._transport
        if self.backlogged or transport is None or transport.is_closing():
            return
        transport.resume_reading()

    @property
    def backlogged(self) -> bool:
        """Bytes from before the takeover still wait for a free buffer (keep reading paused)."""
        return bool(self._backlog)

    def feed(self, data: bytes) -> None:
        """Queue bytes that arrived before this protocol took over the transport."""
        self._backlog += data
        self._drain_backlog()

    def _drain_backlog(self) -> None:
        while self._backlog and not self._broken and self._current is not None:
            target = self.get_buffer(-1)
            n = min(len(target), len(self._backlog))
            target[:n] = self._backlog[:n]
            del self._backlog[:n]
            self.buffer_updated(n)

    def _finish(self, error: LinkError) -> None:
        if self._end is None:
            self._end = error
        self._wake_reader()

    def stop(self, error: LinkError, *, abort: bool) -> None:
        """End reading: later reads raise ``error``; ``abort`` drops the connection too."""
        self._end = error
        self._broken = True
        self._backlog.clear()
        self._queue.clear()
        if abort and self._transport is not None:
            self._transport.abort()

    def _wake_reader(self) -> None:
        waiter, self._reader_waiter = self._reader_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next_ciphertext(self) -> tuple[bytes, memoryview, int]:
        """The next queued record: (header, its ciphertext, buffer index to release)."""
        while not self._queue:
            if self._end is not None and not self._backlog:
                raise self._end
            self._reader_waiter = asyncio.get_running_loop().create_future()
            await self._reader_waiter
        header, index, length = self._queue.popleft()
        return header, self._bodies[index][:length], index

    def eof_received(self) -> bool:
        self._finish(LinkClosedError("connection closed without CLOSE record", clean=False))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        detail = f": {exc}" if exc else ""
        self._finish(LinkClosedError(f"connection lost{detail}", clean=False))
        self._write_paused = False
        self._wake_drain()
        if not self.closed.done():
            self.closed.set_result(None)
        if self._previous is not None:
            self._previous.connection_lost(exc)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drain()

    def _wake_drain(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def drain(self) -> None:
        if self.closed.done():
            raise LinkClosedError("connection lost", clean=False)
        if self._write_paused:
            waiter = asyncio.get_running_loop().create_future()
            self._drain_waiters.append(waiter)
            await waiter
            if self.closed.done():
                raise LinkClosedError("connection lost", clean=False)


_RING = 4
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 20, 5, 4  # seconds, seconds, probes
USER_TIMEOUT_MS = 60_000
_TRANSPORT_API = ("set_protocol", "pause_reading", "resume_reading", "is_reading", "abort")
_RING_MIN = 64 << 10
_OUT_RING = 3


class RecordChannel:
    """Authenticated, encrypted records over a connected stream.

    Takes over the stream's transport: after construction, use only the channel (the original
    reader sees nothing more; ``writer.wait_closed()`` still completes when the link ends).
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        keys: SessionKeys,
    ) -> None:
        self._writer = writer
        transport = writer.transport
        if not all(hasattr(transport, name) for name in _TRANSPORT_API):
            raise TypeError("RecordChannel needs a bidirectional stream transport")
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._sealer = RecordSealer(keys.send_key)
        self._protocol = _RecordProtocol(
            RecordOpener(keys.recv_key), self._transport.get_protocol()
        )
        self._closed = False
        record_size = HEADER_SIZE + MAX_PAYLOAD + TAG_SIZE
        self._out = [_lazy_buffer(record_size) for _ in range(_OUT_RING)]
        self._out_end = [0] * len(self._out)
        self._out_next = 0
        self._written = 0
        buffered = _take_buffered(reader)
        _detect_dead_peer(self._transport)
        self._transport.set_protocol(self._protocol)
        self._protocol.connection_made(self._transport)
        self._protocol.feed(buffered)
        if reader.at_eof() or self._transport.is_closing():
            self._protocol.eof_received()
        elif self._protocol.backlogged:
            self._transport.pause_reading()
        elif not self._transport.is_reading():
            self._transport.resume_reading()

    @property
    def writer(self) -> asyncio.StreamWriter:
        """The underlying stream writer (e.g. for ``get_extra_info``)."""
        return self._writer

    async def send(self, data: bytes | memoryview, kind: RecordKind = RecordKind.DATA) -> None:
        """Send one record (``len(data) <= MAX_PAYLOAD``) and wait for buffer room."""
        self.write(data, kind)
        await self.drain()

    def write(self, data: bytes | memoryview, kind: RecordKind = RecordKind.DATA) -> None:
        """Queue one record without waiting; call :meth:`drain` for back-pressure.

        ``data`` is encrypted at once, so the caller may reuse its buffer right away. Big records
        are sealed into a small ring of output buffers, each reused only once the transport has
        handed all of its bytes to the kernel (asyncio may keep a view of unsent data).
        """
        if self._closed:
            raise LinkClosedError("channel already closed", clean=True)
        if self._protocol.closed.done():
            raise LinkClosedError("connection lost", clean=False)
        slot = self._out_next
        flushed = self._written - self._transport.get_write_buffer_size()
        if len(data) >= _RING_MIN and flushed >= self._out_end[slot]:
            size = self._sealer.seal_into(kind, data, self._out[slot])
            self._transport.write(self._out[slot][:size])
            self._out_end[slot] = self._written + size
            self._out_next = (slot + 1) % len(self._out)
        else:  # small record, or the ring slot still has unsent bytes
            header, ciphertext = self._sealer.seal(kind, data)
            size = len(header) + len(ciphertext)
            self._transport.write(header + ciphertext)
        self._written += size

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        await self._protocol.drain()

    async def send_control(self, data: bytes) -> None:
        """Send one CONTROL record."""
        await self.send(data, RecordKind.CONTROL)

    async def recv_record(self) -> Record:
        """Receive the next DATA or CONTROL record.

        Raises LinkClosedError (``clean`` after the peer's CLOSE), RecordIntegrityError or
        LinkProtocolError; the link is unusable after any of them.
        """
        header, ciphertext, index = await self._protocol.next_ciphertext()
        try:
            record = self._protocol.opener.open(header, ciphertext)
        except LinkError as exc:
            self._protocol.stop(exc, abort=True)
            raise
        finally:
            self._protocol.release(index)
        if record.kind is RecordKind.CLOSE:
            self._peer_closed()
        return record

    async def recv_into(self, buffer: memoryview) -> tuple[RecordKind, int]:
        """Receive the next record, decrypting it into ``buffer``; return (kind, length).

        ``buffer`` must hold ``MAX_PAYLOAD`` bytes. Same errors as :meth:`recv_record`.
        """
        header, ciphertext, index = await self._protocol.next_ciphertext()
        try:
            kind = self._protocol.opener.open_into(header, ciphertext, buffer)
        except LinkError as exc:
            self._protocol.stop(exc, abort=True)
            raise
        finally:
            self._protocol.release(index)
        if kind is RecordKind.CLOSE:
            self._peer_closed()
        return kind, len(ciphertext) - TAG_SIZE

    def _peer_closed(self) -> NoReturn:
        error = LinkClosedError("peer closed the link", clean=True)
        self._protocol.stop(error, abort=False)
        raise error

    async def recv(self) -> bytes:
        """Receive the payload of the next record of any kind but CLOSE."""
        return (await self.recv_record()).payload

    async def close(self, timeout: float = 5.0) -> None:
        """Send an authenticated CLOSE (best effort), flush, and close the connection."""
        if self._closed:
            return
        with contextlib.suppress(LinkError):
            self.write(b"", RecordKind.CLOSE)
        self._closed = True
        self._transport.close()
        try:
            await asyncio.wait_for(asyncio.shield(self._protocol.closed), timeout)
        except TimeoutError:
            self._transport.abort()

    def abort(self) -> None:
        """Drop the connection at once, without CLOSE (the peer sees a lost link)."""
        self._closed = True
        self._transport.abort()


def _lazy_buffer(size: int) -> memoryview:
    """A writable buffer whose pages the kernel supplies (zeroed) only when first touched.

    ``bytearray(size)`` zero-fills at once: ~4.5 MiB per channel, and a race opens several
    channels, which cost ~10 ms before a tiny transfer; anonymous mmap costs nothing up front.
    """
    return memoryview(mmap.mmap(-1, size))


def _detect_dead_peer(transport: asyncio.Transport) -> None:
    """TCP keepalive and a user timeout, so a link that silently stops (a NAT mapping or a
    network gone, no FIN or RST) fails in about a minute instead of hanging both ends:
    keepalive probes catch an idle one, ``TCP_USER_TIMEOUT`` (RFC 5482) data left unacknowledged.
    A peer that is merely slow still acknowledges, so it is never cut off."""
    sock = transport.get_extra_info("socket")
    if sock is None or sock.type != socket.SOCK_STREAM:
        return
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
        ("TCP_KEEPCNT", KEEPALIVE_COUNT),
        ("TCP_USER_TIMEOUT", USER_TIMEOUT_MS),
    ):
        if hasattr(socket, name):  # Linux has all; others keep their defaults
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    for level, option, value in options:
        with contextlib.suppress(OSError):
            sock.setsockopt(level, option, value)


def _take_buffered(reader: asyncio.StreamReader) -> bytes:
    """Bytes the StreamReader received but nobody read yet (CPython keeps them in ``_buffer``)."""
    buffer = getattr(reader, "_buffer", None)
    if not isinstance(buffer, bytearray):
        raise TypeError("RecordChannel needs an asyncio.StreamReader")
    data = bytes(buffer)
    buffer.clear()
    return data


async def abort_stream(writer: asyncio.StreamWriter) -> None:
    """Close a stream writer, ignoring errors from an already-broken connection."""
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes, size: int
) -> bytes:
    writer.write(data)
    await writer.drain()
    return await reader.readexactly(size)


async def handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    key: bytes,
    role: Role,
    timeout: float = 10.0,
) -> RecordChannel:
    """Prove knowledge of ``key`` to the peer and check its proof; return the record channel.

    Raises :class:`LinkAuthError` if the peer does not know the key, :class:`LinkTimeoutError` or
    :class:`LinkClosedError` if it stalls or disconnects. The stream is closed on failure.
    """
    state = Handshake(key, role)
    try:
        async with asyncio.timeout(timeout):
            peer_hello = await _exchange(reader, writer, state.hello(), HELLO_SIZE)
            confirm = state.receive_hello(peer_hello)
            keys = state.receive_confirm(await _exchange(reader, writer, confirm, CONFIRM_SIZE))
    except TimeoutError:
        await abort_stream(writer)
        raise LinkTimeoutError(f"handshake did not finish in {timeout:g} s") from None
    except asyncio.IncompleteReadError:
        await abort_stream(writer)
        raise LinkClosedError("peer closed during handshake", clean=False) from None
    except (ConnectionError, OSError) as exc:
        await abort_stream(writer)
        raise LinkClosedError(f"connection lost during handshake: {exc}", clean=False) from exc
    except LinkError:
        await abort_stream(writer)
        raise
    return RecordChannel(reader, writer, keys)
